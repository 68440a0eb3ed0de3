"""Hand-written mutants: plausible bugs that mutmut's operators do not write.

Each names one exact piece of text in one file, what it becomes, and the tests
that must notice. `mutate.py` applies one at a time to a scratch copy; a
mutant whose text no longer occurs is reported as "could not run" so this
list is kept in step with the code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HandMutant:
    name: str
    package: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str
    timeout: float = 900.0


MUTANTS: list[HandMutant] = [
]
