"""soko push/pull beside skopeo copy, same image, fresh registries, one run.

    python bench/bench_pushpull.py [--rounds 5] [--layers 3] [--layer-mb 67] [--jobs 4]
                                   [--image built|imported|both] [--registry distribution|soko|both]
                                   [--no-drop-caches]

Two images of `--layers` layers (~200 MB of tar by default), made in a soko store:

- built:    gzip layers, as `soko build` and `soko pull` leave them; both tools send them as
            they are, so the row measures the transfer itself;
- imported: uncompressed layers, as `soko import`/`load`/`commit` leave them; both tools send
            them gzip-compressed (soko by default, as docker push does; skopeo because a
            docker:// destination asks for compressed layers). soko compresses a layer once
            and remembers the blob (storage/layer_variants.py): its first push in the store
            is timed apart ("first push"), the rounds after it reuse the blob.

The layers are hex words with a quarter of random bytes: gzip takes them to 60-65 % of
their size (a Debian root filesystem goes to about 40 %).

Each round, for each tool: a fresh registry, a push into it, a first pull right after the push (what was just written is in the page
cache, as on a registry host), then `echo 3 > /proc/sys/vm/drop_caches` and a second pull
(cold: everything from disk). The registry is CNCF distribution (`docker-registry serve`)
by default; `--registry soko` runs the installed `soko serve` instead (on its defaults: a
user hosting a private registry with soko), for both tools and for the floors alike, and
`both` runs every round against each, one after the other. Pulls go into an empty store (soko) or an empty OCI layout
(skopeo). soko is the installed command (bench/_install.py); skopeo reads an OCI layout
whose blobs are hard links to the soko store's files. Both tools run as commands, so
process start-up counts for both, and both fsync what they store. The tools alternate
which goes first; ratios are soko time / skopeo time, the median of per-round ratios
(lower is better for soko; the target is 0.5). Prints Markdown.
Work files go to $BENCH_TMP (default /var/tmp).
"""
from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from storage import compression as comp, mediatypes as mt  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.model import Descriptor, ImageConfig  # noqa: E402
from tests.client.client_helpers import Registry, start_distribution, start_soko_server  # noqa: E402

from _install import installed_soko  # noqa: E402


