"""Mutation testing: which small bugs in a package would no test notice?

`make mutate` (or `make mutate PKG=storage`) runs this. For each package it
copies the checkout into a scratch directory, lets mutmut (3.x) mutate that
package only and run that package's tests against every mutant, then applies
the hand-written mutants of `mutants.py` (bugs mutmut's operators cannot
write: a dropped condition, a wrong header, a loop that stops early) one at a
time and runs the tests each names. It prints every mutant that no test
noticed; the full report goes to `.mutate/<package>.txt`.

Kept out of `make test` on purpose: a package takes minutes, not seconds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from mutants import MUTANTS, HandMutant  # noqa: E402

# The package, and the tests that are its own (mutmut maps mutants to them by coverage).
PACKAGES: dict[str, list[str]] = {
    "storage": ["tests/storage", "tests/cli"],
    "builder": ["tests/builder", "tests/cli/test_build_cli.py"],
    "runtime": ["tests/runtime", "tests/cli/test_run_cli.py"],
    "registry": ["tests/registry", "tests/client"],
    "soko": ["tests/cli"],
}
# Most behaviour is tested through the real `soko` command, in a child process. mutmut maps
# mutants to tests by the calls it sees in the test's own process, so children report theirs:
# this file, put first on their sys.path (PYTHONPATH is the scratch tree), writes the functions
# a child called to SOKO_MUTMUT_HITS when it exits, and tests/conftest.py hands them to mutmut.
CHILD_HITS = '''"""Written by tests/mutation/mutate.py into its scratch tree only."""
import atexit
import json
import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats" and os.environ.get("SOKO_MUTMUT_HITS"):
    def _report_hits():
        try:
            from mutmut.state import state
        except Exception:
            return
        hits = sorted(state()._stats)
        if hits:
            path = os.path.join(os.environ["SOKO_MUTMUT_HITS"], f"{os.getpid()}.json")
            with open(path, "w") as f:
                json.dump(hits, f)

    atexit.register(_report_hits)
'''
# Code that only runs in a child process (the container side, `python -m` entry points)
# has no in-process coverage, so mutmut would only report "no tests" for it.
NOT_MUTATED: dict[str, list[str]] = {
    "runtime": ["runtime/__main__.py", "runtime/child.py"],
    "builder": ["builder/__main__.py"],
    "registry": ["registry/server/__main__.py", "registry/client/__main__.py"],
}


@dataclass
class Report:
    package: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)      # mutmut names, with their diffs below
    diffs: dict[str, str] = field(default_factory=dict)
    hand_survivors: list[HandMutant] = field(default_factory=list)
    hand_total: int = 0
    hand_broken: list[str] = field(default_factory=list)     # mutants whose text no longer matches


def scratch_copy(dest: Path) -> None:
    """The tracked files plus built fixtures: what the tests need, nothing of a previous run."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src, dst = REPO / rel, dest / rel
        if not src.exists():
            continue  # deleted in the work tree, not yet in git
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    for built in ("fixtures/out", "fixtures/cache"):
        if (REPO / built).is_dir():
            shutil.copytree(REPO / built, dest / built, copy_function=os.link, dirs_exist_ok=True)


def mutmut_config(package: str, only: list[str]) -> str:
    others = [p + "/" for p in PACKAGES if p != package] + ["fixtures/", "bench/"]
    lines = [
        "", "[tool.mutmut]",
        f'source_paths = ["{package}/"]',
        f"only_mutate = {only!r}",
        f"pytest_add_cli_args_test_selection = {PACKAGES[package]!r}",
        f"also_copy = {[*others, 'sitecustomize.py']!r}",
        f"do_not_mutate = {NOT_MUTATED.get(package, [])!r}",
        'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly"]',
        "timeout_multiplier = 5.0",
        "timeout_constant = 30.0",
    ]
    return "\n".join(lines).replace("'", '"') + "\n"


