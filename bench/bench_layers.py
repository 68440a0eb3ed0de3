"""Layer write/apply throughput against the tar pipelines, on one machine.

    python bench/bench_layers.py [--repeat N] [--files 10000] [--mb 500] [--only zstd] [--baseline REV]

Makes (once, cached under bench/out/) a deterministic tree of ~10,000 files
totalling ~500 MiB: mostly small files, some medium, a few large ones; about
three quarters word-like text and one quarter random bytes (gzip -6 makes it
about 0.65 of its size, zstd -3 about 0.5). Then measures, in MB/s of uncompressed tar stream:

- soko write gzip / zstd   (tree -> blob in a BlobStore, both digests)
- soko apply gzip / zstd   (blob -> fresh directory, both digests verified),
  onto the disk under bench/out and onto tmpfs (/dev/shm)
- tar -cf - . | gzip       and  tar -cf - . | zstd -T0  (and | pigz, if installed)
- gzip -dc | tar -x        and  zstd -dc | tar -x   (apply counterparts)
- sha256 of the uncompressed tar (the ceiling: one pass over the bytes)
- with `--baseline REV`: soko's write and apply at git revision REV too, in the same turns (a
  before/after in one run); every soko write and apply then runs in a child process of its
  own, timed inside it (REV applies the blob this tree wrote)

All inputs are in the page cache (the tree, or the blobs to apply, are read again before
every run, untimed: other sessions on a shared machine drop caches).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from storage.blobs import BlobStore  # noqa: E402
from storage.layers import apply_blob, write_layer  # noqa: E402

OUT = HERE / "out"
TREE_VERSION = 1
MTIME = 1_700_000_000


def make_tree(root: Path, files: int, total_mb: int, seed: int = 7) -> None:
    """Deterministic content: the same arguments give the same bytes."""
    r = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(r.choices(letters, k=r.randint(2, 10))) for _ in range(8000)]
    text = " ".join(r.choices(words, k=5_000_000)).encode()[: 32 << 20]
    n_large = max(1, files // 125)
    n_medium = files // 5
    n_small = files - n_large - n_medium
    # Sizes first (log-uniform per class), then scaled to the requested total.
    sizes = ([int(2 ** r.uniform(7, 14)) for _ in range(n_small)]
             + [int(2 ** r.uniform(14, 19)) for _ in range(n_medium)]
             + [int(2 ** r.uniform(20, 22)) for _ in range(n_large)])
    scale = (total_mb << 20) / sum(sizes)
    sizes = [max(0, int(s * scale)) for s in sizes]
    r.shuffle(sizes)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = [Path(f"d{i:02d}") / f"s{j}" for i in range(60) for j in range(r.randint(1, 4))]
    for d in dirs:
        (tmp / d).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = tmp / r.choice(dirs) / f"f{i:05d}.dat"
        parts = []
        left = size
        while left > 0:
            n = min(left, r.randint(1024, 65536))
            if r.random() < 0.75:
                off = r.randrange(0, len(text) - n)
                parts.append(text[off:off + n])
            else:
                parts.append(r.randbytes(n))
            left -= n
        path.write_bytes(b"".join(parts))
        paths.append(path)
    for i in range(files // 100):  # some symlinks and hard links, as real trees have
        src = r.choice(paths)
        os.symlink(os.path.relpath(src, tmp / dirs[i % len(dirs)]),
                   tmp / dirs[i % len(dirs)] / f"link{i}")
        os.link(r.choice(paths), tmp / dirs[-1 - i % len(dirs)] / f"hard{i}")
    for dirpath, dirnames, filenames in os.walk(tmp, topdown=False):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
        os.utime(dirpath, (MTIME, MTIME))
    shutil.rmtree(root, ignore_errors=True)
    os.rename(tmp, root)


def tree(files: int, total_mb: int) -> Path:
    root = OUT / f"tree-v{TREE_VERSION}-{files}-{total_mb}"
    done = root.with_name(root.name + ".done")
    if not done.exists():
        print(f"making {root} ...", flush=True)
        make_tree(root, files, total_mb)
        done.touch()
    return root


def warm(root: Path) -> int:
    """Read everything once (page cache); returns the content bytes."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        total += len(chunk)
    return total


def measure(fn) -> tuple[float, float]:
    """Wall and CPU seconds (all threads and child processes) of one run,
    after a sync, so that one run's dirty pages do not slow down the next.
    A `fn` that returns (wall, cpu) timed them itself (a child's start-up left out)."""
    os.sync()
    c0 = os.times()
    t = time.perf_counter()
    own = fn()
    wall = time.perf_counter() - t
    c1 = os.times()
    return own if isinstance(own, tuple) else (wall, sum(c1[:4]) - sum(c0[:4]))


