"""Seccomp profiles: Docker's profile format in, the OCI spec's `linux.seccomp` out.

A profile (seccomp_default.json, or the file of `--security-opt seccomp=FILE`)
lists system calls with an action, optional argument conditions, and filters
that keep an entry only for some architectures, capabilities or kernels.
`resolve` applies those filters the way Docker does for the container at hand
(native architecture, bounding capability set, running kernel) and gives the
plain list the OCI runtime spec carries: runc/crun compile it with libseccomp,
the built-in executor with bpf.py (through compiled_filter, which keeps the
program it compiles, so a run with an unchanged profile compiles nothing).
"""
from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from typing import Any

from .errors import InvalidOption

DEFAULT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
# uname -m -> (the profile's architecture, the name Docker's arch filters use: Go's GOARCH spelling)
NATIVE = {"x86_64": ("SCMP_ARCH_X86_64", "amd64"), "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
          "i686": ("SCMP_ARCH_X86", "x86"), "armv7l": ("SCMP_ARCH_ARM", "arm"),
          "s390x": ("SCMP_ARCH_S390X", "s390x"), "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
          "riscv64": ("SCMP_ARCH_RISCV64", "riscv64")}

Profile = dict[str, Any]


def parse_option(values: list[str]) -> str:
    """`--security-opt` values -> "default", "unconfined" or a profile path.

    `seccomp=...` (or the old `seccomp:...`) picks the profile; `no-new-privileges`
    is accepted (soko always sets it); anything else is an error, as in Docker."""
    choice = "default"
    for v in values:
        key, sep, value = v.partition("=")
        if not sep:
            key, sep, value = v.partition(":")
        if key == "seccomp" and sep and value:
            choice = value
        elif key == "no-new-privileges" and value in ("", "true"):
            pass
        else:
            raise InvalidOption(f"invalid --security-opt: {v!r} (seccomp=unconfined, seccomp=FILE or "
                                "no-new-privileges)")
    return choice


def load_for(choice: str) -> Profile | None:
    """The profile for a parse_option() choice; None means unconfined."""
    if choice == "unconfined":
        return None
    if choice == "default":
        return default_profile()
    try:
        with open(choice, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InvalidOption(f"opening seccomp profile ({choice}) failed: {e.strerror}") from None
    profile = parse(raw, choice)
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None  # Docker: no default action and no rules means no filter
    return profile


@lru_cache(maxsize=1)
def default_profile() -> Profile:
    with open(DEFAULT_FILE, "rb") as f:
        return parse(f.read(), DEFAULT_FILE)


def parse(raw: bytes, where: str) -> Profile:
    """Decode and check a profile; every fault is one InvalidOption naming the file."""
    def bad(msg: str) -> InvalidOption:
        return InvalidOption(f"seccomp profile {where}: {msg}")

    try:
        profile = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"decoding failed: {e}") from None
    if not isinstance(profile, dict):
        raise bad("not a JSON object")
    if profile.get("architectures") and profile.get("archMap"):
        raise bad("'architectures' and 'archMap' were both specified, use either one")
    default = profile.get("defaultAction", "")
    if default and default not in ACTIONS:
        raise bad(f"unknown defaultAction {default!r}")
    _errno(profile.get("defaultErrnoRet"), bad, "defaultErrnoRet")
    for key in ("architectures", "syscalls", "archMap"):
        if not isinstance(profile.get(key) or [], list):
            raise bad(f"'{key}' must be a list")
    for a in profile.get("archMap") or []:
        if not isinstance(a, dict) or not isinstance(a.get("architecture"), str):
            raise bad("every archMap entry needs an 'architecture'")
    for i, call in enumerate(profile.get("syscalls") or []):
        if not isinstance(call, dict):
            raise bad(f"syscalls[{i}] is not an object")
        names = call.get("names")
        if call.get("name") and names:
            raise bad(f"syscalls[{i}]: 'name' and 'names' were both specified, use either one")
        names = names if names is not None else ([call["name"]] if call.get("name") else [])
        if not names or not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise bad(f"syscalls[{i}] names no system call")
        if call.get("action") not in ACTIONS:
            raise bad(f"syscalls[{i}]: unknown action {call.get('action')!r}")
        _errno(call.get("errnoRet"), bad, f"syscalls[{i}].errnoRet")
        for arg in call.get("args") or []:
            if not isinstance(arg, dict) or arg.get("op") not in OPERATORS:
                raise bad(f"syscalls[{i}]: argument condition with unknown op {arg.get('op') if isinstance(arg, dict) else arg!r}")
            if not (isinstance(arg.get("index"), int) and 0 <= arg["index"] <= 5):
                raise bad(f"syscalls[{i}]: argument index must be 0 to 5")
            for k in ("value", "valueTwo"):
                v = arg.get(k, 0)
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                    raise bad(f"syscalls[{i}]: argument {k} must be an unsigned 64-bit number")
        for part in ("includes", "excludes"):
            f = call.get(part) or {}
            if not isinstance(f, dict):
                raise bad(f"syscalls[{i}].{part} is not an object")
            if f.get("minKernel") is not None and _kernel_tuple(str(f["minKernel"])) is None:
                raise bad(f"syscalls[{i}]: invalid minKernel {f['minKernel']!r}")
    return profile


