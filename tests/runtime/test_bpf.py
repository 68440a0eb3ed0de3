"""The seccomp BPF compiler: every call number and many argument values run through
the program (in an interpreter) and checked against the profile's own meaning."""
from __future__ import annotations

import errno
import os
import random

import pytest

from runtime import bpf, caps, seccomp, seccomp_tables

from .bpf_vm import expected, run

X86_64, I386 = bpf.AUDIT_ARCH["SCMP_ARCH_X86_64"], bpf.AUDIT_ARCH["SCMP_ARCH_X86"]
X32 = seccomp_tables.X32_SYSCALL_BIT
ABIS = [("x86_64", X86_64, 0), ("x86", I386, 0), ("x32", X86_64, X32)]


def docker_default(bounding=caps.DOCKER_DEFAULT) -> dict:
    return seccomp.resolve(seccomp.default_profile(), list(bounding), machine="x86_64", kernel="6.1.0")


def nr(table: str, name: str) -> int:
    return seccomp_tables.table(table)[name]


@pytest.mark.parametrize("table,arch,base", ABIS)
def test_every_call_number_means_what_the_default_profile_says(table, arch, base):
    ls = docker_default()
    prog = bpf.compile_filter(ls, "x86_64")
    top = max(seccomp_tables.table(table).values())
    for n in range(base, top + 20):
        assert run(prog, n, arch) == expected(ls, table, n), (table, n)


def test_docker_decisions_on_x86_64():
    prog = bpf.compile_filter(docker_default(), "x86_64")
    eperm, enosys = bpf.RET_ERRNO | errno.EPERM, bpf.RET_ERRNO | errno.ENOSYS
    for name in ("unshare", "keyctl", "add_key", "kexec_load", "open_by_handle_at", "mount", "bpf", "reboot",
                 "setns", "init_module", "acct"):
        assert run(prog, nr("x86_64", name), X86_64) == eperm, name
        assert run(prog, nr("x86", name), I386) == eperm, name
        assert run(prog, nr("x32", name), X86_64) == eperm, name
    for name in ("read", "openat", "execve", "chroot", "ptrace", "arch_prctl", "name_to_handle_at"):
        assert run(prog, nr("x86_64", name), X86_64) == bpf.RET_ALLOW, name
    assert run(prog, nr("x86_64", "clone3"), X86_64) == enosys  # libc falls back to clone
    assert run(prog, 1000, X86_64) == enosys and run(prog, 1000, I386) == enosys
    clone = nr("x86_64", "clone")
    assert run(prog, clone, X86_64, (0x11,)) == bpf.RET_ALLOW  # SIGCHLD | ...
    assert run(prog, clone, X86_64, (0x20000 | 0x11,)) == eperm  # CLONE_NEWNS
    assert run(prog, clone, X86_64, ((1 << 32) | 0x11,)) == bpf.RET_ALLOW  # high word: no flag there
    pers = nr("x86_64", "personality")
    for ok in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert run(prog, pers, X86_64, (ok,)) == bpf.RET_ALLOW
    assert run(prog, pers, X86_64, (0x400000,)) == eperm
    assert run(prog, pers, X86_64, ((1 << 32) | 8,)) == eperm  # 64-bit compare on x86_64
    assert run(prog, nr("x86", "personality"), I386, ((1 << 32) | 8,)) == bpf.RET_ALLOW  # low word on i386
    sock = nr("x86_64", "socket")
    assert run(prog, sock, X86_64, (40,)) == eperm and run(prog, sock, X86_64, (2,)) == bpf.RET_ALLOW
    assert run(prog, 0, 0xC00000B7) == bpf.RET_KILL_PROCESS  # an architecture the profile lacks


def test_capabilities_change_the_filter():
    with_admin = docker_default(caps.DOCKER_DEFAULT + ["CAP_SYS_ADMIN"])
    prog = bpf.compile_filter(with_admin, "x86_64")
    assert run(prog, nr("x86_64", "mount"), X86_64) == bpf.RET_ALLOW
    assert run(prog, nr("x86_64", "clone"), X86_64, (0x20000,)) == bpf.RET_ALLOW
    assert run(prog, nr("x86_64", "clone3"), X86_64) == bpf.RET_ALLOW
    prog = bpf.compile_filter(docker_default(["CAP_CHOWN"]), "x86_64")
    assert run(prog, nr("x86_64", "chroot"), X86_64) == bpf.RET_ERRNO | errno.EPERM


OPS = ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE",
       "SCMP_CMP_MASKED_EQ"]


