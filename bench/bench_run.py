"""Container start-to-exit time: soko beside podman and bare runc.

    python bench/bench_run.py [--runs 30] [--warmup 5] [--baseline REV]

One image, three ways, each `true` with --rm and no network:

- soko:   soko --root STORE run --rm --network none IMAGE true
          (the installed command, bench/_install.py: `pip install .` in a venv of its own)
- podman: podman --runtime runc run --rm --network none IMAGE true
          (the same busybox rootfs tarball, loaded with `podman import`)
- runc:   runc run of a bundle prepared once (the floor: no image store,
          no snapshot, no cleanup)
- with --baseline REV, soko at another git revision too (extracted with
  `git archive`, compiled, run by the same interpreter as the installed soko
  through a copy of its console script): a before/after in the same rounds

The image is the busybox fixture (fixtures/recipes.py). Podman gets its own
storage under bench/out/ and a CONTAINERS_CONF without default ulimits
(this machine refuses raising RLIMIT_NOFILE), so nothing on the host is
changed. The commands run round-robin, so load from elsewhere falls on all
of them alike; medians and minimums are reported. Python byte-code is
compiled first, as an installed package would have it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out" / "run"
IMAGE = "soko-bench/busybox:latest"
PODMAN_IMAGE = "localhost/soko-bench-busybox:latest"

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def sh(*cmd: str, env: dict | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.PIPE)


def rootfs_tar() -> Path:
    sys.path.insert(0, str(REPO / "fixtures"))
    import recipes  # fixtures/recipes.py

    return Path(recipes.busybox_rootfs())


def prepare_soko(tar: Path) -> Path:
    from storage.images import ImageStore
    from storage.rootfs_import import import_rootfs

    root = OUT / "soko-store"
    shutil.rmtree(root, ignore_errors=True)
    store = ImageStore(root)
    m = import_rootfs(store, tar, changes={"Cmd": ["sh"]})
    store.tag(IMAGE, m.digest)
    return root


def prepare_podman(tar: Path, env: dict) -> list[str]:
    base = ["podman", "--root", str(OUT / "podman-root"), "--runroot", "/run/soko-bench-podman"]
    sh(*base, "import", "-q", str(tar), PODMAN_IMAGE, env=env)
    return base + ["--runtime", "runc", "run", "--rm", "--network", "none", PODMAN_IMAGE, "true"]


def prepare_runc(tar: Path) -> list[str]:
    bundle = OUT / "runc-bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    sh("tar", "-C", str(bundle / "rootfs"), "-xf", str(tar))
    sh("runc", "spec", "--bundle", str(bundle))
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    (bundle / "config.json").write_text(json.dumps(spec))
    return ["runc", "--root", "/run/soko-bench-runc", "run", "--bundle", str(bundle), "soko-bench-floor"]


def prepare_baseline(rev: str) -> Path:
    """A console script for soko at `rev`: its tree extracted and compiled, found first on sys.path."""
    from bench_registry import extract_revision

    from _install import VENV

    tree = OUT / "baseline-src"
    shutil.rmtree(tree, ignore_errors=True)
    extract_revision(rev, tree)
    sh(str(VENV / "bin" / "python"), "-m", "compileall", "-q", str(tree))
    script = OUT / "baseline-soko"
    script.write_text(f"""import re
import sys
sys.path.insert(0, {str(tree)!r})
try:
    from soko.entry import main  # the entry point since issue 15
except ImportError:
    from soko.cli import main
sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
sys.exit(main())
""")
    return script


def measure(cmds: dict[str, list[str]], runs: int, warmup: int, env: dict) -> dict[str, list[float]]:
    """Seconds per run of each command, taken round-robin (a b c a b c ...), so
    load from elsewhere on the machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    failed: set[int] = set()
    for i in range(warmup + runs):
        for name, cmd in cmds.items():
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if p.returncode != 0:  # other jobs on a shared machine (podman's storage lock...): skip the round
                print(f"{name} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()[-300:]}",
                      file=sys.stderr)
                failed.add(i)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    keep = [k for k in range(runs) if k + warmup not in failed]
    return {name: [t[k] for k in keep] for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--baseline", metavar="REV", help="also time soko at this git revision (before/after)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_run.py needs root (namespaces, cgroups, runc)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    conf = OUT / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    env.pop("PYTHONPATH", None)
    tar = rootfs_tar()
    store = prepare_soko(tar)
    from _install import VENV, installed_soko

    run_args = ["--root", str(store), "run", "--rm", "--network", "none", IMAGE, "true"]
    cmds = {
        "soko": [str(installed_soko()), *run_args],
        "podman": prepare_podman(tar, env),
        "runc": prepare_runc(tar),
    }
    if args.baseline:
        cmds["baseline"] = [str(VENV / "bin" / "python"), str(prepare_baseline(args.baseline)), *run_args]
    for cmd in cmds.values():  # each works, and the first soko run unpacks the snapshot
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
    times = measure(cmds, args.runs, args.warmup, env)
    med = {name: statistics.median(t) for name, t in times.items()}
    # paired per round: the three ran back to back, so drifting load cancels out
    paired = [s / p for s, p in zip(times["soko"], times["podman"])]
    vs_runc = statistics.median(s / r for s, r in zip(times["soko"], times["runc"]))
    print(f"{args.runs} rounds, after {args.warmup} warm-up rounds (load average {load0:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")
    print(f"{'':10} {'median':>9} {'min':>9}")
    for name, t in times.items():
        print(f"{name:10} {med[name] * 1000:6.1f} ms {min(t) * 1000:6.1f} ms")
    print(f"soko time / podman time (paired median; target <= 0.5): {statistics.median(paired):.2f}x, "
          f"best round {min(paired):.2f}x   soko / runc floor: {vs_runc:.2f}x")
    if args.baseline:
        before = statistics.median(b / p for b, p in zip(times["baseline"], times["podman"]))
        after = statistics.median(s / b for s, b in zip(times["soko"], times["baseline"]))
        print(f"soko@{args.baseline} / podman (paired median): {before:.2f}x   soko / soko@{args.baseline}: {after:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
