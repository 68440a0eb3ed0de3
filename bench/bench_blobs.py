#!/usr/bin/env python3
"""One big blob through a fresh registry: push, the first GET right after the
push, and a cold GET after the page cache is dropped. soko's registry beside
CNCF distribution (Debian's `docker-registry`), in one run (needs root for
`/proc/sys/vm/drop_caches`).

Every round starts both registries afresh (empty roots under $BENCH_TMP,
default /var/tmp) and, for each in turn (the order alternates by round):

  push        curl: POST, then PUT of the blob streamed with `-T` (the source
              file lives in /dev/shm, which dropping caches does not empty)
  first GET   curl: GET of the blob to /dev/null right after the push
  cold GET    the same after `sync; echo 3 > /proc/sys/vm/drop_caches`
  push per CPU  MB pushed per CPU-second the server spent on the push (what
              a push costs it, which the machine's other load hardly moves)

Times are curl's own (`time_total`), so process start-up is not counted. The
headline per row is the median of the per-round ratios soko/distribution
(rates: higher is better for soko). `--baseline REV` adds soko's registry at
another git revision, for a before/after in the same run.
Usage: python bench/bench_blobs.py [--size-mb 256] [--rounds 5] [--baseline REV] [--json FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_registry import (Server, curl, distribution_server, extract_revision, soko_server,  # noqa: E402
                            start_upload)

ROWS = ("push_MBps", "first_get_MBps", "cold_get_MBps", "push_MB_per_cpu_s")


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_curl(*args: str) -> tuple[str, float]:
    """curl's answer line (`-w`) and its own transfer time."""
    out = curl("-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", *args)
    code, size, seconds = out.split()
    return f"{code} {size}", float(seconds)


def push(base: str, blob: Path, digest: str) -> float:
    t0 = time.perf_counter()
    loc = start_upload(base, "bench/blob")
    post = time.perf_counter() - t0
    sep = "&" if "?" in loc else "?"
    answer, seconds = timed_curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", str(blob),
                                 f"{loc}{sep}digest={digest}")
    if not answer.startswith("201 "):
        raise SystemExit(f"push to {base} answered {answer}")
    return post + seconds


def get(base: str, digest: str, size: int) -> float:
    answer, seconds = timed_curl(f"{base}/v2/bench/blob/blobs/{digest}")
    if answer != f"200 {size}":
        raise SystemExit(f"GET from {base}: {answer}")
    return seconds


def one_round(starters: list[tuple[str, object]], tmp: Path, blob: Path, digest: str, size: int,
              samples: dict[str, dict[str, list[float]]]) -> None:
    mb = size / 1e6
    for label, start in starters:
        root = tmp / "roots" / label
        server: Server = start(root)  # type: ignore[operator]
        try:
            drop_caches()  # nothing of the last round's registry left in memory or dirty
            cpu = server.cpu_seconds()
            pushed = push(server.base, blob, digest)
            cpu = max(server.cpu_seconds() - cpu, 0.01)
            first = get(server.base, digest, size)
            drop_caches()
            cold = get(server.base, digest, size)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
        for key, seconds in zip(ROWS, (pushed, first, cold, cpu)):
            samples.setdefault(label, {}).setdefault(key, []).append(mb / seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", metavar="REV", help="also run soko's registry at this git revision")
    ap.add_argument("--json", help="also write every sample here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: cold reads drop the page cache")
    if not shutil.which("curl"):
        raise SystemExit("curl is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-blobs-", dir=os.environ.get("BENCH_TMP", "/var/tmp")) as t, \
            tempfile.TemporaryDirectory(prefix="bench-blobs-", dir="/dev/shm") as shm:
        tmp = Path(t)
        blob = Path(shm) / "blob.bin"
        size = args.size_mb << 20
        h = hashlib.sha256()
        with open(blob, "wb") as f:
            for _ in range(args.size_mb):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        digest = "sha256:" + h.hexdigest()
        starters: list[tuple[str, object]] = [
            ("soko", lambda root: soko_server(root / "root")),
            ("distribution", lambda root: distribution_server(root / "root")),
        ]
        if args.baseline:
            tree = extract_revision(args.baseline, tmp / "baseline-src")
            label = f"soko@{args.baseline}"
            starters.append((label, lambda root: soko_server(root / "root", tree, label)))
        samples: dict[str, dict[str, list[float]]] = {}
        for r in range(args.rounds):
            order = starters if r % 2 == 0 else starters[::-1]
            one_round(order, tmp, blob, digest, size, samples)
            print(f"round {r + 1}: " + "; ".join(
                f"{label} " + " ".join(f"{samples[label][k][-1]:,.0f}" for k in ROWS) for label, _ in starters),
                flush=True)
    load = os.getloadavg()
    print(f"\n{args.rounds} rounds, {args.size_mb} MiB blob, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for other in [label for label, _ in starters if label != "soko"]:
        print()
        print(f"| row (higher is better) | soko median (best) | {other} median (best) | soko / {other}: paired median |")
        print("|---|---:|---:|---:|")
        for k in ROWS:
            s, d = samples["soko"][k], samples[other][k]
            paired = [a / b for a, b in zip(s, d)]
            print(f"| {k} | {statistics.median(s):,.0f} ({max(s):,.0f}) | {statistics.median(d):,.0f} ({max(d):,.0f}) "
                  f"| {statistics.median(paired):.2f}x |")
        for k in ROWS:
            print(f"per-round {k}: " + " ".join(f"{a / b:.2f}" for a, b in zip(samples["soko"][k], samples[other][k])))
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=2))


if __name__ == "__main__":
    main()
