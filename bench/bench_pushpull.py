"""soko push/pull beside skopeo copy, same image, same registry, one run.

    /work/main/.venv/bin/python bench/bench_pushpull.py [--runs 5] [--layers 8] [--layer-mb 50]

The image: `--layers` gzip layers of random-ish data (`--layer-mb` each,
~400 MB in all by default). The registry: CNCF distribution
(`docker-registry serve`) on loopback, started afresh for every push so
nothing is skipped as already present. Both tools run as commands
(`python -m registry.client ...` and `skopeo copy ...`), so process
start-up counts for both. skopeo reads and writes an OCI layout directory
holding the very same blob files. Each round runs both tools back to back
(order alternating, `sync` before each run); the ratio reported is the
median of the per-round ratios, which cancels load drifting over the run.
Prints Markdown. Work files go to $BENCH_TMP (default: the system temp dir).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from storage import mediatypes as mt  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.model import Descriptor, ImageConfig  # noqa: E402
from tests.client.client_helpers import start_distribution  # noqa: E402

PY = sys.executable


def random_ish(size: int, seed: int) -> bytes:
    """Incompressible-ish bytes, fast: random blocks with some repetition, as real binaries have."""
    rnd = random.Random(seed)
    block = 1 << 16
    pool = [rnd.randbytes(block) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        out += pool[rnd.randrange(len(pool))] if rnd.random() < 0.2 else rnd.randbytes(block)
    return bytes(out[:size])


def build_image(store: ImageStore, layers: int, layer_mb: int) -> str:
    descs, cfg = [], ImageConfig.new()
    for i in range(layers):
        data = random_ish(layer_mb * 1024 * 1024, i)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            ti = tarfile.TarInfo(f"data/layer{i}.bin")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        raw = buf.getvalue()
        gz = gzip.compress(raw, compresslevel=1, mtime=0)
        digest = store.blobs.put_bytes(gz)
        descs.append(Descriptor(mt.OCI_LAYER_GZIP, digest, len(gz)))
        cfg.diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        cfg.history.append({"created_by": f"layer {i}"})
    m = store.commit(cfg, descs)
    store.tag("bench/image:1", m.digest)
    return m.digest


def oci_layout(store: ImageStore, digest: str, dest: Path) -> None:
    """An OCI layout of the image whose blob files are hard links to the store's."""
    m = store.manifest(digest)
    (dest / "blobs" / "sha256").mkdir(parents=True)
    for d in [m.config, *m.layers]:
        os.link(store.blobs.path(d.digest), dest / "blobs" / "sha256" / d.digest[7:])
    os.link(store.blobs.path(m.digest), dest / "blobs" / "sha256" / m.digest[7:])
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict | None = None, label: str | None = None) -> float:
    """Wall time of `cmd`; its CPU time (user + system) goes to CPU[label]."""
    os.sync()  # start each run with no dirty pages from the one before
    time.sleep(0.2)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr.decode()}")
    if label:
        CPU.setdefault(label, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--layer-mb", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="soko-bench-", dir=os.environ.get("BENCH_TMP")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_CONFIG": str(work / "docker-config")}
    try:
        store = ImageStore(work / "store")
        digest = build_image(store, a.layers, a.layer_mb)
        total = sum(d.size for d in store.manifest(digest).layers)
        layout = work / "layout"
        oci_layout(store, digest, layout)
        soko = [PY, "-m", "registry.client", "-q"]
        times: dict[str, list[float]] = {k: [] for k in ("soko push", "skopeo push", "soko pull", "skopeo pull")}
        for run in range(a.runs):
            # push: a fresh registry for each tool, so everything is uploaded
            for tool in (("soko", "skopeo") if run % 2 == 0 else ("skopeo", "soko")):
                reg = start_distribution(work / f"reg-{run}-{tool}")
                try:
                    ref = f"{reg.host}/bench/image:1"
                    if tool == "soko":
                        times["soko push"].append(timed(soko + ["--root", str(work / "store"), "push",
                                                                "-j", str(a.jobs), "bench/image:1", ref], env,
                                                        "soko push"))
                    else:
                        times["skopeo push"].append(timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                                           f"oci:{layout}:1", f"docker://{ref}"], env,
                                                          "skopeo push"))
                finally:
                    reg.stop()
                    shutil.rmtree(work / f"reg-{run}-{tool}", ignore_errors=True)
        reg = start_distribution(work / "reg-pull")
        try:
            ref = f"{reg.host}/bench/image:1"
            timed(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{ref}"], env)
            for run in range(a.runs):
                for tool in (("soko", "skopeo") if run % 2 == 0 else ("skopeo", "soko")):
                    dest = work / f"pulled-{tool}"
                    shutil.rmtree(dest, ignore_errors=True)
                    if tool == "soko":
                        times["soko pull"].append(timed(soko + ["--root", str(dest), "pull", "-j", str(a.jobs),
                                                                ref], env, "soko pull"))
                    else:
                        times["skopeo pull"].append(timed(["skopeo", "copy", "-q", "--src-tls-verify=false",
                                                           f"docker://{ref}", f"oci:{dest}:1"], env,
                                                          "skopeo pull"))
                    shutil.rmtree(dest, ignore_errors=True)
        finally:
            reg.stop()
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu = {k: statistics.median(v) for k, v in CPU.items()}
        print(f"Image: {a.layers} layers, {total / 1e6:.0f} MB compressed; {a.runs} runs each; "
              f"{os.cpu_count()} CPUs; soko -j {a.jobs}; load average before: {load0:.1f}\n")
        print("| operation | soko wall (median s) | skopeo wall (median s) | soko time / skopeo time "
              "(paired median; target <= 0.7) | soko CPU (s) | skopeo CPU (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for op in ("push", "pull"):
            s, k = med[f"soko {op}"], med[f"skopeo {op}"]
            # each round ran both tools back to back: the paired ratio cancels load that drifts
            paired = statistics.median(x / y for x, y in zip(times[f"soko {op}"], times[f"skopeo {op}"]))
            print(f"| {op} | {s:.2f} | {k:.2f} | {paired:.2f}x | {cpu[f'soko {op}']:.2f} | "
                  f"{cpu[f'skopeo {op}']:.2f} |")
        print("\nAll runs (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in times.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
