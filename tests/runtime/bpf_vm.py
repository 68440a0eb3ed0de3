"""A classic BPF interpreter for seccomp programs, and the profile's meaning evaluated directly.

The compiler's tests run every system call number (and many argument values)
through both and compare: the program must mean what the profile says."""
from __future__ import annotations

import errno
import struct

from runtime import bpf, seccomp_tables


def run(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """The seccomp return value of `program` for one system call."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = 0
    pc = 0
    for _ in range(len(insns) + 1):  # no loops in cBPF: each step goes forward
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == bpf.LD_W_ABS:
            assert k % 4 == 0 and k + 4 <= len(data), f"load out of seccomp_data: {k}"
            a = struct.unpack_from("<I", data, k)[0]
        elif code == bpf.ALU_AND_K:
            a &= k
        elif code == bpf.JA:
            pc += k
        elif code in (bpf.JEQ_K, bpf.JGT_K, bpf.JGE_K):
            hit = {bpf.JEQ_K: a == k, bpf.JGT_K: a > k, bpf.JGE_K: a >= k}[code]
            pc += jt if hit else jf
        elif code == bpf.RET_K:
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
    raise AssertionError("program ran past its end")


def _holds(op: str, arg: int, value: int, value_two: int) -> bool:
    return {
        "SCMP_CMP_EQ": arg == value, "SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value,
        "SCMP_CMP_LE": arg <= value, "SCMP_CMP_GT": arg > value, "SCMP_CMP_GE": arg >= value,
        "SCMP_CMP_MASKED_EQ": (arg & value) == value_two,
    }[op]


def expected(linux_seccomp: dict, table_name: str, nr: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """What the profile says for call `nr` of ABI `table_name`, straight from its rules."""
    words = table_name in ("x86", "x32")
    derr = linux_seccomp.get("defaultErrnoRet")
    derr = errno.EPERM if derr is None else derr
    default = bpf.action_value(linux_seccomp["defaultAction"], derr)
    table = seccomp_tables.table(table_name)
    names = {n for n, v in table.items() if v == nr}
    matching = [c for c in linux_seccomp.get("syscalls", []) if names & set(c["names"])]
    known = [table[n] for c in linux_seccomp.get("syscalls", []) for n in c["names"] if n in table]
    if (default not in (bpf.RET_ALLOW, bpf.RET_ERRNO | errno.ENOSYS)) and known and nr > max(known):
        return bpf.RET_ERRNO | errno.ENOSYS
    conditional = [c for c in matching if c.get("args")]
    plain = [c for c in matching if not c.get("args")]
    for c in conditional:
        ok = True
        for cond in c["args"]:
            mask = 0xFFFFFFFF if words else (1 << 64) - 1
            arg = args[cond["index"]] & mask
            ok = ok and _holds(cond["op"], arg, cond["value"] & mask, cond.get("valueTwo", 0) & mask)
        if ok:
            return bpf.action_value(c["action"], c.get("errnoRet"), derr)
    if plain:
        return bpf.action_value(plain[0]["action"], plain[0].get("errnoRet"), derr)
    return default
