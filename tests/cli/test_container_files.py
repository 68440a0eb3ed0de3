"""A container's files from outside: diff, commit, cp (both directions, running and stopped)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

from .containers_helpers import bb, inspect, state  # noqa: F401 - bb is a fixture

CHANGE = ("mkdir -p /newd && echo x > /newd/f && echo extra >> /etc/passwd && rm /bin/vi && touch /tmp/t "
          "&& rm -rf /home && mkdir -p /home/again && ln -s /newd/f /link")


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_diff_lists_exactly_what_changed(soko, bb, rt):
    soko("run", "-d", "--runtime", rt, "--network", "none", "--name", "ch", "-v", "vol:/data", bb, "sleep", "1000")
    # the runtime's mount points live in the init layer, not the change; a volume's is the
    # container's own, as Docker shows it
    assert soko("diff", "ch").stdout == "A /data\n"
    soko("exec", "ch", "sh", "-c", CHANGE + " && touch /data/in-volume")
    expected = ["C /bin", "D /bin/vi", "A /data", "C /etc", "C /etc/passwd", "C /home", "A /home/again", "D /home/app",
                "A /link", "A /newd", "A /newd/f", "C /tmp", "A /tmp/t"]
    assert soko("diff", "ch").stdout.splitlines() == expected
    soko("stop", "-t", "0", "ch")
    assert soko("diff", "ch").stdout.splitlines() == expected  # the same from the stopped container


def test_commit_of_a_changed_container_runs_with_the_change(soko, bb):
    soko("run", "--network", "none", "--name", "base", "-e", "MODE=prod", "-w", "/newd", bb, "sh", "-c", CHANGE)
    out = soko("commit", "-c", 'CMD ["cat", "f"]', "-c", "LABEL stage=committed", "-m", "the change", "-a", "me",
               "base", "committed:1").stdout.strip()
    assert out.startswith("sha256:") and len(out) == 71
    assert soko("run", "--rm", "--network", "none", "committed:1").stdout == "x\n"  # CMD and WorkingDir
    r = soko("run", "--rm", "--network", "none", "committed:1", "sh", "-c",
             "echo $MODE; tail -1 /etc/passwd; ls /bin/vi 2>&1; ls /home; readlink /link")
    assert r.stdout == "prod\nextra\nls: /bin/vi: No such file or directory\nagain\n/newd/f\n"
    img = json.loads(soko("inspect", "--type", "image", "committed:1").stdout)[0]
    assert img["Config"]["Cmd"] == ["cat", "f"] and img["Config"]["Labels"] == {"stage": "committed"}
    assert img["Config"]["WorkingDir"] == "/newd" and "MODE=prod" in img["Config"]["Env"]
    assert img["Author"] == "me" and img["Comment"] == "the change"  # docker: the last history comment
    assert len(img["RootFS"]["Layers"]) == 2
    # the new layer holds the change and nothing of the runtime's own (no /etc/hostname stub, no /proc)
    layer = img["Soko"]["Layers"][-1]["digest"].split(":")[1]
    with tarfile.open(soko.root / "blobs" / "sha256" / layer) as t:
        names = sorted(n.rstrip("/") for n in t.getnames())
    assert names == ["bin", "bin/.wh.vi", "etc", "etc/passwd", "home", "home/.wh..wh..opq", "home/again",
                     "link", "newd", "newd/f", "tmp", "tmp/t"]
    r = soko("commit", "nosuch", check=False)
    assert r.returncode == 1 and "No such container: nosuch" in r.stderr


def test_a_containers_image_survives_rmi_and_gc(soko, bb, busybox_rootfs):
    """Docker refuses to remove an image a container uses; soko lets `rmi` untag it, and `gc`
    keeps it for as long as the container exists (commit still needs it)."""
    soko("import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV ONLY=here", busybox_rootfs, "only:1")
    soko("run", "--network", "none", "--name", "keeps", "only:1", "sh", "-c", "echo $ONLY > /f")
    config = soko.root / "blobs" / "sha256" / inspect(soko, "keeps")["Image"].split(":")[1]
    soko("rmi", "only:1")
    soko("gc", "--grace", "0")
    soko("commit", "keeps", "kept:1")
    assert soko("run", "--rm", "--network", "none", "kept:1", "sh", "-c", "cat /f; echo $ONLY").stdout == \
        "here\nhere\n"
    assert config.exists()
    soko("rm", "keeps")
    soko("gc", "--grace", "0")
    assert not config.exists()  # released with the container


def test_commit_pauses_a_running_container(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "live", bb, "sh", "-c", "echo v1 > /state; sleep 1000")
    soko("exec", "live", "sh", "-c", "while [ ! -e /state ]; do sleep 0.1; done")
    soko("commit", "live", "live:1")
    assert soko("run", "--rm", "--network", "none", "live:1", "cat", "/state").stdout == "v1\n"
    assert state(soko, "live")["Running"]  # thawed again
    soko("exec", "live", "true")


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_cp_both_ways_running_and_stopped(soko, bb, rt, tmp_path):
    soko("run", "-d", "--runtime", rt, "--network", "none", "--name", "files", bb, "sh", "-c",
         "mkdir -p /srv/d/sub && echo one > /srv/d/a && echo two > /srv/d/sub/b && ln -sf /srv/d/a /srv/link "
         "&& sleep 1000")
    soko("exec", "files", "sh", "-c", "while [ ! -e /srv/link ]; do sleep 0.1; done")
    host = tmp_path / "host"
    host.mkdir()
    soko("cp", "files:/srv/d", str(host))  # into an existing directory: under its own name
    assert (host / "d" / "a").read_text() == "one\n" and (host / "d" / "sub" / "b").read_text() == "two\n"
    soko("cp", "files:/srv/d/.", str(host / "contents"))  # a new directory with the contents
    assert sorted(os.listdir(host / "contents")) == ["a", "sub"]
    soko("cp", "files:/srv/d/a", str(host / "renamed"))  # a file under a new name
    assert (host / "renamed").read_text() == "one\n"
    soko("cp", "-L", "files:/srv/link", str(host / "followed"))
    assert (host / "followed").read_text() == "one\n" and not (host / "followed").is_symlink()
    raw = subprocess.run([sys.executable, "-m", "soko", "--root", str(soko.root), "cp", "files:/srv/d", "-"],
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        assert sorted(t.getnames()) == ["d", "d/a", "d/sub", "d/sub/b"]
    (host / "up.txt").write_text("up\n")
    os.chmod(host / "up.txt", 0o640)
    soko("cp", str(host / "up.txt"), "files:/srv/d")  # into a directory
    soko("cp", str(host / "up.txt"), "files:/srv/named.txt")  # as a new file
    soko("cp", str(host / "contents"), "files:/srv/copied")  # a directory under a new name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"from a tar\n"
        info = tarfile.TarInfo("streamed.txt")
        info.size, info.uid, info.gid = len(data), 1000, 1000
        t.addfile(info, io.BytesIO(data))
    soko("cp", "-", "files:/srv", input=buf.getvalue())
    out = soko("exec", "files", "sh", "-c", "cat /srv/d/up.txt /srv/named.txt /srv/copied/a /srv/streamed.txt; "
               "stat -c '%a %u:%g' /srv/named.txt /srv/streamed.txt").stdout
    assert out == "up\nup\none\nfrom a tar\n640 0:0\n644 0:0\n"  # owned by the container's root
    soko("cp", "-a", "-", "files:/srv", input=buf.getvalue())
    assert soko("exec", "files", "stat", "-c", "%u:%g", "/srv/streamed.txt").stdout == "1000:1000\n"
    soko("stop", "-t", "0", "files")
    soko("cp", str(host / "up.txt"), "files:/srv/after-stop.txt")  # a stopped container: its snapshot
    soko("cp", "files:/srv/after-stop.txt", str(host / "back.txt"))
    assert (host / "back.txt").read_text() == "up\n"
    assert "A /srv/after-stop.txt" in soko("diff", "files").stdout.splitlines()
    soko("start", "files")
    assert soko("exec", "files", "cat", "/srv/after-stop.txt").stdout == "up\n"
    r = soko("cp", "files:/nonexistent", str(host), check=False)
    assert r.returncode == 1 and "Could not find the file /nonexistent" in r.stderr
    r = soko("cp", "files:/srv/d", str(host / "up.txt"), check=False)
    assert r.returncode == 1 and "cannot copy a directory to a file" in r.stderr


def test_cp_out_never_writes_outside_the_destination(soko, bb, tmp_path):
    """A hostile container's symlinks cannot make `cp` write on the host outside DEST."""
    soko("run", "-d", "--network", "none", "--name", "evil", bb, "sh", "-c",
         "mkdir /x && ln -s /../../../../../../tmp /x/escape && ln -s /etc/passwd /x/abs && sleep 1000")
    soko("exec", "evil", "sh", "-c", "while [ ! -e /x/abs ]; do sleep 0.1; done")
    dest = tmp_path / "dest"
    dest.mkdir()
    r = soko("cp", "evil:/x", str(dest), check=False)
    # absolute links are refused by the host-side extraction; nothing lands outside dest
    assert r.returncode == 1
    for root, dirs, files in os.walk(tmp_path):
        for n in dirs + files:
            assert os.path.realpath(os.path.join(root, n)).startswith(str(tmp_path)) or \
                os.path.islink(os.path.join(root, n))
