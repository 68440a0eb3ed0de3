#!/usr/bin/env python3
"""soko's registry scaled out, beside CNCF distribution, on the same S3, in one run.

Three stacks, each behind its own HAProxy (round-robin, tests/haproxy.py) on
loopback, on one radosgw (tests/s3server.py, a bucket each):

  soko-1        one `soko serve` replica, S3 blobs + PostgreSQL metadata
  soko-N        N replicas (default 3) on the same kind of bucket and database
  distribution  Debian's docker-registry (distribution 2.8) with its own S3
                driver (redirects off: it proxies blobs, as soko does here)

and the rows of bench/bench_registry.py: push MB/s (curl, one streamed PUT),
pull MB/s (curl GET), manifest GETs/s (hey, 50 connections), small pushes/s
(100 concurrent image pushes: 64 KiB layer + config + manifest), and MB pushed
per CPU-second of the registry processes. Every round measures the stacks back
to back; the ratios are medians of the per-round ratios.

Usage: python bench/bench_replicas.py [--size-mb 128] [--rounds 3]
[--requests 10000] [--replicas 3] [--json FILE]
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench_registry as br  # noqa: E402

from tests.haproxy import HAProxy  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402
from tests.s3server import RadosGW  # noqa: E402

DISTRIBUTION_S3 = """version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: {access}
    secretkey: {secret}
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    rootdirectory: /distribution
    secure: false
    v4auth: true
    chunksize: 8388608
  redirect:
    disable: true
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: bench-secret
"""


@dataclass
class Stack:
    """Registry processes behind one HAProxy: what bench_registry's rows measure."""
    label: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    lb: HAProxy | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.lb.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the registry processes (not the balancer's)."""
        return sum(br.cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for p in self.procs:
            br.stop_process(p)


def soko_stack(label: str, count: int, work: Path, storage: str, metadata: str, env: dict) -> Stack:
    s = Stack(label)
    ports = []
    for i in range(count):
        root = work / label / f"root{i}"
        root.mkdir(parents=True)
        p = subprocess.Popen([sys.executable, "-m", "registry.server", "--addr", "127.0.0.1:0", "--root", str(root),
                              "--storage", storage, "--metadata", metadata],
                             stdout=subprocess.PIPE, stderr=open(work / f"{label}-{i}.log", "wb"), cwd=REPO,
                             env={**os.environ, **env, "PYTHONPATH": str(REPO)})
        s.procs.append(p)
        line = p.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            s.stop()
            raise SystemExit(f"{label} replica {i} did not start: {line!r}")
        ports.append(int(line.rsplit(":", 1)[1]))
    s.lb = HAProxy([("127.0.0.1", port) for port in ports], sticky=False, workdir=work / f"{label}-haproxy").start()
    return s


def distribution_stack(work: Path, gw: RadosGW, storage: str) -> Stack:
    if not shutil.which("docker-registry"):
        raise SystemExit("docker-registry (Debian's distribution 2.8) is not installed")
    u = urlsplit(storage)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    port = br.free_port()
    cfg = work / "distribution.yml"
    cfg.write_text(DISTRIBUTION_S3.format(access=gw.access_key, secret=gw.secret_key, region=q["region"],
                                          endpoint=q["endpoint"], bucket=u.netloc, port=port))
    # the machine's AWS_CA_BUNDLE makes distribution's AWS SDK panic (a custom CA on its own transport);
    # the endpoint is plain http anyway
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    p = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=open(work / "distribution.log", "wb"), env=env)
    s = Stack("distribution", [p])
    br.wait_ready(port, p)
    s.lb = HAProxy([("127.0.0.1", port)], sticky=False, workdir=work / "distribution-haproxy").start()
    return s


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def watch_cpu(stacks: list[Stack], seen: dict[str, list[tuple[float, float]]], measured: int) -> None:
    """Make bench_registry's manifest runs also note, per stack, the share of the
    machine's CPU that was busy and the cores its registry processes used: whether
    more replicas had any CPU left to use."""
    by_base = {s.base: s for s in stacks}
    measure = br.manifest_rps

    def manifest_rps(base: str, repo: str, requests: int) -> float:
        s = by_base.get(base)
        b0, t0, c0, w0 = *machine_busy(), s.cpu_seconds() if s else 0.0, time.monotonic()
        rps = measure(base, repo, requests)
        if s is not None and requests == measured:  # not the warm-up
            b1, t1 = machine_busy()
            seen.setdefault(s.label, []).append(((b1 - b0) / max(t1 - t0, 1),
                                                 (s.cpu_seconds() - c0) / (time.monotonic() - w0)))
        return rps
    br.manifest_rps = manifest_rps


def ratio_table(results: dict, a: str, b: str) -> list[str]:
    rows = [f"| metric | {a} / {b}: paired median | per round |", "|---|---:|---|"]
    for k in results[a]:
        pairs = [x / y for x, y in zip(results[a][k], results[b][k])]
        rows.append(f"| {k} | {statistics.median(pairs):.2f}x | {' '.join(f'{p:.2f}' for p in pairs)} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--json", help="also write every sample here")
    args = ap.parse_args()
    br.need_tools("curl", "hey")
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-", dir=os.environ.get("BENCH_TMP", "/var/tmp")))
    gw = pg = None
    stacks: list[Stack] = []
    try:
        t0 = time.monotonic()
        gw = RadosGW(work / "radosgw").start()
        pg = PostgresServer()
        print(f"radosgw and PostgreSQL up in {time.monotonic() - t0:.1f} s", flush=True)
        blob = work / "blob.bin"
        digest, size = br.random_blob(blob, args.size_mb), args.size_mb * 1024 * 1024
        env = gw.env()
        stacks.append(soko_stack("soko-1", 1, work, gw.bucket(), pg.database(), env))
        stacks.append(soko_stack(f"soko-{args.replicas}", args.replicas, work, gw.bucket(), pg.database(), env))
        stacks.append(distribution_stack(work, gw, gw.bucket()))
        cpu: dict[str, list[tuple[float, float]]] = {}
        watch_cpu(stacks, cpu, args.requests)
        results = br.bench_all(stacks, blob, digest, size, args.rounds, args.requests)
    finally:
        for s in stacks:
            s.stop()
        if pg is not None:
            pg.stop()
        if gw is not None:
            gw.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)

    print()
    labels = list(results)
    print("| metric (higher is better) | " + " | ".join(f"{lb} median (best)" for lb in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for k in results[labels[0]]:
        print(f"| {k} | " + " | ".join(f"{statistics.median(results[lb][k]):,.1f} ({max(results[lb][k]):,.1f})"
                                      for lb in labels) + " |")
    print()
    print("| during manifest GETs | machine CPU busy (median) | cores the registry processes used (median) |")
    print("|---|---:|---:|")
    for label, v in cpu.items():
        print(f"| {label} | {statistics.median(b for b, _ in v):.0%} | {statistics.median(c for _, c in v):.2f} |")
    for a, b in ((labels[1], labels[0]), (labels[0], "distribution")):
        print()
        print("\n".join(ratio_table(results, a, b)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