def layer_data(size: int, seed: int) -> bytes:
    """Text-like and binary-like pieces: gzip takes it to 60-65 %."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(2, 6)).hex().encode() for _ in range(3000)]
    out = bytearray()
    while len(out) < size:
        if rnd.random() < 0.25:
            out += rnd.randbytes(16384)
        else:
            out += b" ".join(rnd.choices(words, k=2000)) + b"\n"
    return bytes(out[:size])


def build_image(store: ImageStore, ref: str, layers: int, layer_mb: int, compression: str) -> str:
    descs, cfg = [], ImageConfig.new()
    for i in range(layers):
        data = layer_data(layer_mb * 1_000_000, i)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            ti = tarfile.TarInfo(f"data/layer{i}.bin")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        raw = buf.getvalue()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        if compression == comp.NONE:
            blob = raw
        else:
            out = io.BytesIO()
            w = comp.open_writer(out, compression)
            w.write(raw)
            w.close()
            blob = out.getvalue()
        digest = store.blobs.put_bytes(blob)
        store.record_layer(diff_id, digest, compression, len(blob))
        descs.append(Descriptor(mt.LAYER_BY_COMPRESSION["oci"][compression], digest, len(blob)))
        cfg.diff_ids.append(diff_id)
        cfg.history.append({"created_by": f"layer {i}"})
    m = store.commit(cfg, descs)
    store.tag(ref, m.digest)
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


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Timer:
    def __init__(self, env: dict):
        self.env = env
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def __call__(self, key: str, cmd: list[str], status: int = 0) -> None:
        os.sync()  # no dirty pages from the step before
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, env=self.env)
        dt = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != status:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr.decode()}")
        self.wall.setdefault(key, []).append(dt)
        self.cpu.setdefault(key, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


REGISTRIES = ("distribution", "soko")


def start_registry(which: str, root: Path, soko: list[str]) -> Registry:
    """A fresh registry of kind `which` on a free loopback port: distribution, or the installed
    `soko serve` on its defaults (as a user would run it; its own store under `root`)."""
    if which == "distribution":
        return start_distribution(root)
    return start_soko_server(root, command=soko + ["--root", str(root / "store"), "serve"])


def registry_blob_bytes(reg: Registry) -> int:
    if reg.kind == "distribution":
        top, name = reg.root / "data" / "docker" / "registry" / "v2" / "blobs", "data"
    else:
        top, name = reg.root / "data" / "blobs", None
    total = 0
    for dirpath, _, files in os.walk(top):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if name is None or f == name)
    return total


def floor_scripts(store: ImageStore, digest: str, host: str, repo: str, work: Path) -> dict[str, str]:
    """Shell scripts for what any client must do, with curl: "push" (POST+PUT of each blob, all
    in parallel, then the manifest PUT), "pull" (GET the manifest, then GET each blob into a
    file in parallel, SHA-256 it (openssl, SHA-NI) and fsync it) and "pull, no hash" (the same
    without the SHA-256: less than any pull may do, so below every client's time)."""
    m = store.manifest(digest)
    blobs = [m.config, *m.layers]
    base = f"http://{host}/v2/{repo}"
    mfile = work / "floor-manifest.json"
    mfile.write_bytes(m.raw)
    up = []
    for d in blobs:
        # (distribution answers with an absolute Location and a query, soko serve with a path)
        up.append(f"( loc=$(curl -sSf -X POST -o /dev/null -w '%header{{location}}' {base}/blobs/uploads/) && "
                  f"case $loc in /*) loc=http://{host}$loc;; esac && case $loc in *\\?*) sep='&';; *) sep='?';; "
                  f"esac && curl -sSf -o /dev/null -H 'Expect:' -H 'Content-Type: application/octet-stream' "
                  f"-T {store.blobs.path(d.digest)} \"$loc${{sep}}digest={d.digest}\" ) || echo fail >> $FAIL &")
    push = ("set -e; FAIL=$(mktemp); " + "\n".join(up) + "\nwait; test ! -s $FAIL; rm $FAIL\n"
            f"curl -sSf -o /dev/null -X PUT -H 'Content-Type: {m.media_type}' --data-binary @{mfile} "
            f"{base}/manifests/1\n")
    dest = work / "floor-pulled"

    def pull(hashed: bool) -> str:
        down = []
        for d in blobs:
            f = dest / d.digest[7:]
            check = f'test "$(openssl dgst -sha256 -r {f} | cut -c1-64)" = {d.digest[7:]} && ' if hashed else ""
            down.append(f"( curl -sSf -o {f} {base}/blobs/{d.digest} && {check}sync {f} ) || echo fail >> $FAIL &")
        return (f"set -e; mkdir {dest}; FAIL=$(mktemp)\n"
                f"curl -sSf -o {dest}/manifest.json -H 'Accept: {m.media_type}' {base}/manifests/1\n"
                + "\n".join(down) + f"\nwait; test ! -s $FAIL; rm $FAIL; sync {dest}\n")
    return {"push": push, "pull": pull(True), "pull, no hash": pull(False)}


def floor_round(which: str, kind: str, rnd: int, work: Path, soko: list[str], store: ImageStore, digest: str,
                t: Timer, cold: bool) -> None:
    """The floor's rows: a fresh registry, curl's push into it, its pull right after, and
    after drop_caches."""
    reg = start_registry(which, work / f"reg-{kind}-{rnd}-floor", soko)
    key = f"{which} {kind}"
    try:
        scripts = floor_scripts(store, digest, reg.host, f"bench/{kind}", work)
        t(f"{key} floor push", ["bash", "-c", scripts["push"]])
        for phase in ("pull", "cold pull") if cold else ("pull",):
            for what in ("pull", "pull, no hash"):
                shutil.rmtree(work / "floor-pulled", ignore_errors=True)
                if phase == "cold pull":
                    drop_caches()
                t(f"{key} floor {phase}" + what[4:], ["bash", "-c", scripts[what]])
        shutil.rmtree(work / "floor-pulled", ignore_errors=True)
    finally:
        reg.stop()
        shutil.rmtree(work / f"reg-{kind}-{rnd}-floor", ignore_errors=True)


def one_round(which: str, kind: str, rnd: int, work: Path, soko: list[str], layout: Path, t: Timer, jobs: int,
              cold: bool, sizes: dict[str, int]) -> None:
    order = ("soko", "skopeo") if rnd % 2 == 0 else ("skopeo", "soko")
    key = f"{which} {kind}"
    for tool in order:
        reg = start_registry(which, work / f"reg-{kind}-{rnd}-{tool}", soko)
        try:
            ref = f"{reg.host}/bench/{kind}:1"
            if tool == "soko":
                t(f"{key} soko push", soko + ["--root", str(work / f"store-{kind}"), "push", "-q", "-j", str(jobs),
                                           "bench/image:1", ref])
            else:
                t(f"{key} skopeo push", ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                         f"oci:{layout}:1", f"docker://{ref}"])
            sizes[tool] = registry_blob_bytes(reg)
            for phase in ("pull", "cold pull") if cold else ("pull",):
                if phase == "cold pull":
                    drop_caches()
                dest = work / f"pulled-{tool}"
                shutil.rmtree(dest, ignore_errors=True)
                if tool == "soko":
                    t(f"{key} soko {phase}", soko + ["--root", str(dest), "pull", "-q", "-j", str(jobs), ref])
                else:
                    t(f"{key} skopeo {phase}", ["skopeo", "copy", "-q", "--src-tls-verify=false",
                                                f"docker://{ref}", f"oci:{dest}:1"])
                shutil.rmtree(dest, ignore_errors=True)
        finally:
            reg.stop()
            shutil.rmtree(work / f"reg-{kind}-{rnd}-{tool}", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--layer-mb", type=int, default=67)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--image", choices=["built", "imported", "both"], default="both")
    ap.add_argument("--registry", choices=[*REGISTRIES, "both"], default="distribution",
                    help="what both tools push to and pull from: distribution, the installed soko serve, or each")
    ap.add_argument("--no-drop-caches", action="store_true")
    a = ap.parse_args()
    cold = not a.no_drop_caches and os.geteuid() == 0
    soko = [str(installed_soko())]
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="soko-bench-", dir=os.environ.get("BENCH_TMP", "/var/tmp")))
    env = {**os.environ, "DOCKER_CONFIG": str(work / "docker-config")}
    env.pop("PYTHONPATH", None)
    t = Timer(env)
    kinds = ["built", "imported"] if a.image == "both" else [a.image]
    regs = list(REGISTRIES) if a.registry == "both" else [a.registry]
    first_push: dict[str, float] = {}
    sizes: dict[tuple[str, str], dict[str, int]] = {}
    tar_mb = 0.0
    try:
        for kind in kinds:
            store = ImageStore(work / f"store-{kind}")
            digest = build_image(store, "bench/image:1", a.layers, a.layer_mb,
                                 comp.GZIP if kind == "built" else comp.NONE)
            tar_mb = a.layers * a.layer_mb
            layout = work / f"layout-{kind}"
            oci_layout(store, digest, layout)
            if kind == "imported":  # the store's first push compresses and remembers
                reg = start_distribution(work / "reg-first")
                try:
                    t0 = time.perf_counter()
                    subprocess.run(soko + ["--root", str(work / f"store-{kind}"), "push", "-q", "-j", str(a.jobs),
                                           "bench/image:1", f"{reg.host}/bench/first:1"], check=True, env=env,
                                   capture_output=True)
                    first_push[kind] = time.perf_counter() - t0
                finally:
                    reg.stop()
                    shutil.rmtree(work / "reg-first", ignore_errors=True)
            for rnd in range(a.rounds):
                for which in regs:
                    one_round(which, kind, rnd, work, soko, layout, t, a.jobs, cold, sizes.setdefault((which, kind), {}))
                    if kind == "built":
                        floor_round(which, kind, rnd, work, soko, store, digest, t, cold)
        print(f"Image: {a.layers} layers, {tar_mb:.0f} MB of tar; {a.rounds} rounds; {os.cpu_count()} CPUs; "
              f"soko -j {a.jobs}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after\n")
        print("| registry | image | operation | soko (median s) | skopeo (median s) | soko / skopeo (paired median; "
              "target <= 0.5) | soko CPU s | skopeo CPU s |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for which in regs:
            for kind in kinds:
                key = f"{which} {kind}"
                for op in ("push", "pull", "cold pull"):
                    s, k = t.wall.get(f"{key} soko {op}"), t.wall.get(f"{key} skopeo {op}")
                    if not s or not k:
                        continue
                    for what, row in ((op, f"{key} soko {op}"), (f"{op}: floor (curl, parallel)", f"{key} floor {op}"),
                                      (f"{op}, no hash: floor (curl, parallel)", f"{key} floor {op}, no hash")):
                        f = t.wall.get(row)
                        if not f:
                            continue
                        paired = statistics.median(x / y for x, y in zip(f, k))
                        print(f"| {which} | {kind} | {what} | {statistics.median(f):.2f} | {statistics.median(k):.2f} | "
                              f"{paired:.2f}x | {statistics.median(t.cpu[row]):.2f} | "
                              f"{statistics.median(t.cpu[f'{key} skopeo {op}']):.2f} |")
        for kind, secs in first_push.items():
            print(f"\n{kind}: soko's first push in this store (compresses and remembers): {secs:.2f} s")
        for (which, kind), by_tool in sizes.items():
            print(f"{which}, {kind}: bytes in the registry after a push: "
                  + ", ".join(f"{tool} {n / 1e6:.1f} MB" for tool, n in by_tool.items()))
        print("\nAll runs (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in t.wall.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
