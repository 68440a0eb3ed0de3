"""`linux.seccomp` (the OCI spec's seccomp section) -> a classic BPF program for seccomp(2).

What the kernel runs for every system call of the container: check the
architecture (x86_64, and i386/x32 when the profile lists them: a 64-bit
process can still make 32-bit system calls), answer ENOSYS for numbers past
the last one the profile knows (as runc does, so that a libc probing a newer
call falls back instead of failing with EPERM), then find the number in a
binary search over ranges of equal decisions, and for calls with argument
conditions compare the 64-bit arguments 32 bits at a time.

Rules for one call are tried in profile order, those with conditions first;
the first that matches decides, else the call's unconditional rule, else the
default action. Names the architecture has no number for are skipped (runc
does the same). The output is deterministic, so it can be cached by its input.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Any, Union

from . import seccomp_tables
from .errors import InvalidOption

# seccomp return values (linux/seccomp.h)
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

# classic BPF opcodes
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
ALU_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
JA = 0x05
JEQ_K = 0x15
JGT_K = 0x25
JGE_K = 0x35
RET_K = 0x06
MAX_INSNS = 4096

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16

AUDIT_ARCH = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003, "SCMP_ARCH_X32": 0xC000003E}
TABLE = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32"}
WORD_ONLY = {"SCMP_ARCH_X86", "SCMP_ARCH_X32"}  # 32-bit ABIs: only the low word of an argument counts
NATIVE = {"x86_64": "SCMP_ARCH_X86_64"}
X32_BIT = seccomp_tables.X32_SYSCALL_BIT


class CompileError(InvalidOption):
    """A profile that cannot be turned into a filter here."""


def action_value(action: str, errno_ret: int | None, default_errno: int = errno.EPERM) -> int:
    if action == "SCMP_ACT_ALLOW":
        return RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return RET_ERRNO | ((default_errno if errno_ret is None else errno_ret) & 0xFFFF)
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return RET_KILL_THREAD
    if action == "SCMP_ACT_KILL_PROCESS":
        return RET_KILL_PROCESS
    if action == "SCMP_ACT_TRAP":
        return RET_TRAP
    if action == "SCMP_ACT_TRACE":
        return RET_TRACE | ((errno_ret or 0) & 0xFFFF)
    if action == "SCMP_ACT_LOG":
        return RET_LOG
    raise CompileError(f"seccomp action {action!r} is not supported by the built-in runtime")


@dataclass(frozen=True)
class Label:
    name: str


@dataclass
class Insn:
    code: int
    k: Union[int, Label] = 0
    jt: Union[int, Label] = 0
    jf: Union[int, Label] = 0


@dataclass(frozen=True)
class Cond:
    index: int
    op: str
    value: int
    value_two: int


@dataclass(frozen=True)
class Rule:
    ret: int
    conds: tuple[Cond, ...]


class _Asm:
    """Instructions with forward labels; jt/jf resolve to offsets, `ja` to its 32-bit k."""

    def __init__(self) -> None:
        self.insns: list[Insn | Label] = []
        self._n = 0

    def label(self, hint: str = "L") -> Label:
        self._n += 1
        return Label(f"{hint}{self._n}")

    def emit(self, code: int, k: Any = 0, jt: Any = 0, jf: Any = 0) -> None:
        self.insns.append(Insn(code, k, jt, jf))

    def place(self, label: Label) -> None:
        self.insns.append(label)

    def assemble(self) -> bytes:
        where: dict[Label, int] = {}
        real: list[Insn] = []
        for item in self.insns:
            if isinstance(item, Label):
                where[item] = len(real)
            else:
                real.append(item)
        if len(real) > MAX_INSNS:
            raise CompileError(f"seccomp profile too large: {len(real)} BPF instructions (at most {MAX_INSNS})")
        out = bytearray()
        for pc, ins in enumerate(real):
            def off(x: Any) -> int:
                if isinstance(x, Label):
                    return where[x] - pc - 1
                return x
            k, jt, jf = off(ins.k) if ins.code == JA else ins.k, off(ins.jt), off(ins.jf)
            if not (0 <= jt <= 255 and 0 <= jf <= 255) or k < 0:
                raise CompileError("seccomp profile too complex: a jump is out of range")
            out += struct.pack("<HBBI", ins.code, jt, jf, k & 0xFFFFFFFF)
        return bytes(out)


def _rules_by_number(syscalls: list[dict], table: dict[str, int], default_errno: int,
                     word_only: bool) -> dict[int, list[Rule]]:
    out: dict[int, list[Rule]] = {}
    for call in syscalls:
        ret = action_value(call["action"], call.get("errnoRet"), default_errno)
        conds = tuple(Cond(a["index"], a["op"], a.get("value", 0), a.get("valueTwo", 0))
                      for a in call.get("args") or [])
        if word_only:
            conds = tuple(Cond(c.index, c.op, c.value & 0xFFFFFFFF, c.value_two & 0xFFFFFFFF) for c in conds)
        for name in call.get("names") or [call.get("name")]:
            nr = table.get(name)
            if nr is not None:
                out.setdefault(nr, []).append(Rule(ret, conds))
    return out


def _decision(rules: list[Rule], default: int) -> tuple[int, tuple[Rule, ...]]:
    """(what the call gets when no conditional rule matches, the conditional rules in order)."""
    plain = next((r.ret for r in rules if not r.conds), default)
    conditional = tuple(r for r in rules if r.conds)
    if all(r.ret == plain for r in conditional):
        conditional = ()
    return plain, conditional


def _emit_cond(a: _Asm, c: Cond, fail: Label, word_only: bool) -> None:
    """Fall through when argument c.index satisfies c, else jump to `fail`."""
    lo_off, hi_off = OFF_ARGS + 8 * c.index, OFF_ARGS + 8 * c.index + 4
    passed = a.label("pass")
    v, v2 = c.value, c.value_two
    lo, hi = v & 0xFFFFFFFF, v >> 32
    halves = [(lo_off, lo, v2 & 0xFFFFFFFF, v & 0xFFFFFFFF)] if word_only else \
        [(hi_off, hi, v2 >> 32, v >> 32), (lo_off, lo, v2 & 0xFFFFFFFF, v & 0xFFFFFFFF)]
    last = len(halves) - 1
    for i, (off, want, want2, mask) in enumerate(halves):
        a.emit(LD_W_ABS, off)
        final = i == last
        if c.op == "SCMP_CMP_EQ":
            a.emit(JEQ_K, want, 0, fail)
        elif c.op == "SCMP_CMP_NE":
            a.emit(JEQ_K, want, fail if final else 0, passed)
        elif c.op == "SCMP_CMP_MASKED_EQ":  # (arg & value) == valueTwo
            a.emit(ALU_AND_K, mask)
            a.emit(JEQ_K, want2, 0, fail)
        elif c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_LT", "SCMP_CMP_LE"):
            # where an argument above / below the value goes; equal high words decide on the low word
            above, below = (passed, fail) if c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE") else (fail, passed)
            if final:
                a.emit(JGT_K if c.op in ("SCMP_CMP_GT", "SCMP_CMP_LE") else JGE_K, want, above, below)
            else:
                a.emit(JGT_K, want, above, 0)
                a.emit(JEQ_K, want, 0, below)
        else:
            raise CompileError(f"unknown seccomp operator {c.op!r}")
    a.place(passed)


def _emit_leaf(a: _Asm, plain: int, conditional: tuple[Rule, ...], word_only: bool) -> None:
    for rule in conditional:
        nxt = a.label("rule")
        for c in rule.conds:
            _emit_cond(a, c, nxt, word_only)
        a.emit(RET_K, rule.ret)
        a.place(nxt)
    a.emit(RET_K, plain)


def _emit_search(a: _Asm, segments: list[tuple[int, int, tuple[Rule, ...]]], word_only: bool) -> None:
    """segments: (first number, plain decision, conditional rules), sorted; A holds the number."""
    if len(segments) == 1:
        _, plain, conditional = segments[0]
        _emit_leaf(a, plain, conditional, word_only)
        return
    mid = len(segments) // 2
    right = a.label("ge")
    a.emit(JGE_K, segments[mid][0], 0, 1)
    a.emit(JA, right)
    _emit_search(a, segments[:mid], word_only)
    a.place(right)
    _emit_search(a, segments[mid:], word_only)


def _segments(by_nr: dict[int, list[Rule]], default: int, start: int) -> list[tuple[int, int, tuple[Rule, ...]]]:
    """Sorted (first number, plain decision, conditional rules); neighbours with one plain decision merge."""
    segs: list[tuple[int, int, tuple[Rule, ...]]] = []

    def add(first: int, plain: int, conditional: tuple[Rule, ...]) -> None:
        if segs and segs[-1][0] == first:
            segs.pop()  # an empty segment: the new one starts at the same number
        if segs and not conditional and not segs[-1][2] and segs[-1][1] == plain:
            return  # continues the segment before
        segs.append((first, plain, conditional))

    add(start, default, ())
    for nr in sorted(by_nr):
        add(nr, *_decision(by_nr[nr], default))
        add(nr + 1, default, ())
    return segs


def compile_filter(linux_seccomp: dict[str, Any], machine: str | None = None) -> bytes:
    """The sock_filter array (8 bytes an instruction) for `linux_seccomp` on this machine."""
    machine = machine or os.uname().machine
    native = NATIVE.get(machine)
    if native is None:
        raise CompileError(f"the built-in runtime has no seccomp support for {machine} "
                           "(use --runtime runc, or --security-opt seccomp=unconfined)")
    default_errno = linux_seccomp.get("defaultErrnoRet")
    default_errno = errno.EPERM if default_errno is None else default_errno
    default = action_value(linux_seccomp["defaultAction"], default_errno)
    arches = [x for x in (linux_seccomp.get("architectures") or [native]) if x in AUDIT_ARCH]
    arches = list(dict.fromkeys(arches))
    syscalls = linux_seccomp.get("syscalls") or []
    # runc's -ENOSYS for numbers newer than any the profile names (not when everything is allowed)
    enosys = default != RET_ALLOW and default != RET_ERRNO | errno.ENOSYS

    a = _Asm()
    a.emit(LD_W_ABS, OFF_ARCH)
    sections: dict[int, Label] = {}
    for arch in arches:
        audit = AUDIT_ARCH[arch]
        if audit not in sections:
            sections[audit] = a.label(arch)
            a.emit(JEQ_K, audit, 0, 1)
            a.emit(JA, sections[audit])
    a.emit(RET_K, RET_KILL_PROCESS)  # an architecture the profile does not cover
    done: set[int] = set()
    for arch in arches:
        audit = AUDIT_ARCH[arch]
        if audit in done:
            continue
        done.add(audit)
        a.place(sections[audit])
        a.emit(LD_W_ABS, OFF_NR)
        if audit == AUDIT_ARCH["SCMP_ARCH_X86_64"]:
            x64 = "SCMP_ARCH_X86_64" in arches
            x32 = "SCMP_ARCH_X32" in arches
            x32_label = a.label("x32")
            a.emit(JGE_K, X32_BIT, 0, 1)  # x32 calls carry bit 30
            if x32:
                a.emit(JA, x32_label)
            else:
                a.emit(RET_K, RET_KILL_PROCESS)
            if x64:
                _emit_arch(a, "SCMP_ARCH_X86_64", syscalls, default, default_errno, enosys, 0)
            else:
                a.emit(RET_K, RET_KILL_PROCESS)
            if x32:
                a.place(x32_label)
                _emit_arch(a, "SCMP_ARCH_X32", syscalls, default, default_errno, enosys, X32_BIT)
        else:
            _emit_arch(a, arch, syscalls, default, default_errno, enosys, 0)
    return a.assemble()


def _emit_arch(a: _Asm, arch: str, syscalls: list[dict], default: int, default_errno: int, enosys: bool,
               start: int) -> None:
    """The search for one ABI; A holds the system call number."""
    word_only = arch in WORD_ONLY
    by_nr = _rules_by_number(syscalls, seccomp_tables.table(TABLE[arch]), default_errno, word_only)
    if enosys and by_nr:
        a.emit(JGT_K, max(by_nr), 0, 1)
        a.emit(RET_K, RET_ERRNO | errno.ENOSYS)
    _emit_search(a, _segments(by_nr, default, start), word_only)

