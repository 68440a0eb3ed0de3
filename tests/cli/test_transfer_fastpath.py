"""`soko pull` and `soko push` with plain arguments skip click (soko/entry.py): their parsers
must read every command line they accept exactly as click does, leave every other one to click,
and the commands must then print and fail as through click, without importing click."""
from __future__ import annotations

import pytest

from soko.commands.transfer_options import parse_pull, parse_push
from storage.images import ImageStore
from tests.client.client_helpers import make_image, random_layer, start_distribution
from tests.cli.importtime_helpers import imported, imported_at_start, messages, soko_importtime

PULL_ACCEPTED = [
    ["r/x:1"], ["-q", "r/x:1"], ["--quiet", "--insecure", "r/x"], ["-j", "3", "r/x"], ["--jobs=64", "r/x"],
    ["-qj", "2", "r/x"], ["--platform", "linux/arm64", "r/x"], ["--platform=", "r/x"], ["-j", " 4", "r/x"],
]
PULL_DECLINED = [
    [], ["--help"], ["r/x", "-q"], ["r/x", "r/y"], ["-j", "0", "r/x"], ["-j", "65", "r/x"], ["-j", "x", "r/x"],
    ["--bogus", "r/x"], ["--", "r/x"], ["-"], ["-q=1", "r/x"], ["--quiet=1", "r/x"], ["-j"], ["-jq", "r/x"],
]
PUSH_ACCEPTED = [
    ["img"], ["img", "r/x:1"], ["-q", "img", "r/x"], ["--compression", "zstd", "img"], ["--compression=none", "img"],
    ["--insecure", "-j", "2", "img", "r/x"],
]
PUSH_DECLINED = [
    [], ["--help"], ["img", "a", "b"], ["img", "-q"], ["--compression", "xz", "img"],
    ["--compression-level", "3", "img"], ["--compression", "gzip", "--compression-level=1", "img"], ["-Z", "img"],
]


def click_params(name: str, args: list[str]) -> dict:
    from soko.commands.transfer import pull_cmd, push_cmd

    cmd = pull_cmd if name == "pull" else push_cmd
    with cmd.make_context(name, list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("args", PULL_ACCEPTED, ids=" ".join)
def test_pull_command_lines_read_as_click_reads_them(args):
    assert parse_pull(args) == click_params("pull", args)


@pytest.mark.parametrize("args", PUSH_ACCEPTED, ids=" ".join)
def test_push_command_lines_read_as_click_reads_them(args):
    assert parse_push(args) == click_params("push", args)


@pytest.mark.parametrize("args", PULL_DECLINED, ids=" ".join)
def test_unusual_pull_lines_are_left_to_click(args):
    assert parse_pull(args) is None


@pytest.mark.parametrize("args", PUSH_DECLINED, ids=" ".join)
def test_unusual_push_lines_are_left_to_click(args):
    assert parse_push(args) is None


def test_plain_push_and_pull_need_neither_click_nor_aiohttp(tmp_path):
    reg = start_distribution(tmp_path / "reg")
    try:
        store = ImageStore(tmp_path / "a")
        ref = f"{reg.host}/fast/path:1"
        m = make_image(store, ref, [random_layer(store, 50_000, 71)])
        p = soko_importtime(tmp_path / "a", "push", ref)
        assert p.returncode == 0, messages(p)
        assert p.stdout.splitlines()[-1] == f"1: digest: {m.digest} size: {len(m.raw)}"
        # its layers are gzip already: nothing to compress, so no compressor either (~4-8 ms)
        assert {"zstandard", "isal", "isal.isal_zlib"} & imported(p) == set()
        assert "encodings.idna" not in imported(p)  # plain HTTP: no host name to encode (~2-4 ms)
        assert "tempfile" not in imported(p)  # only writing credentials needs it
        p = soko_importtime(tmp_path / "b", "pull", ref)
        assert p.returncode == 0, messages(p)
        assert p.stdout.splitlines()[0] == "1: Pulling from fast/path"
        assert p.stdout.splitlines()[-3:] == [f"Digest: {m.digest}", f"Status: Downloaded newer image for {ref}", ref]
        # nor the compressors and tarfile (~15 ms) for the repo digest it records at the end
        assert {"click", "aiohttp", "zstandard", "tarfile", "encodings.idna"} & imported(p) == set()
        assert ({"inspect", "ast", "bz2", "lzma"} - imported_at_start()) & imported(p) == set()  # entry.ON_FIRST_USE
        assert ImageStore(tmp_path / "b").resolve(ref).digest == m.digest
        p = soko_importtime(tmp_path / "b", "pull", "-q", f"{reg.host}/fast/none:1")  # an error: one line, status 1
        assert (p.returncode, p.stdout) == (1, "")
        assert messages(p).startswith("soko: ") and "not found" in messages(p) and "\n" not in messages(p)
        assert {"click", "aiohttp"} & imported(p) == set()
        p = soko_importtime(tmp_path / "b", "pull", "-j", "0", ref)  # click's words for what click must judge
        assert p.returncode == 2 and "0 is not in the range 1<=x<=64" in messages(p)
    finally:
        reg.stop()


def test_the_store_opens_while_the_client_is_imported(tmp_path):
    """A fresh store's SQLite fsyncs overlap the client's imports (transfer_core.store_while_importing):
    a store still opening sees the client's modules arrive (it waits up to 60 s for them, so
    a heavily loaded machine cannot fail it; opened first and imported after, they never come)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, time\n"
            "from soko.commands.transfer_core import store_while_importing\n"
            "want = {'pull': 'registry.client.download', 'push': 'registry.client.upload'}[sys.argv[1]]\n"
            "class Ctx:\n"
            "    def image_store(self):\n"
            "        deadline = time.monotonic() + 60\n"
            "        while not {want, 'registry.client.wire_std'} <= set(sys.modules) and time.monotonic() < deadline:\n"
            "            time.sleep(0.01)\n"
            "        return sorted(m for m in ('registry.client.download', 'registry.client.upload',\n"
            "                                  'registry.client.wire_std') if m in sys.modules)\n"
            "print(*store_while_importing(Ctx(), sys.argv[1]))\n")
    for name, want in (("pull", "registry.client.download registry.client.wire_std"),
                       ("push", "registry.client.upload registry.client.wire_std")):
        out = subprocess.run([sys.executable, "-c", code, name], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert (out.returncode, out.stdout.strip()) == (0, want), out.stderr


@pytest.mark.parametrize("command", [["pull", "-q", "127.0.0.1:1/x:1"], ["push", "-q", "x:1", "127.0.0.1:1/x:1"]])
def test_a_store_that_cannot_open_fails_pull_and_push_in_one_line(tmp_path, command):
    """The store opens in another thread than the command's (store_while_importing): its
    error still ends the command as itself, one line, status 1, the store untouched."""
    root = tmp_path / "bad"
    root.mkdir()
    (root / "metadata.db").write_bytes(b"garbage, not a database" * 100)
    p = soko_importtime(root, *command)
    assert p.returncode == 1 and p.stdout == ""
    assert messages(p) == f"soko: metadata database {root / 'metadata.db'}: file is not a database"
    assert (root / "metadata.db").read_bytes() == b"garbage, not a database" * 100
