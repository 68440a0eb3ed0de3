"""Archives and Dockerfiles through real pipes: `soko save | soko load`,
`cat x.tar | soko load -i -` (plain, gzip, zstd; docker-archive and OCI),
`soko build -f - CTX` and `soko build -`, with memory bounded by spooling to
the store's private ingest area, which is left empty afterwards."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import subprocess
import tarfile
import time

import pytest

from tests.cli.test_images_cli import store_state
from tests.conftest import SokoCLI

from .test_build_cli import ctx  # noqa: F401 - the fixture
from .test_output_files import popen

COMPRESSORS = {"none": None, "gzip": ["gzip", "-c", "-1"], "zstd": ["zstd", "-c", "-q"]}


@pytest.fixture
def bb(soko, busybox_rootfs):
    soko("import", "--change", 'CMD ["/bin/sh"]', busybox_rootfs, "bb:1")
    return json.loads(soko("inspect", "bb:1").stdout)[0]


def ingest_left(root) -> list[str]:
    return sorted(p.name for p in (root / "ingest").iterdir())


def pipeline(*procs: list, stdin=None) -> list[subprocess.Popen]:
    """Start each argv (or ready Popen factory) reading the previous one's stdout."""
    out = []
    for step in procs:
        p = step(stdin) if callable(step) else subprocess.Popen(step, stdin=stdin, stdout=subprocess.PIPE)
        if stdin is not None and stdin is not subprocess.DEVNULL and hasattr(stdin, "close"):
            stdin.close()  # only the next process holds the read end: the writer sees EPIPE if it dies
        stdin = p.stdout
        out.append(p)
    return out


