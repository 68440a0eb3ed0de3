"""Docker's default seccomp profile in both executors, read from inside real containers:
dangerous calls are refused with Docker's errno, ordinary work goes on, and
--security-opt seccomp=unconfined|FILE behave as in Docker."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime import caps, seccomp
from runtime.errors import InvalidOption
from .conftest import run_cli
from .helpers import add_image

RUNTIMES = ["builtin", "runc"]
EPERM, EINVAL, ENOSYS = "1", "22", "38"
REFUSED = ["unshare", "keyctl", "add_key", "kexec_load", "open_by_handle_at", "mount", "clone_newns",
           "personality_other", "socket_vsock", "x32_unshare", "i386_unshare", "i386_keyctl"]
ALLOWED = ["clone_plain", "personality_query", "socket_unix", "getpid", "i386_getpid"]


@pytest.fixture(scope="session")
def sysprobe(tmp_path_factory) -> Path:
    """tests/runtime/sysprobe.c, static; it only ever runs inside containers."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed for the seccomp tests (Makefile APT_PACKAGES: gcc libc6-dev)"
    out = tmp_path_factory.mktemp("probe") / "sysprobe"
    subprocess.run([gcc, "-static", "-O1", "-o", str(out), str(Path(__file__).with_name("sysprobe.c"))],
                   check=True)
    return out


@pytest.fixture
def probe_store(store, sysprobe):
    """busybox plus /sysprobe, tagged `probe`."""
    from tests.tarballs import make_tar

    img = store.resolve("busybox")
    base = store.blobs.read_bytes(img.manifest.layers[0].digest)
    add_image(store, [base, make_tar([("file", "sysprobe", sysprobe.read_bytes(), 0o755)])],
              {"Cmd": ["/sysprobe", "i386"]}, tag="probe")
    return store


def probe(root: Path, rt: str, *opts: str) -> dict[str, str]:
    p = run_cli(root, "--rm", "--runtime", rt, *opts, "probe", "sh", "-c",
                "grep '^Seccomp:' /proc/self/status | tr -d '\\t'; /sysprobe i386")
    assert p.returncode == 0, p.stderr
    return dict(line.split("=", 1) if "=" in line else line.split(":", 1) for line in p.stdout.decode().split())


@pytest.mark.parametrize("rt", RUNTIMES)
def test_default_profile_refuses_what_docker_refuses(probe_store, rt):
    got = probe(probe_store.root, rt)
    assert got["Seccomp"] == "2"
    for name in REFUSED:
        assert got[name] == EPERM, (name, got)
    assert got["clone3"] == ENOSYS  # Docker's ENOSYS: libc then falls back to clone
    assert got["unknown_1000"] == ENOSYS  # past the last known call: ENOSYS, as runc does
    for name in ALLOWED:
        assert got[name] == "ok", (name, got)
    p = run_cli(probe_store.root, "--rm", "--runtime", rt, "busybox", "sh", "-c",
                "unshare -U true; echo status=$?; mkdir /tmp/d && echo > /tmp/d/f && ls /tmp/d")
    assert p.stdout.decode().split() == ["status=1", "f"], p.stderr
    assert b"unshare(0x10000000): Operation not permitted" in p.stderr


def test_both_executors_apply_the_same_filter(probe_store):
    """The built-in compiler and runc's libseccomp give every probed call the same answer."""
    assert probe(probe_store.root, "builtin") == probe(probe_store.root, "runc")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_unconfined(probe_store, rt):
    got = probe(probe_store.root, rt, "--security-opt", "seccomp=unconfined")
    assert got["Seccomp"] == "0"
    assert got["keyctl"] == "ok" and got["add_key"] == "ok"
    assert got["clone3"] == EINVAL  # reaches the kernel, which rejects the NULL arguments


@pytest.mark.parametrize("rt", RUNTIMES)
def test_profile_file(probe_store, rt, tmp_path):
    profile = json.loads(Path(seccomp.DEFAULT_FILE).read_text())
    profile["syscalls"][0]["names"].remove("mkdir")
    profile["syscalls"][0]["names"].remove("mkdirat")
    profile["syscalls"].append({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13})
    path = tmp_path / "no-mkdir.json"
    path.write_text(json.dumps(profile))
    p = run_cli(probe_store.root, "--rm", "--runtime", rt, "--security-opt", f"seccomp={path}", "probe", "sh", "-c",
                "mkdir /tmp/x; echo status=$?; /sysprobe | grep keyctl")
    assert p.stdout.decode().split() == ["status=1", "keyctl=13"], p.stderr
    assert b"Operation not permitted" in p.stderr


