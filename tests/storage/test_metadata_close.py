"""The metadata database is left with its WAL at close: no checkpoint (and its fsyncs) at the
end of every command, and nothing lost: the next process reads every committed row."""
from __future__ import annotations

import subprocess
import sys

from storage.metadata import MetadataDB
from tests.conftest import REPO


def test_close_keeps_the_wal_and_the_next_process_reads_it(tmp_path):
    db = MetadataDB(tmp_path / "metadata.db")
    db.execute("INSERT INTO holds(owner, digest) VALUES('t', 'sha256:' || hex(randomblob(32)))")
    db.close()
    wal = tmp_path / "metadata.db-wal"
    assert wal.is_file() and wal.stat().st_size > 0  # not checkpointed into the database and deleted
    code = ("import sys; from storage.metadata import MetadataDB; "
            "print(len(MetadataDB(sys.argv[1]).query(\"SELECT * FROM holds WHERE owner='t'\")))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "metadata.db")], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out == "1\n"


def test_a_symlinked_root_still_works(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    db = MetadataDB(tmp_path / "link" / "metadata.db")
    db.execute("INSERT INTO holds(owner, digest) VALUES('t', 'x')")
    db.close()
    assert MetadataDB(tmp_path / "real" / "metadata.db").query("SELECT owner FROM holds")[0][0] == "t"
    assert (tmp_path / "real" / "metadata.db-wal").stat().st_size > 0