@pytest.mark.parametrize("comp", COMPRESSORS)
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_piped_into_load(soko, bb, tmp_path, fmt, comp):
    other = SokoCLI(tmp_path / "other")
    steps = [lambda stdin: popen(soko, "save", "--format", fmt, "bb:1", stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE)]
    if COMPRESSORS[comp]:
        steps.append(COMPRESSORS[comp])
    steps.append(lambda stdin: popen(other, "load", stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    procs = pipeline(*steps)
    out, err = procs[-1].communicate(timeout=120)
    assert [p.wait(timeout=60) for p in procs] == [0] * len(procs), err
    assert out.decode().strip() == "Loaded image: bb:1"
    assert json.loads(other("inspect", "bb:1").stdout)[0]["Id"] == bb["Id"]
    assert ingest_left(other.root) == []


@pytest.mark.parametrize("comp", COMPRESSORS)
def test_cat_into_load_dash_i_dash(soko, bb, tmp_path, comp):
    archive = tmp_path / "bb.tar"
    soko("save", "--format", "oci", "-o", archive, "bb:1")
    if COMPRESSORS[comp]:
        with open(archive, "rb") as f:
            data = subprocess.run(COMPRESSORS[comp], stdin=f, capture_output=True, check=True).stdout
        archive.with_suffix(".z").write_bytes(data)
        archive = archive.with_suffix(".z")
    other = SokoCLI(tmp_path / "other")
    cat, load = pipeline(["cat", str(archive)],
                         lambda stdin: popen(other, "load", "-i", "-", stdin=stdin, stdout=subprocess.PIPE))
    assert load.communicate(timeout=120)[0].decode().strip() == "Loaded image: bb:1"
    assert cat.wait(timeout=10) == 0 and load.returncode == 0
    assert json.loads(other("inspect", "bb:1").stdout)[0]["Soko"]["Digest"] == bb["Soko"]["Digest"]
    assert ingest_left(other.root) == []


def test_redirected_file_and_failures_on_stdin(soko, bb, tmp_path):
    archive = tmp_path / "bb.tar"
    soko("save", "-o", archive, "bb:1")
    other = SokoCLI(tmp_path / "other")
    with open(archive, "rb") as f:  # `soko load < bb.tar`: seekable, read in place
        p = popen(other, "load", stdin=f, stdout=subprocess.PIPE)
        assert p.communicate(timeout=120)[0].decode().strip() == "Loaded image: bb:1"
    other("rmi", "bb:1")
    other("gc", "--grace", "0")
    before = store_state(other.root)
    data = archive.read_bytes()
    for bad in (data[: len(data) // 2], b"not an archive at all" * 100):
        r = other("load", input=bad, check=False)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert store_state(other.root) == before and ingest_left(other.root) == []
    master, slave = pty.openpty()
    try:
        p = popen(other, "load", stdin=slave, stderr=subprocess.PIPE)
        err = p.communicate(timeout=60)[1].decode()
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 1 and err.strip() == "soko: requested load from stdin, but stdin is empty"


def big_docker_archive(path, size: int) -> None:
    """A docker-archive whose one layer holds `size` random (incompressible) bytes."""
    layer = path.with_suffix(".layer")
    with tarfile.open(layer, "w") as t:
        ti = tarfile.TarInfo("big.bin")
        ti.size = size

        class Random(io.RawIOBase):
            left = size

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left, 1 << 20)
                b[:n] = os.urandom(n)
                self.left -= n
                return n

        t.addfile(ti, io.BufferedReader(Random(), 1 << 20))
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{h.hexdigest()}"]}}).encode()
    with tarfile.open(path, "w") as t:
        t.add(layer, "layer.tar")
        for name, data in (("config.json", config),
                           ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["big:1"],
                                                          "Layers": ["layer.tar"]}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    layer.unlink()


def peak_rss_while_running(proc: subprocess.Popen) -> int:
    """The largest VmRSS seen while `proc` runs, in bytes, sampled every few ms.

    Not ru_maxrss: Linux carries the high-water mark of the forked pytest
    process (hundreds of MB after a long session) into the child's rusage."""
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.005)
    return peak


def test_loading_a_large_archive_from_a_pipe_keeps_memory_bounded(tmp_path):
    size = 256 << 20
    archive = tmp_path / "big.tar"
    big_docker_archive(archive, size)
    store = SokoCLI(tmp_path / "store")
    cat = subprocess.Popen(["cat", str(archive)], stdout=subprocess.PIPE)
    load = popen(store, "load", stdin=cat.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cat.stdout.close()
    peak = peak_rss_while_running(load)
    out, err = load.communicate()
    assert cat.wait(timeout=10) == 0
    assert load.returncode == 0 and out.decode().strip() == "Loaded image: big:1", err
    # ~35 MB when idle; the read-ahead queues (bounded, 1 MB chunks) fill up when the machine
    # is busy, so the bound is "well under the archive", not a tight figure.
    assert 0 < peak < size // 3, f"peak RSS {peak >> 20} MB for a {size >> 20} MB archive"
    assert ingest_left(store.root) == []


def test_build_dockerfile_from_a_pipe(soko, ctx):
    printf = ["printf", "FROM busybox\\nCOPY hello.txt /a.txt\\nRUN cat /a.txt > /b.txt\\n"]
    src, build = pipeline(printf, lambda stdin: popen(soko, "build", "-q", "-t", "piped:1", "-f", "-", ctx,
                                                      stdin=stdin, stdout=subprocess.PIPE))
    image_id = build.communicate(timeout=300)[0].decode().strip()
    assert build.returncode == 0 and src.wait(timeout=10) == 0
    assert json.loads(soko("inspect", "piped:1").stdout)[0]["Id"] == image_id
    assert soko("run", "--rm", "piped:1", "cat", "/b.txt").stdout == "hello\n"


def test_build_dash_takes_the_dockerfile_from_stdin_without_context(soko, ctx):
    printf = ["printf", "FROM busybox\\nENV X=1\\nRUN echo $X > /x\\n"]
    src, build = pipeline(printf, lambda stdin: popen(soko, "build", "-q", "-t", "nocontext:1", "-",
                                                      stdin=stdin, stdout=subprocess.PIPE))
    assert build.communicate(timeout=300)[0].decode().startswith("sha256:") and build.returncode == 0
    assert soko("run", "--rm", "nocontext:1", "cat", "/x").stdout == "1\n"
    r = soko("build", "-", input="FROM busybox\nCOPY hello.txt /a.txt\n", check=False)
    assert r.returncode == 1 and "hello.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with open(ctx / "ctx.tar", "wb") as f:
        with tarfile.open(fileobj=f, mode="w") as t:
            t.add(ctx / "hello.txt", "hello.txt")
    r = soko("build", "-", input=(ctx / "ctx.tar").read_bytes(), check=False)
    assert r.returncode == 1 and "context" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = soko("build", "-f", "-", "-", input="FROM busybox\n", check=False)
    assert r.returncode == 2 and "stdin" in r.stderr
