"""System call numbers per architecture, for compiling seccomp profiles.

A profile names system calls; the kernel sees numbers, and the same name has
a different number (or none) on each ABI an x86_64 kernel runs: x86_64, i386
and x32 (x86_64's numbers with bit 30 set). The numbers come from the kernel's
own uapi headers (linux-libc-dev) and are kept in seccomp_syscalls.json beside
this file, so running a container needs no headers. Regenerate with
`python -m runtime.seccomp_tables [/usr/include]` when the headers are newer.
"""
from __future__ import annotations

import json
import os
import re
import sys
from functools import lru_cache

TABLES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_syscalls.json")
X32_SYSCALL_BIT = 0x40000000

# table name -> header, relative to the include directory
HEADERS = {
    "x86_64": "x86_64-linux-gnu/asm/unistd_64.h",
    "x86": "x86_64-linux-gnu/asm/unistd_32.h",
    "x32": "x86_64-linux-gnu/asm/unistd_x32.h",
}
_DEFINE = r"^#define __NR_(\w+)\s+(?:\(__X32_SYSCALL_BIT \+ (\d+)\)|(\d+))\s*$"


def parse_header(text: str) -> dict[str, int]:
    """`#define __NR_name N` (or `(__X32_SYSCALL_BIT + N)`) lines -> {name: number}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(_DEFINE, line.strip())
        if m:
            out[m.group(1)] = X32_SYSCALL_BIT + int(m.group(2)) if m.group(2) else int(m.group(3))
    return out


def from_headers(include: str = "/usr/include") -> dict[str, dict[str, int]]:
    tables = {}
    for arch, rel in HEADERS.items():
        with open(os.path.join(include, rel)) as f:
            tables[arch] = parse_header(f.read())
    return tables


@lru_cache(maxsize=None)
def table(arch: str) -> dict[str, int]:
    """{name: number} for `arch` ("x86_64", "x86", "x32"); empty for an unknown one."""
    return _all().get(arch, {})


@lru_cache(maxsize=1)
def _all() -> dict[str, dict[str, int]]:
    with open(TABLES_FILE) as f:
        data = json.load(f)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _write(tables: dict[str, dict[str, int]], source: str) -> None:
    data = {"_source": source}
    data.update({arch: dict(sorted(t.items(), key=lambda kv: kv[1])) for arch, t in tables.items()})
    with open(TABLES_FILE, "w") as f:
        json.dump(data, f, indent=0, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    inc = sys.argv[1] if len(sys.argv) > 1 else "/usr/include"
    with open(os.path.join(inc, "linux/version.h")) as vf:
        code = int(re.search(r"LINUX_VERSION_CODE (\d+)", vf.read()).group(1))
    _write(from_headers(inc), f"Linux {code >> 16}.{(code >> 8) & 255} uapi headers: {', '.join(HEADERS.values())}")
    print(TABLES_FILE)
