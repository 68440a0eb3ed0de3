"""soko build beside `buildah bud --layers --isolation chroot`, same Dockerfiles, one run.

    python bench/bench_build.py [--repeat N] [--files 5000] [--only NAME]

Scenarios, for each Dockerfile, timed as whole commands (`python -m builder
build` for soko until `soko build` exists, `buildah bud` for buildah):

- cold: an empty cache (a fresh store holding only the base image, unpacked;
  buildah likewise, its base loaded with skopeo before the clock starts);
- rebuild: the same build again, nothing changed;
- touch: one file's mtime changed in the 5,000-file context (content equal);
- edit: one file's content changed in the 5,000-file context.

Dockerfiles: `basic` and `multistage` from fixtures/dockerfiles, and `ctx5000`,
generated here: a 5,000-file source tree copied after a dependency step,
the usual shape of an application image. Base: the fixtures' busybox rootfs.
Prints medians and the median of paired speedups (buildah time / soko time, each
round's two builds run back to back) as a markdown table.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "fixtures"))

from tests.builder.buildah import Buildah  # noqa: E402

CTX5000_DOCKERFILE = """\
ARG BASE=busybox
FROM $BASE
WORKDIR /app
COPY requirements.txt .
RUN mkdir -p /opt/deps && while read p; do echo "$p" > "/opt/deps/$p"; done < requirements.txt
COPY src/ ./src/
RUN find src -type f | wc -l > /app/count
CMD ["cat", "/app/count"]
"""


def make_ctx5000(root: Path, files: int, seed: int = 5) -> Path:
    r = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(CTX5000_DOCKERFILE)
    (root / "requirements.txt").write_text("".join(f"pkg{i}\n" for i in range(20)))
    per_dir = 100
    for i in range(files):
        d = root / "src" / f"mod{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir()
        size = int(2 ** r.uniform(7, 13))
        (d / f"file{i:05d}.py").write_bytes(r.randbytes(size // 2).hex()[:size].encode())
    return root


class Soko:
    def __init__(self, base: Path, busybox: Path):
        self.base = base
        self.busybox = busybox
        self.root = base / "store"

    def fresh(self) -> None:
        from storage.images import ImageStore
        from storage.rootfs_import import import_rootfs

        shutil.rmtree(self.root, ignore_errors=True)
        store = ImageStore(self.root)
        store.tag("busybox:latest", import_rootfs(store, self.busybox, {"Cmd": ["sh"]}).digest)
        # the base unpacked, as buildah's storage holds it after skopeo copy: both start from a local base
        from runtime.snapshots import Snapshots

        Snapshots(store).prepare_image(store.resolve("busybox"))
        store.db.close()

    def build(self, ctx: Path, tag: str) -> None:
        p = subprocess.run([sys.executable, "-m", "builder", "--root", str(self.root), "build", "-q", "-t", tag,
                            str(ctx)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if p.returncode != 0:
            raise SystemExit(f"soko build failed: {p.stderr[-2000:]}")


class BuildahRunner:
    def __init__(self, base: Path, archive: Path):
        self.base = base
        self.archive = archive
        self.bh = Buildah(base / "buildah")

    def fresh(self) -> None:
        self.bh.cleanup()
        self.bh = Buildah(self.base / "buildah")
        self.bh.load_oci_archive(self.archive, "localhost/busybox:latest")

    def build(self, ctx: Path, tag: str) -> None:
        self.bh.bud(ctx, f"localhost/{tag}", {"BASE": "localhost/busybox:latest"}, ["--quiet"])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (buildah, chown, overlayfs)")
    import recipes
    from storage.archives import save
    from storage.images import ImageStore
    from storage.rootfs_import import import_rootfs

    busybox = recipes.busybox_rootfs()
    work = Path(tempfile.mkdtemp(prefix="bench-build-", dir="/var/tmp"))
    try:
        seed = ImageStore(work / "seed")
        seed.tag("busybox:latest", import_rootfs(seed, busybox, {"Cmd": ["sh"]}).digest)
        archive = work / "busybox-oci.tar"
        save(seed, ["busybox"], archive, fmt="oci")
        contexts = {}
        for name in ("basic", "multistage"):
            contexts[name] = work / name
            shutil.copytree(REPO / "fixtures" / "dockerfiles" / name, contexts[name])
        contexts["ctx5000"] = make_ctx5000(work / "ctx5000", args.files)
        if args.only:
            contexts = {k: v for k, v in contexts.items() if k == args.only}
        tools = {"soko": Soko(work / "soko", busybox), "buildah": BuildahRunner(work / "bh", archive)}
        results: dict[tuple[str, str, str], list[float]] = {}
        victim = contexts.get("ctx5000", Path()) / "src" / "mod017" / "file01742.py"
        for i in range(args.repeat):
            for name, ctx in contexts.items():
                # both tools back to back on the same Dockerfile: the pair sees the same load
                for tool_name, tool in tools.items():
                    def measure(scenario: str) -> None:
                        results.setdefault((name, scenario, tool_name), []).append(
                            timed(lambda: tool.build(ctx, f"bench-{name}")))

                    tool.fresh()
                    measure("cold")
                    measure("rebuild")
                    if name == "ctx5000":
                        os.utime(victim, None)
                        measure("touch")
                        with open(victim, "a") as f:
                            f.write(f"# edit {i} {tool_name}\n")
                        measure("edit")
            print(f"round {i + 1}/{args.repeat} done", file=sys.stderr, flush=True)
        print(f"\nmedians of {args.repeat} rounds, seconds (buildah {buildah_version()}, {os.cpu_count()} cores, "
              f"load average at the end {os.getloadavg()[0]:.1f})\n")
        print("| Dockerfile | scenario | soko | buildah | speedup: buildah / soko, paired median |")
        print("|---|---|---:|---:|---:|")
        for (name, scenario, tool_name) in results:
            if tool_name != "soko":
                continue
            ours, theirs = results[(name, scenario, "soko")], results[(name, scenario, "buildah")]
            paired = statistics.median(b / s for s, b in zip(ours, theirs))
            print(f"| {name} | {scenario} | {statistics.median(ours):.2f} | {statistics.median(theirs):.2f} "
                  f"| {paired:.1f}x |")
        tools["buildah"].bh.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def buildah_version() -> str:
    p = subprocess.run(["buildah", "--version"], capture_output=True, text=True)
    return p.stdout.split()[2] if p.returncode == 0 else "?"


if __name__ == "__main__":
    main()
