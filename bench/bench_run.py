"""Container start-to-exit time: soko's runtime beside podman and bare runc.

    python bench/bench_run.py [--runs 30] [--warmup 5]

One image, three ways, each `true` with --rm and no network:

- soko:   python -m runtime run --root STORE --rm --network none IMAGE true
          (the built-in executor; `soko run` calls the same function)
- soko-cli: python -m soko --root STORE run --rm --network none IMAGE true
          (the same through the click command line, for its own overhead)
- podman: podman --runtime runc run --rm --network none IMAGE true
          (the same busybox rootfs tarball, loaded with `podman import`)
- runc:   runc run of a bundle prepared once (the floor: no image store,
          no snapshot, no cleanup)

The image is the busybox fixture (fixtures/recipes.py). Podman gets its own
storage under bench/out/ and a CONTAINERS_CONF without default ulimits
(this machine refuses raising RLIMIT_NOFILE), so nothing on the host is
changed. Timing uses hyperfine when installed (median of --runs after
--warmup), else a loop here. Python byte-code is compiled first, as an
installed package would have it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out" / "run"
IMAGE = "soko-bench/busybox:latest"
PODMAN_IMAGE = "localhost/soko-bench-busybox:latest"

sys.path.insert(0, str(REPO))


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
    subprocess.run([sys.executable, "-m", "compileall", "-q", "runtime", "storage", "soko"], cwd=REPO,
                   stdout=subprocess.DEVNULL, check=True)
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


def time_loop(cmd: list[str], runs: int, warmup: int, env: dict) -> list[float]:
    out = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out


def measure(cmds: dict[str, list[str]], runs: int, warmup: int, env: dict) -> dict[str, float]:
    """Median seconds per command."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            args = ["hyperfine", "-N", "--style", "basic", "--warmup", str(warmup), "--runs", str(runs),
                    "--export-json", f.name]
            for name, cmd in cmds.items():
                args += ["-n", name, " ".join(cmd)]
            subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
            data = json.load(open(f.name))
        return {r["command"]: r["median"] for r in data["results"]}
    return {name: statistics.median(time_loop(cmd, runs, warmup, env)) for name, cmd in cmds.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_run.py needs root (namespaces, cgroups, runc)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    conf = OUT / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "PYTHONPATH": str(REPO)}
    tar = rootfs_tar()
    store = prepare_soko(tar)
    cmds = {
        "soko": [sys.executable, "-m", "runtime", "run", "--root", str(store), "--rm", "--network", "none",
                 IMAGE, "true"],
        "soko-cli": [sys.executable, "-m", "soko", "--root", str(store), "run", "--rm", "--network", "none",
                     IMAGE, "true"],
        "podman": prepare_podman(tar, env),
        "runc": prepare_runc(tar),
    }
    for cmd in cmds.values():  # each works, and the first soko run unpacks the snapshot
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
    med = measure(cmds, args.runs, args.warmup, env)
    print(f"{'':10} {'median':>10}")
    for name in cmds:
        print(f"{name:10} {med[name] * 1000:8.1f} ms")
    print(f"podman / soko: {med['podman'] / med['soko']:.2f}x   soko / runc: {med['soko'] / med['runc']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
