"""soko ends without the interpreter's teardown, but as a normal exit would otherwise: its
status, everything printed, other threads finished and atexit handlers run."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_leave_keeps_what_a_normal_exit_does(tmp_path):
    code = f"""
import atexit, sys, threading, time
from soko.entry import leave
atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').write('ran'))
def late():
    time.sleep(0.3)
    open({str(tmp_path / 'thread')!r}, 'w').write('done')
threading.Thread(target=late).start()
sys.stdout.write('unflushed line')
sys.stderr.write('and its error')
leave(7)
print('not reached')
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert (p.returncode, p.stdout, p.stderr) == (7, "unflushed line", "and its error")
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"