def run_mutmut(package: str, only: list[str], work: Path, report: Report, env: dict[str, str]) -> None:
    with open(work / "pyproject.toml", "a") as f:
        f.write(mutmut_config(package, only))
    (work / "sitecustomize.py").write_text(CHILD_HITS)
    hits = work / "child-hits"
    hits.mkdir()
    env = {**env, "SOKO_MUTMUT_HITS": str(hits)}
    mutmut = [sys.executable, "-m", "mutmut"]
    with open(REPO / ".mutate" / f"{package}.mutmut.log", "wb") as log:
        subprocess.run([*mutmut, "run"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    out = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        report.counts[status] = report.counts.get(status, 0) + 1
        if status == "survived":
            report.survivors.append(name)
    for name in report.survivors:
        report.diffs[name] = subprocess.run([*mutmut, "show", name], cwd=work, env=env,
                                            capture_output=True, text=True).stdout


def pytest(work: Path, tests: tuple[str, ...], env: dict[str, str], timeout: float) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=work, env=env, capture_output=True, timeout=timeout).returncode


def run_hand_mutants(package: str, work: Path, report: Report, env: dict[str, str]) -> None:
    mine = [m for m in MUTANTS if m.package == package]
    # Each selection must pass without a mutant, or a failure would prove nothing.
    clean = {t: pytest(work, t, env, 1800) == 0 for t in {m.tests for m in mine}}
    for m in mine:
        report.hand_total += 1
        if not clean[m.tests]:
            report.hand_broken.append(f"{m.name}: {' '.join(m.tests)} fail without the mutant")
            continue
        target = work / m.file
        original = target.read_text()
        if original.count(m.find) != 1:
            report.hand_broken.append(f"{m.name}: the text to change occurs {original.count(m.find)} times in {m.file}")
            continue
        target.write_text(original.replace(m.find, m.replace))
        try:
            code = pytest(work, m.tests, env, m.timeout)
            noticed = code == 1  # 1: tests failed; 0 passed; others are errors, not a kill
            if code not in (0, 1):
                report.hand_broken.append(f"{m.name}: pytest exited {code}")
                continue
        except subprocess.TimeoutExpired:
            noticed = True  # a hang is a noticed bug
        finally:
            target.write_text(original)
        if not noticed:
            report.hand_survivors.append(m)


def render(report: Report, seconds: float) -> str:
    lines = [f"# {report.package}: mutation testing ({seconds:.0f} s)", ""]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "no mutmut results"
    lines.append(f"mutmut: {counts}")
    lines.append(f"hand-written: {report.hand_total - len(report.hand_survivors) - len(report.hand_broken)}"
                 f"/{report.hand_total} noticed")
    if report.hand_survivors:
        lines += ["", "## Hand-written mutants no test noticed"]
        lines += [f"- {m.name} ({m.file}): {m.why}" for m in report.hand_survivors]
    if report.hand_broken:
        lines += ["", "## Hand-written mutants that could not run (update mutants.py)"]
        lines += [f"- {b}" for b in report.hand_broken]
    if report.survivors:
        lines += ["", f"## mutmut mutants no test noticed ({len(report.survivors)})", ""]
        for name in report.survivors:
            lines.append(report.diffs.get(name, name).rstrip())
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="*", metavar="PACKAGE", help=f"any of {', '.join(PACKAGES)}; default: all")
    ap.add_argument("--hand-only", action="store_true", help="only the hand-written mutants")
    ap.add_argument("--only", action="append", default=[], metavar="GLOB",
                    help="mutmut mutates only these files (e.g. storage/gc.py); repeatable")
    args = ap.parse_args()
    unknown = [p for p in args.packages if p not in PACKAGES]
    if unknown:
        ap.error(f"unknown package {unknown[0]!r} (one of {', '.join(PACKAGES)})")
    out_dir = REPO / ".mutate"
    out_dir.mkdir(exist_ok=True)
    env = {**os.environ, "CI": os.environ.get("CI", "1"), "PYTHONDONTWRITEBYTECODE": "1", "SOKO_MUTATION": "1"}
    unnoticed = 0
    for package in args.packages or list(PACKAGES):
        t0 = time.monotonic()
        report = Report(package)
        with tempfile.TemporaryDirectory(prefix=f"soko-mutate-{package}-", dir="/var/tmp") as tmp:
            work = Path(tmp)
            scratch_copy(work)
            run_hand_mutants(package, work, report, env)
            if not args.hand_only:
                only = [g for g in args.only if g.startswith(package + "/")]
                if args.only and not only:
                    continue  # --only names files of other packages
                run_mutmut(package, only, work, report, env)
        text = render(report, time.monotonic() - t0)
        (out_dir / f"{package}.txt").write_text(text)
        unnoticed += len(report.survivors) + len(report.hand_survivors)
        head = text.split("\n## mutmut mutants")[0]
        print(head.rstrip())
        print(f"(full report: .mutate/{package}.txt)\n")
    return 0 if unnoticed == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
