"""Two soko commands paired on push and pull: this tree's installed command against another.

    python bench/bench_pushpull_ab.py OTHER_SOKO [--rounds 10] [--layers 3] [--layer-mb 67]
                                      [--registry distribution|soko]

OTHER_SOKO is another installed `soko` (say main's: `git archive main | tar -x -C /tmp/main &&
python -m venv /tmp/main-venv && /tmp/main-venv/bin/pip install /tmp/main`). The image is
bench_pushpull.py's built one (gzip layers). Each round, each command (alternating which goes
first): a fresh registry (CNCF distribution, or with `--registry soko` this tree's installed
`soko serve`, the same for both commands), `soko push` into it from the same store, then
`soko pull` into an empty store; then, for start-up and the small requests alone, the same push
again (the registry has every blob: HEADs and the manifest PUT) and a pull of a tag that is not
there into an empty store (the ping and one manifest GET, exit status 1). Prints medians, the paired median ratio (this tree / other) and CPU time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from storage import compression as comp  # noqa: E402
from storage.images import ImageStore  # noqa: E402

from _install import installed_soko  # noqa: E402
from bench_pushpull import REGISTRIES, Timer, build_image, start_registry  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("other")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--layer-mb", type=int, default=67)
    ap.add_argument("--registry", choices=REGISTRIES, default="distribution")
    a = ap.parse_args()
    tools = {"other": a.other, "this": str(installed_soko())}
    work = Path(tempfile.mkdtemp(prefix="soko-ab-", dir=os.environ.get("BENCH_TMP", "/var/tmp")))
    env = {**os.environ, "DOCKER_CONFIG": str(work / "docker-config")}
    env.pop("PYTHONPATH", None)
    t = Timer(env)
    try:
        store = work / "store"
        build_image(ImageStore(store), "bench/image:1", a.layers, a.layer_mb, comp.GZIP)
        load0 = os.getloadavg()[0]
        for rnd in range(a.rounds):
            for name in ("other", "this") if rnd % 2 == 0 else ("this", "other"):
                reg = start_registry(a.registry, work / f"reg-{rnd}-{name}", [tools["this"]])
                try:
                    ref = f"{reg.host}/bench/ab:1"
                    t(f"{name} push", [tools[name], "--root", str(store), "push", "-q", "bench/image:1", ref])
                    t(f"{name} pull", [tools[name], "--root", str(work / "pulled"), "pull", "-q", ref])
                    shutil.rmtree(work / "pulled", ignore_errors=True)
                    t(f"{name} push again", [tools[name], "--root", str(store), "push", "-q", "bench/image:1", ref])
                    t(f"{name} pull of a missing tag", [tools[name], "--root", str(work / "pulled"), "pull", "-q",
                                                        f"{reg.host}/bench/ab:missing"], status=1)
                    shutil.rmtree(work / "pulled", ignore_errors=True)
                finally:
                    reg.stop()
                    shutil.rmtree(work / f"reg-{rnd}-{name}", ignore_errors=True)
        print(f"{a.rounds} rounds against {a.registry}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after\n")
        print("| operation | other (median s) | this (median s) | this / other (paired median) | other CPU s | this CPU s |")
        print("|---|---:|---:|---:|---:|---:|")
        for op in ("push", "pull", "push again", "pull of a missing tag"):
            o, s = t.wall[f"other {op}"], t.wall[f"this {op}"]
            print(f"| {op} | {statistics.median(o):.2f} | {statistics.median(s):.2f} | "
                  f"{statistics.median(x / y for x, y in zip(s, o)):.2f}x | "
                  f"{statistics.median(t.cpu[f'other {op}']):.3f} | {statistics.median(t.cpu[f'this {op}']):.3f} |")
        print("\nAll runs (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in t.wall.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