BAD_PROFILES = [
    ("missing.json", None, "opening seccomp profile"),
    ("notjson.json", "{nope", "decoding failed"),
    ("action.json", '{"defaultAction": "SCMP_ACT_MAYBE"}', "unknown defaultAction"),
    ("op.json", '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
                ' "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}', "unknown op"),
    ("index.json", '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
                   ' "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index must be 0 to 5"),
    ("names.json", '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}',
     "names no system call"),
    ("both.json", '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], '
                  '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}', "both specified"),
]


@pytest.mark.parametrize("name,text,message", BAD_PROFILES, ids=[b[0] for b in BAD_PROFILES])
def test_bad_profile_is_a_clear_error_and_leaves_nothing(probe_store, soko, tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    r = soko("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "true", check=False)
    assert r.returncode == 125, r
    assert message in r.stderr and str(path) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    containers = probe_store.root / "containers"
    assert not containers.exists() or [n for n in os.listdir(containers) if n != ".lock"] == []


def test_security_opt_parsing():
    assert seccomp.parse_option([]) == "default"
    assert seccomp.parse_option(["seccomp=unconfined"]) == "unconfined"
    assert seccomp.parse_option(["seccomp:/p.json", "no-new-privileges"]) == "/p.json"
    with pytest.raises(InvalidOption, match="invalid --security-opt"):
        seccomp.parse_option(["apparmor=foo"])
    with pytest.raises(InvalidOption):
        seccomp.parse_option(["seccomp="])


def test_resolve_follows_dockers_filters():
    prof = seccomp.default_profile()
    plain = seccomp.resolve(prof, caps.DOCKER_DEFAULT, machine="x86_64", kernel="6.1.0-17-amd64")
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["defaultErrnoRet"] == 1
    names = lambda ls: {n for s in ls["syscalls"] for n in s["names"]}  # noqa: E731
    assert {"arch_prctl", "modify_ldt", "chroot", "ptrace", "clone3"} <= names(plain)
    assert not {"mount", "unshare", "open_by_handle_at", "reboot", "arm_fadvise64_64", "s390_runtime_instr"} \
        & names(plain)
    clone3 = [s for s in plain["syscalls"] if s["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    admin = seccomp.resolve(prof, caps.DOCKER_DEFAULT + ["CAP_SYS_ADMIN"], machine="x86_64", kernel="6.1")
    assert {"mount", "unshare", "clone3"} <= names(admin)
    assert not [s for s in admin["syscalls"] if s["names"] == ["clone3"] and s["action"] != "SCMP_ACT_ALLOW"]
    old = seccomp.resolve(prof, caps.DOCKER_DEFAULT, machine="x86_64", kernel="4.4.0")
    assert "ptrace" not in names(old)  # minKernel 4.8
    arm = seccomp.resolve(prof, caps.DOCKER_DEFAULT, machine="aarch64", kernel="6.1")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] and "arm_fadvise64_64" in names(arm)
    assert "arch_prctl" not in names(arm)


@pytest.fixture(scope="module")
def bookworm_store(tmp_path_factory, bookworm_rootfs):
    """One store with Debian bookworm for both executors (importing it is the slow part)."""
    from storage.images import ImageStore
    from storage.rootfs_import import import_rootfs

    store = ImageStore(tmp_path_factory.mktemp("bookworm") / "store")
    store.tag("bookworm", import_rootfs(store, bookworm_rootfs).digest)
    return store


@pytest.mark.parametrize("rt", RUNTIMES)
def test_debian_tools_work_under_the_filter(bookworm_store, rt):
    store = bookworm_store
    p = run_cli(store.root, "--rm", "--runtime", rt, "--network", "none", "bookworm", "sh", "-c",
                "apt-get --version | head -1; dpkg -l | grep -c '^ii'; grep '^Seccomp:' /proc/self/status",
                timeout=120)
    out = p.stdout.decode().splitlines()
    assert p.returncode == 0, p.stderr
    assert out[0].startswith("apt ") and int(out[1]) > 50 and out[2].split() == ["Seccomp:", "2"], out


def test_cli_passes_security_opt(probe_store, soko):
    r = soko("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert r.stdout.split() == ["Seccomp:", "0"]
    r = soko("run", "--rm", "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert r.stdout.split() == ["Seccomp:", "2"]
    r = soko("run", "--rm", "--security-opt", "label=disable", "busybox", "true", check=False)
    assert r.returncode == 125 and "invalid --security-opt" in r.stderr