@pytest.mark.parametrize("op", OPS)
def test_argument_comparisons_at_and_around_their_edges(op):
    rnd = random.Random(op)
    interesting = [0, 1, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 64) - 1, 0x7FFFFFFF00000000, 0x100000000FF]
    for _ in range(12):
        value, two = rnd.choice(interesting + [rnd.getrandbits(64)]), rnd.choice(interesting)
        ls = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                                                   "SCMP_ARCH_X32"],
              "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW",
                            "args": [{"index": 2, "value": value, "valueTwo": two, "op": op},
                                     {"index": 5, "value": 7, "valueTwo": 0, "op": "SCMP_CMP_NE"}]},
                           {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
                           {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
        prog = bpf.compile_filter(ls, "x86_64")
        probes = interesting + [value, value - 1, value + 1, value ^ (1 << 32), two, rnd.getrandbits(64)]
        for table, arch, _base in ABIS:
            for arg in probes:
                arg &= (1 << 64) - 1
                for last in (0, 7):
                    args = (0, 0, arg, 0, 0, last)
                    n = nr(table, "write")
                    assert run(prog, n, arch, args) == expected(ls, table, n, args), (table, hex(arg), last)


def test_actions_errno_values_and_architectures():
    ls = {"defaultAction": "SCMP_ACT_KILL_PROCESS", "defaultErrnoRet": 13, "architectures": ["SCMP_ARCH_X86_64"],
          "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                       {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
                       {"names": ["gettid"], "action": "SCMP_ACT_LOG"},
                       {"names": ["uname"], "action": "SCMP_ACT_TRACE", "errnoRet": 9},
                       {"names": ["kill"], "action": "SCMP_ACT_KILL"},
                       {"names": ["no_such_call"], "action": "SCMP_ACT_ALLOW"}]}
    prog = bpf.compile_filter(ls, "x86_64")
    assert run(prog, nr("x86_64", "getpid"), X86_64) == bpf.RET_ERRNO | 13
    assert run(prog, nr("x86_64", "getppid"), X86_64) == bpf.RET_TRAP
    assert run(prog, nr("x86_64", "gettid"), X86_64) == bpf.RET_LOG
    assert run(prog, nr("x86_64", "uname"), X86_64) == bpf.RET_TRACE | 9
    assert run(prog, nr("x86_64", "kill"), X86_64) == bpf.RET_KILL_THREAD
    assert run(prog, nr("x86_64", "read"), X86_64) == bpf.RET_KILL_PROCESS
    assert run(prog, nr("x32", "read"), X86_64) == bpf.RET_KILL_PROCESS  # x32 not listed
    assert run(prog, nr("x86", "getpid"), I386) == bpf.RET_KILL_PROCESS  # i386 not listed
    allow_all = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    prog = bpf.compile_filter(allow_all, "x86_64")
    assert run(prog, 1000, X86_64) == bpf.RET_ALLOW  # no ENOSYS when the default allows
    assert run(prog, nr("x86_64", "mkdir"), X86_64) == bpf.RET_ERRNO | errno.EPERM
    with pytest.raises(bpf.CompileError, match="SCMP_ACT_NOTIFY"):
        bpf.compile_filter({"defaultAction": "SCMP_ACT_NOTIFY"}, "x86_64")
    with pytest.raises(bpf.CompileError, match="aarch64"):
        bpf.compile_filter(docker_default(), "aarch64")


def test_the_compiled_program_is_cached_by_its_input(tmp_path):
    ls = docker_default()
    first = seccomp.compiled_filter(ls, tmp_path, "x86_64")
    assert first == bpf.compile_filter(ls, "x86_64")
    [path] = list(tmp_path.iterdir())
    path.write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # "allow everything": proves the file is read
    assert seccomp.compiled_filter(ls, tmp_path, "x86_64") == path.read_bytes()
    other = dict(ls, defaultErrnoRet=13)
    assert seccomp.compiled_filter(other, tmp_path, "x86_64") != path.read_bytes()
    assert len(list(tmp_path.iterdir())) == 2


def test_syscall_tables_agree_with_the_kernel_headers_here():
    """The shipped numbers are the uapi headers' (regenerate with python -m runtime.seccomp_tables)."""
    for table, rel in seccomp_tables.HEADERS.items():
        path = os.path.join("/usr/include", rel)
        assert os.path.exists(path), f"{path} missing: install linux-libc-dev"
        with open(path) as f:
            headers = seccomp_tables.parse_header(f.read())
        shipped = seccomp_tables.table(table)
        assert shipped, table
        common = set(headers) & set(shipped)
        assert len(common) >= min(len(headers), len(shipped)) - 5
        assert {n: shipped[n] for n in common} == {n: headers[n] for n in common}
    assert nr("x86_64", "unshare") == 272 and nr("x86", "unshare") == 310 and nr("x32", "unshare") == X32 + 272