def _errno(value: Any, bad, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 4096):
        raise bad(f"{what} must be an errno number")


def _kernel_tuple(text: str) -> tuple[int, ...] | None:
    parts = text.split("-", 1)[0].split(".")
    try:
        nums = tuple(int(p) for p in parts[:2])
    except ValueError:
        return None
    return nums if len(nums) == 2 else None


def resolve(profile: Profile, bounding: list[str], machine: str | None = None,
            kernel: str | None = None) -> dict[str, Any]:
    """`linux.seccomp` for a container with this bounding set, as Docker makes it.

    An entry is kept when its `includes` all hold and none of its `excludes`
    does: arches compare with the native architecture, caps with the bounding
    set, minKernel with the running kernel."""
    machine = machine or os.uname().machine
    native, goarch = NATIVE.get(machine, ("", machine))
    running = _kernel_tuple(kernel or os.uname().release) or (0, 0)
    caps = set(bounding)
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction") or "SCMP_ACT_ALLOW"}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == native:
            arches = [native] + list(entry.get("subArchitectures") or [])
            break
    if arches:
        out["architectures"] = arches
    syscalls = []
    for call in profile.get("syscalls") or []:
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if goarch in (exc.get("arches") or []) or caps & set(exc.get("caps") or []):
            continue
        if exc.get("minKernel") and running >= _kernel_tuple(str(exc["minKernel"])):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if not set(inc.get("caps") or []) <= caps:
            continue
        if inc.get("minKernel") and running < _kernel_tuple(str(inc["minKernel"])):
            continue
        rule: dict[str, Any] = {"names": list(call.get("names") or [call["name"]]), "action": call["action"]}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [{"index": a["index"], "value": a.get("value", 0), "valueTwo": a.get("valueTwo", 0),
                             "op": a["op"]} for a in call["args"]]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


def compiled_filter(linux_seccomp: dict[str, Any], cache_dir: str | os.PathLike, machine: str | None = None) -> bytes:
    """bpf.compile_filter's program, kept in `cache_dir` under a hash of everything it depends on
    (the section, the machine, the compiler and the syscall tables): compiled once, then read."""
    with open(compiled_filter_file(linux_seccomp, cache_dir, machine), "rb") as f:
        return f.read()


def compiled_filter_file(linux_seccomp: dict[str, Any], cache_dir: str | os.PathLike,
                         machine: str | None = None) -> str:
    """The file holding the compiled program (see compiled_filter), compiling it when missing."""
    from storage import digests

    here = os.path.dirname(os.path.abspath(__file__))
    machine = machine or os.uname().machine
    stamps = [(st.st_size, st.st_mtime_ns) for st in
              (os.stat(os.path.join(here, f)) for f in ("seccomp_syscalls.json", "bpf.py"))]
    key = digests.of_bytes(json.dumps([machine, stamps, linux_seccomp], sort_keys=True).encode()).split(":", 1)[1]
    path = os.path.join(cache_dir, f"{key}.bpf")
    try:
        if os.path.getsize(path) % 8 == 0 and os.path.getsize(path):
            return path
    except OSError:
        pass
    from .bpf import compile_filter

    data = compile_filter(linux_seccomp, machine)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # a builder runs steps of stages in threads
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
