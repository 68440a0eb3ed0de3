"""Spec building, option parsing, USER resolution, chain IDs and safe paths (no root needed)."""
from __future__ import annotations

import hashlib
import os

import pytest

from runtime import caps, spec as S
from runtime.errors import InvalidOption, StartError, UnsafePath, UserNotFound
from runtime.options import (RunOptions, parse_env_file, parse_size, parse_tmpfs, parse_volume)
from runtime.paths import ensure_target, mkdir_in_root, secure_join
from runtime.snapshots import chain_ids
from runtime.users import ExecUser, resolve
from tests.runtime.helpers import GROUP, PASSWD


def _files(passwd: str | None = PASSWD, group: str | None = GROUP):
    data = {"/etc/passwd": passwd, "/etc/group": group}
    return lambda p: None if data.get(p) is None else data[p].encode()


def test_docker_default_capabilities_mask():
    assert caps.mask(caps.DOCKER_DEFAULT) == 0xA80425FB


@pytest.mark.parametrize("cfg,opts,want", [
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, RunOptions(), ["/ep", "a"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, RunOptions(command=["b", "c"]), ["/ep", "b", "c"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, RunOptions(entrypoint="/x"), ["/x"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, RunOptions(entrypoint="/x", command=["y"]), ["/x", "y"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, RunOptions(entrypoint="", command=["y"]), ["y"]),
    ({"Cmd": ["sh"]}, RunOptions(), ["sh"]),
])
def test_entrypoint_and_cmd(cfg, opts, want):
    assert S.process_args(cfg, opts) == want


def test_no_command_is_125():
    with pytest.raises(StartError) as e:
        S.process_args({}, RunOptions())
    assert e.value.status == 125


def test_env_merge_order():
    env = S.merge_env(["PATH=/img", "A=image", "B=image"], ["A=envfile", "B=cli"], "h1", "/root", True)
    assert {"PATH=/img", "HOSTNAME=h1", "TERM=xterm"} <= set(env)
    keys = [e.split("=")[0] for e in env]
    assert len(keys) == len(set(keys))
    assert "A=envfile" in env and "B=cli" in env and "HOME=/root" in env
    env = S.merge_env([], ["HOME=/x", "HOSTNAME=mine"], "h1", "/root", False)
    assert env[0] == f"PATH={S.DEFAULT_PATH}" and "HOME=/x" in env and "HOSTNAME=mine" in env
    assert not any(e.startswith("TERM=") for e in env)


def _spec(**kw) -> dict:
    opts = RunOptions(**kw)
    return S.build(S.SpecInput({}, opts, ["true"], ["PATH=/bin"], ExecUser(1000, 1000, [50]), "h", "/w",
                               "/rootfs", {"/etc/hosts": "/s/hosts"}, [S.tmpfs_mount(parse_tmpfs("/t:size=1m"))],
                               "soko/x", "hybrid"))


def test_spec_contents():
    s = _spec(network="none", memory=32 << 20, cpus=0.5, pids_limit=10, read_only=True)
    p = s["process"]
    assert p["args"] == ["true"] and p["cwd"] == "/w" and p["noNewPrivileges"] is True
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [50]}
    assert set(p["capabilities"]["bounding"]) == set(caps.DOCKER_DEFAULT)
    assert p["rlimits"][0]["type"] == "RLIMIT_NOFILE"
    ns = {n["type"] for n in s["linux"]["namespaces"]}
    assert ns == {"pid", "ipc", "uts", "mount", "network"}
    r = s["linux"]["resources"]
    assert r["memory"] == {"limit": 32 << 20, "swap": 64 << 20}
    assert r["cpu"] == {"quota": 50000, "period": 100000} and r["pids"] == {"limit": 10}
    assert r["devices"][0] == {"allow": False, "access": "rwm"}
    assert "/proc/kcore" in s["linux"]["maskedPaths"] and "/proc/sys" in s["linux"]["readonlyPaths"]
    assert s["root"]["readonly"] is True and s["hostname"] == "h"
    dests = [m["destination"] for m in s["mounts"]]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert "/etc/hosts" in dests and "/t" in dests
    t = next(m for m in s["mounts"] if m["destination"] == "/t")
    assert t["type"] == "tmpfs" and {"nosuid", "nodev", "noexec", "size=1m"} <= set(t["options"])


def test_spec_host_network_shares_the_namespace():
    s = _spec(network="host")
    assert "network" not in {n["type"] for n in s["linux"]["namespaces"]}


@pytest.mark.parametrize("text,want", [("32m", 32 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
                                       ("100", 100), ("1.5m", int(1.5 * (1 << 20))), ("64MB", 64 << 20)])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("bad", ["", "abc", "-1m", "1x"])
def test_parse_size_rejects(bad):
    with pytest.raises(InvalidOption):
        parse_size(bad)


def test_parse_volume():
    v = parse_volume("/host/dir:/data:ro")
    assert (v.source, v.target, v.read_only, v.named) == ("/host/dir", "/data", True, False)
    v = parse_volume("cache:/var/cache")
    assert (v.source, v.named, v.read_only) == ("cache", True, False)
    for bad in ["/data", "rel/dir:/x", "a:b", "/h:/x:rx", "a:/", "x:y:z:w"]:
        with pytest.raises(InvalidOption):
            parse_volume(bad)


def test_validate_rejects_bad_options():
    for kw in [dict(runtime="kata"), dict(network="container:x"), dict(network="bad name"), dict(memory=1024), dict(workdir="rel"),
               dict(name="bad name"), dict(hostname="x", network="host"), dict(tmpfs=["rel"]),
               dict(env=["=x"])]:
        with pytest.raises(InvalidOption):
            RunOptions(**kw).validate()


def test_env_file(tmp_path, monkeypatch):
    f = tmp_path / "env"
    f.write_text("# comment\n\nA=1\nB=two words\nFROM_HOST\nUNSET_ONE\n")
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    assert parse_env_file(str(f)) == ["A=1", "B=two words", "FROM_HOST=h"]
    f.write_text("BAD KEY=1\n")
    with pytest.raises(InvalidOption):
        parse_env_file(str(f))
    with pytest.raises(InvalidOption):
        parse_env_file(str(tmp_path / "missing"))


@pytest.mark.parametrize("spec,want", [
    (None, ExecUser(0, 0, [], "/root", "root")),
    ("app", ExecUser(1000, 1000, [50], "/home/app", "app")),
    ("1000", ExecUser(1000, 1000, [50], "/home/app", "app")),
    ("app:staff", ExecUser(1000, 50, [], "/home/app", "app")),
    ("app:0", ExecUser(1000, 0, [], "/home/app", "app")),
    ("4242", ExecUser(4242, 0, [], "/", None)),
    ("4242:4343", ExecUser(4242, 4343, [], "/", None)),
])
def test_user_resolution(spec, want):
    assert resolve(spec, _files()) == want


@pytest.mark.parametrize("spec", ["nosuch", "app:nogroup2", "nosuch:0"])
def test_unknown_user_or_group_is_an_error(spec):
    with pytest.raises(UserNotFound):
        resolve(spec, _files())


def test_named_user_needs_a_passwd_file():
    with pytest.raises(UserNotFound):
        resolve("app", _files(None, None))
    assert resolve("0", _files(None, None)).uid == 0


def test_chain_ids_follow_the_image_spec():
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ids = chain_ids([a, b, c])
    assert ids[0] == a
    assert ids[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert ids[2] == "sha256:" + hashlib.sha256(f"{ids[1]} {c}".encode()).hexdigest()


def test_secure_join_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    os.symlink("/real", root / "abs")
    os.symlink("../../../../..", root / "up")
    os.symlink("../../../../../etc/shadow", root / "etc" / "passwd")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert secure_join(r, "/abs/x") == f"{r}/real/x"
    assert secure_join(r, "/up") == r
    assert secure_join(r, "/up/etc/shadow") == f"{r}/etc/shadow"
    assert secure_join(r, "/etc/passwd") == f"{r}/etc/shadow"  # dangling inside, not the host's
    assert secure_join(r, "../../x") == f"{r}/x"
    assert secure_join(r, "/abs", follow_last=False) == f"{r}/abs"
    with pytest.raises(UnsafePath):
        secure_join(r, "/loop1")
    made = mkdir_in_root(r, "/up/new/dir")
    assert made == f"{r}/new/dir" and os.path.isdir(made)
    f = ensure_target(r, "/abs/file", directory=False)
    assert f == f"{r}/real/file" and os.path.isfile(f)
    (root / "plain").write_text("x")
    with pytest.raises(UnsafePath):
        mkdir_in_root(r, "/plain/sub")