# One write_layer of the soko source tree argv[1] (this one or a baseline's), timed in the child.
WRITE_ONE = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from storage.blobs import BlobStore
from storage.layers import write_layer
store = BlobStore(sys.argv[3])
c0 = os.times(); t = time.perf_counter()
info = write_layer(sys.argv[2], store, compression=sys.argv[4])
wall = time.perf_counter() - t; c1 = os.times()
print(json.dumps({"wall": wall, "cpu": sum(c1[:4]) - sum(c0[:4]), "size": info.size,
                  "digest": info.digest, "diff_id": info.diff_id}))
"""


def write_in_child(src: Path, root: Path, store: Path, compression: str) -> tuple[tuple[float, float], dict]:
    out = subprocess.run([sys.executable, "-c", WRITE_ONE, str(src), str(root), str(store), compression],
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    return (got["wall"], got["cpu"]), got


# One apply_blob with the soko source tree argv[1], timed in the child.
APPLY_ONE = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from storage.blobs import BlobStore
from storage.layers import apply_blob
store = BlobStore(sys.argv[2])
c0 = os.times(); t = time.perf_counter()
apply_blob(store, sys.argv[3], sys.argv[5], diff_id=sys.argv[4])
wall = time.perf_counter() - t; c1 = os.times()
print(json.dumps({"wall": wall, "cpu": sum(c1[:4]) - sum(c0[:4])}))
"""


