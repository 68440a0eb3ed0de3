"""The output-file helper: atomic replacement of regular files through an
unpredictable O_EXCL|O_NOFOLLOW temporary, straight writes to everything else."""
from __future__ import annotations

import io
import os
import stat

import pytest

from storage import outfile
from storage.errors import StorageError
from storage.outfile import open_output


def test_replaces_a_regular_file_whole_and_keeps_its_mode(tmp_path):
    x = tmp_path / "x.tar"
    x.write_bytes(b"old")
    os.chmod(x, 0o640)
    with open_output(x) as f:
        f.write(b"new")
        assert x.read_bytes() == b"old"  # nothing visible before the end
    assert x.read_bytes() == b"new" and stat.S_IMODE(x.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    x = tmp_path / "x.tar"
    x.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with open_output(x) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert x.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar"]


def test_a_planted_temporary_name_is_neither_followed_nor_reused(tmp_path, monkeypatch):
    """Even a name guessed right (the token made predictable here) is not opened: O_EXCL|O_NOFOLLOW."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    tokens = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(outfile.secrets, "token_hex", lambda n: next(tokens))
    (tmp_path / ".x.tar.aaaa.tmp").symlink_to(victim)
    with open_output(tmp_path / "x.tar") as f:
        f.write(b"archive")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / ".x.tar.aaaa.tmp").is_symlink()
    assert (tmp_path / "x.tar").read_bytes() == b"archive" and not (tmp_path / "x.tar").is_symlink()


def test_symlink_to_a_regular_file_replaces_that_file(tmp_path):
    real = tmp_path / "real.tar"
    real.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    with open_output(link) as f:
        f.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening for writing does not wait
    try:
        with open_output(fifo) as f:
            f.write(b"through")
        assert os.read(r, 100) == b"through"
    finally:
        os.close(r)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_directories_and_streams(tmp_path):
    with pytest.raises(StorageError, match="is a directory"):
        with open_output(tmp_path):
            pass
    buf = io.BytesIO()
    with open_output(buf) as f:
        f.write(b"as is")
    assert buf.getvalue() == b"as is"