def apply_in_child(src: Path, store: Path, digest: str, diff_id: str, dest: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", APPLY_ONE, str(src), str(store), digest, diff_id, str(dest)],
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    return got["wall"], got["cpu"]


def read_through(*paths: Path) -> None:
    """Read files into the page cache again, untimed: on a shared machine another session's
    `echo 3 > /proc/sys/vm/drop_caches` would otherwise make a run read the disk."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


def interleaved(cases: list[tuple[str, object]], repeat: int,
                before=None) -> dict[str, tuple[float, float]]:
    """Best (wall, cpu) per case, the cases taking turns run by run, so a
    noisy moment on a shared machine does not land on one side only.
    `before`: called (untimed) before every run, to put the inputs back in the page cache."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, fn in cases:
            if before is not None:
                before()
            got = measure(fn)
            best[name] = min(best.get(name, got), got)
    return best


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the best is shown")
    ap.add_argument("--only", choices=("gzip", "zstd"), help="the rows of one compression only")
    ap.add_argument("--baseline", metavar="REV", help="also time soko's write and apply at this git revision")
    args = ap.parse_args()
    codecs = (args.only,) if args.only else ("gzip", "zstd")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    root = tree(args.files, args.mb)
    content = warm(root)
    work = OUT / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = BlobStore(work / "store")

    plain = write_layer(root, store, compression="none")
    tar_bytes = plain.uncompressed_size
    mb = tar_bytes / 1e6
    print(f"tree: {root.name}: {content / 1e6:.0f} MB of file content, tar stream {mb:.0f} MB, "
          f"{os.cpu_count()} CPUs")

    rows: list[tuple[str, float, float, str]] = []

    def add(results: dict[str, tuple[float, float]], notes: dict[str, str] | None = None) -> None:
        for name, (seconds, cpu) in results.items():
            note = (notes or {}).get(name, "")
            rows.append((name, seconds, cpu, note))
            print(f"  {name:<30} {mb / seconds:8.1f} MB/s  {seconds:6.2f} s  cpu {cpu:6.2f} s"
                  f"  {note}", flush=True)

    infos = {}
    blobs = {"gzip": work / "t.tar.gz", "zstd": work / "t.tar.zst", "pigz": work / "t.pigz.gz"}
    tools = {"gzip": "gzip", "zstd": "zstd -q -T0", "pigz": "pigz"}
    baseline_src = None
    if args.baseline:
        sys.path.insert(0, str(HERE))
        from bench_registry import extract_revision
        baseline_src = extract_revision(args.baseline, work / "baseline-src")
    baseline_sizes: dict[str, int] = {}
    for c in codecs:
        def w(c=c):
            if baseline_src is None:
                infos[c] = write_layer(root, store, compression=c)
                return None
            times, got = write_in_child(HERE.parent, root, store.root, c)
            infos[c] = SimpleNamespace(**got)  # what the apply rows use: digest, diff_id, size
            return times

        def b(c=c):
            times, got = write_in_child(baseline_src, root, work / "baseline-store", c)
            baseline_sizes[c] = got["size"]
            return times

        def t(c=c):
            sh(f"tar -C {root} -cf - . | {tools[c]} > {blobs[c]}")
        cases = [(f"soko write {c}", w), (f"tar -cf - . | {'zstd -T0' if c == 'zstd' else c}", t)]
        if baseline_src is not None:
            cases.append((f"soko@{args.baseline} write {c}", b))
        if c == "gzip" and shutil.which("pigz"):  # the parallel gzip, for reference
            cases.append(("tar -cf - . | pigz",
                          lambda: sh(f"tar -C {root} -cf - . | pigz > {blobs['pigz']}")))
        results = interleaved(cases, args.repeat, before=lambda: warm(root))
        notes = {cases[0][0]: f"{infos[c].size / tar_bytes:.3f} of tar",
                 cases[1][0]: f"{blobs[c].stat().st_size / tar_bytes:.3f} of tar"}
        for name, _ in cases[2:]:
            size = blobs["pigz"].stat().st_size if "pigz" in name else baseline_sizes[c]
            notes[name] = f"{size / tar_bytes:.3f} of tar"
        add(results, notes)

    # Applying: onto the disk the tree lives on (ext4 here) and onto tmpfs.
    # Every run gets a fresh directory. On the disk nothing is deleted before
    # the last run: on ext4 without a journal, creating files where thousands
    # were just deleted costs ~0.5 ms of kernel CPU each (BRIEF, bench/README.md),
    # which swamped the zstd rows when the gzip rows' output was cleared first.
    places = [("disk", work / "apply")]
    if Path("/dev/shm").is_dir():
        places.append(("tmpfs", Path("/dev/shm") / f"soko-bench-{os.getpid()}"))
    for place, base in places:
        runs = iter(range(1_000_000))

        def fresh(base=base, runs=runs) -> Path:
            return base / f"run{next(runs)}"
        for c in codecs:
            def a(c=c, fresh=fresh, src=HERE.parent):
                if baseline_src is None:
                    apply_blob(store, infos[c].digest, fresh(), diff_id=infos[c].diff_id)
                    return None
                return apply_in_child(src, store.root, infos[c].digest, infos[c].diff_id, fresh())

            def x(c=c, fresh=fresh):
                dest = fresh()
                dest.mkdir(parents=True)
                sh(f"{c} -dc {blobs[c]} | tar -C {dest} -xf -")
            cases = [(f"soko apply {c} ({place})", a), (f"{c} -dc | tar -x ({place})", x)]
            if baseline_src is not None:  # the same blob (soko's, as written above), applied by REV
                cases.append((f"soko@{args.baseline} apply {c} ({place})",
                              lambda a=a, src=baseline_src: a(src=src)))
            add(interleaved(cases, args.repeat,
                            before=lambda c=c: read_through(store.path(infos[c].digest), blobs[c])))
            if place == "tmpfs":  # memory; tmpfs deletes cost the next files nothing
                clear(base)

    raw = store.path(plain.digest)

    def hash_only() -> None:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(raw, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    add(interleaved([("sha256 of the tar (ceiling)", hash_only)], args.repeat,
                    before=lambda: read_through(raw)))

    base = {r[0]: r[1] for r in rows}
    print()
    print(f"| {'what':<28} | {'MB/s':>6} | {'wall s':>6} | {'CPU s':>6} | vs tar pipeline | note |")
    print(f"|{'-' * 30}|{'-' * 8}|{'-' * 8}|{'-' * 8}|-----------------|------|")
    ref = {"soko write gzip": "tar -cf - . | gzip", "soko write zstd": "tar -cf - . | zstd -T0"}
    if args.baseline:
        for c in codecs:
            ref[f"soko@{args.baseline} write {c}"] = ref[f"soko write {c}"]
    for place, _ in places:
        for c in codecs:
            ref[f"soko apply {c} ({place})"] = f"{c} -dc | tar -x ({place})"
            if args.baseline:
                ref[f"soko@{args.baseline} apply {c} ({place})"] = ref[f"soko apply {c} ({place})"]
    for name, seconds, cpu, note in rows:
        vs = f"{base[ref[name]] / seconds:.2f}x" if name in ref else ""
        print(f"| {name:<28} | {mb / seconds:6.1f} | {seconds:6.2f} | {cpu:6.2f} | {vs:>15} | {note} |")
    if args.baseline:
        print(f"\nsoko / soko@{args.baseline}, writing: " + ", ".join(
            f"{c} {base[f'soko@{args.baseline} write {c}'] / base[f'soko write {c}']:.2f}x" for c in codecs))
        for place, _ in places:
            print(f"soko / soko@{args.baseline}, applying ({place}): " + ", ".join(
                f"{c} {base[f'soko@{args.baseline} apply {c} ({place})'] / base[f'soko apply {c} ({place})']:.2f}x"
                for c in codecs))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
