"""The TOML config of `soko serve`: every key reachable, flags over the file,
and each mistake an error naming the file, line and key before anything listens."""
from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import pytest

from registry.errors import ConfigError
from registry.server.config import ServerConfig
from registry.server.configfile import key_lines

from .conftest import REPO
from .teams import bcrypt_hash

HASH = bcrypt_hash("pw")


def example(tmp_path) -> str:
    """REGISTRY.md's example, the sections part A of issue 12 implements."""
    from registry.server.keys import make_signer

    key, cert = make_signer(tmp_path / "tk")
    return f'''\
addr = "127.0.0.1:5001"            # as --addr
root = "{tmp_path}/registry"
audit_log = "{tmp_path}/audit.jsonl"
read_only = false
readers = ["bob"]

[tls]
self_signed = true

[token]
key = "{key}"
cert = "{cert}"
expiration = "5m"
refresh_expiration = "720h"

[users]
alice = "{HASH}"
bob = '{HASH}'

[groups]
devs = ["alice"]

[robots."robot$ci"]
secret = "{HASH}"
namespaces = ["public"]
expires = 2027-01-01T00:00:00Z

[[access]]
account = "alice"
repository = "team/*"
actions = ["pull", "push", "delete"]

[[access]]
account = "group:devs"
repository = "**"
actions = ["pull"]

[quotas]
team = 10_000_000_000

[[immutable]]
repository = "release/*"
tags = "v*"

[[retention]]
repository = "ci/*"
keep_last = 20
keep_days = 30

[limits]
max_blob_bytes = 1_000_000
body_timeout = 30.0

[gc]
interval = "24h"
grace = "1h30m"
untagged = true
'''


def test_the_example_loads_and_flags_win(tmp_path):
    path = tmp_path / "reg.toml"
    path.write_text(example(tmp_path))
    cfg = ServerConfig.from_file(path)
    assert cfg.addr == "127.0.0.1:5001" and cfg.tls.self_signed and cfg.readers == ["bob"]
    assert cfg.token.expiration == 300 and cfg.token.refresh_expiration == 720 * 3600 and cfg.token.issuer == "soko"
    assert cfg.groups == {"devs": ["alice"]} and cfg.users["bob"] == HASH
    robot = cfg.robots["robot$ci"]
    assert robot.namespaces == ["public"] and robot.expires == datetime.datetime(2027, 1, 1,
                                                                                tzinfo=datetime.timezone.utc)
    assert [(a.account, a.repository, a.granted) for a in cfg.access] == [
        ("alice", "team/*", frozenset({"pull", "push", "delete"})), ("group:devs", "**", frozenset({"pull"}))]
    assert cfg.quotas == {"team": 10_000_000_000}
    assert (cfg.immutable[0].repository, cfg.immutable[0].tags) == ("release/*", "v*")
    assert (cfg.retention[0].keep_last, cfg.retention[0].keep_days) == (20, 30)
    assert cfg.limits.max_blob_bytes == 1_000_000 and cfg.limits.body_timeout == 30
    assert (cfg.gc.interval, cfg.gc.grace, cfg.gc.untagged) == (86400, 5400, True)
    flags = ServerConfig.load(path, {"addr": "127.0.0.1:6000", "read_only": True, "gc": {"interval": "10s"},
                                     "token": {"issuer": "other"}})
    assert flags.addr == "127.0.0.1:6000" and flags.read_only and flags.gc.interval == 10
    assert flags.gc.grace == 5400 and flags.token.issuer == "other" and flags.token.expiration == 300


BAD = [
    # (the file, its line that is wrong, what the message says)
    ('addr = "127.0.0.1:0"\nnope = 1\n', 2, "nope: unknown key 'nope'"),
    ('[limits]\nmax_blob_bytez = 5\n', 2, "limits.max_blob_bytez: unknown key 'max_blob_bytez' "
                                          "(did you mean 'max_blob_bytes'?)"),
    ('[[access]]\naccount = "anonymous"\nrepository = "a/*"\nactions = ["pull"]\n\n'
     '[[access]]\naccount = "anonymous"\nrepo = "b"\n', 8, "access[2].repo: unknown key 'repo'"),
    ('read_only = "yes"\n', 1, "read_only: expected true or false, got a string"),
    ('[limits]\n\n  max_blob_bytes = 1.5\n', 3, "limits.max_blob_bytes: expected an integer, got a number"),
    ('[gc]\ninterval = "soon"\n', 2, "gc.interval: invalid duration 'soon'"),
    ('[[access]]\naccount = "anonymous"\nrepository = "team/[abc"\nactions = ["pull"]\n', 3,
     "access[1].repository: bad glob 'team/[abc': unclosed '['"),
    ('[[access]]\naccount = "anonymous"\nrepository = "x"\nactions = ["pull", "fly"]\n', 4,
     "access[1].actions[2]: unknown action 'fly'"),
    ('[[access]]\naccount = "zed"\nrepository = "x"\n', 2, "access[1].account: unknown user 'zed'"),
    ('[robots."robot$ci"]\nnamespaces = ["ci"]\n', 1, 'robots."robot$ci".secret: a robot needs its secret'),
    (f'[robots."ci"]\nsecret = "{HASH}"\nnamespaces = ["ci"]\n', 1, 'robots.ci: robot names start with'),
    ('[users]\nalice = "plain-text"\n', 2, "users.alice: not a bcrypt hash"),
    (f'[users]\nalice = "{HASH}"\n[groups]\ndevs = ["alice",\n   "bob"]\n', 5, "groups.devs[2]: unknown user 'bob'"),
    ('[quotas]\n"Team" = 5\n', 2, "quotas.Team: invalid namespace 'Team'"),
    ('[[retention]]\nrepository = "ci/*"\n', 1, "retention[1]: give keep_last, keep_days or both"),
    ('[token]\nkey = "/nonexistent/key.pem"\n', 2, "token.key: cannot read /nonexistent/key.pem"),
    ('[token]\nrootcertbundle = "/nonexistent/ca.pem"\nrealm = "https://auth.example/token"\n', 2,
     "token.rootcertbundle: cannot read"),
    ('[token]\nrealm = "auth.example"\n', 2, "token.realm: not an http(s) URL"),
    ('realm = """\nmulti = 1\n"""\n[tls]\ncert = "a.pem"\n', 5, "tls.cert: cert and key go together"),
    ('[storage]\nurl = "/var/blobs"\n', 2, "storage.url: want s3://BUCKET/PREFIX?endpoint=...&region=..."),
    ('[storage]\nurl = "s3://b/p?endpoint=http://x&bogus=1"\n', 2, "storage.url: bad storage URL"),
    ('[storage]\nredirect = true\n', 2, "storage.redirect: redirects need S3 storage"),
    ('[storage]\nurl = "s3://b"\naccess_key = "AK"\n', 1, "storage.secret_key: access_key and secret_key go together"),
    ('[storage]\nurl = "s3://b"\npart_size = 1024\n', 3, "storage.part_size: must be at least 5 MiB"),
]


@pytest.mark.parametrize("text,line,message", BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_malformed_configs_name_file_line_and_key(tmp_path, text, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        ServerConfig.from_file(path)
    assert str(ei.value).startswith(f"{path}:{line}: {message}"), str(ei.value)


def test_syntax_errors_and_unreadable_files(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('addr = "x"\n[tls\n')
    with pytest.raises(ConfigError, match=rf"^{path}: line 2: "):
        ServerConfig.from_file(path)
    path.write_text('{"addr": "127.0.0.1:5000"}')  # the old JSON form is not TOML
    with pytest.raises(ConfigError, match=rf"^{path}: line 1: "):
        ServerConfig.from_file(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        ServerConfig.from_file(tmp_path / "missing.toml")


def test_key_lines_are_found_in_tricky_toml():
    text = '''\
# a comment with key = "value"
a = """
b = 1
"""
"quoted.key" = 'C:\\it"s'
c = { d = 1, e = [1, 2,
  3] }
[t.u]
v = [
  { w = 1 },
  { w = 2 },
]
[[arr]]
x = 1
[[arr]]
x = 2
[arr.sub]
y = 1979-05-27 07:32:00Z
'''
    import tomllib

    tomllib.loads(text)  # valid TOML is what the scanner is for
    lines = key_lines(text)
    assert lines[("a",)] == 2 and ("b",) not in lines
    assert lines[("quoted.key",)] == 5
    assert lines[("c", "d")] == 6 and lines[("c", "e", 2)] == 7
    assert lines[("t", "u")] == 8 and lines[("t", "u", "v", 1, "w")] == 11
    assert lines[("arr", 0, "x")] == 14 and lines[("arr", 1, "x")] == 16 and lines[("arr", 1)] == 15
    assert lines[("arr", 1, "sub", "y")] == 18


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NOT_STARTED = {
    "bad glob": ('[[access]]\naccount = "anonymous"\nrepository = "x["\n', 6,
                 "access[1].repository: bad glob 'x[': unclosed '[' at position 2"),
    "unknown key": ('[gc]\nintervall = "1h"\n', 5, "gc.intervall: unknown key 'intervall' (did you mean 'interval'?)"),
    "bad type": ('[limits]\nmax_client_uploads = "many"\n', 5,
                 "limits.max_client_uploads: expected an integer, got a string"),
    "robot without secret": ('[robots."robot$ci"]\nnamespaces = ["ci"]\n', 4,
                             'robots."robot$ci".secret: a robot needs its secret\'s bcrypt hash '
                             '(soko registry robot-secret makes one)'),
}


@pytest.mark.parametrize("how,case", [("module", c) for c in NOT_STARTED] + [("soko", "bad glob")])
def test_a_bad_config_starts_nothing(tmp_path, how, case, soko):
    port = _free_port()
    text, line, message = NOT_STARTED[case]
    path = tmp_path / "bad.toml"
    path.write_text(f'addr = "127.0.0.1:{port}"\nroot = "{tmp_path}/root"\n\n{text}')
    if how == "module":
        p = subprocess.run([sys.executable, "-m", "registry.server", "--config", str(path)], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
        code, out, err = p.returncode, p.stdout, p.stderr
    else:
        r = soko("serve", "--config", path, check=False, timeout=60)
        code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 1 and "listening" not in out + err
    assert err.strip().splitlines() == [f"{'error' if how == 'module' else 'soko'}: {path}:{line}: {message}"], err
    assert not (tmp_path / "root").exists()  # nothing was created
    with socket.socket() as s:  # and nothing listens
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_flags_win_over_the_file_in_a_running_server(fresh_server, tmp_path):
    with socket.socket() as busy:  # the file's address is taken: only the flag's can work
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        srv = fresh_server.configure({"addr": f"127.0.0.1:{busy.getsockname()[1]}", "root": "/nonexistent/x",
                                      "read_only": False})
        srv.args += ["--read-only"]
        srv.start()
        assert srv.port != busy.getsockname()[1] and (srv.root / "metadata.db").exists()
        r = srv.client().request("POST", "/v2/x/blobs/uploads/")
        assert r.status == 405 and "read-only" in r.json()["errors"][0]["message"]


def test_robot_secret_and_token_key_make_a_working_config(soko, fresh_server, tmp_path):
    out = soko("registry", "robot-secret", "builder", "--namespace", "ci", "--expires", "2099-01-01").stdout
    first, blank, *table = out.splitlines()
    assert first.startswith("secret of robot$builder (shown once, keep it): ") and blank == ""
    secret = first.rsplit(" ", 1)[1]
    assert secret not in "\n".join(table) and len(secret) >= 32
    keys = soko("registry", "token-key", tmp_path / "keys").stdout
    access = '\n[[access]]\naccount = "robot$builder"\nrepository = "ci/**"\nactions = ["pull", "push"]\n'
    srv = fresh_server.configure("\n".join(table) + "\n" + keys + access).start()
    from .teams import Tokens, claims

    status, body = Tokens(srv).get("robot$builder", secret, ["repository:ci/app:push"])
    assert status == 200 and claims(body["token"])["access"][0]["actions"] == ["push"]
    assert Tokens(srv).get("robot$builder", secret + "x")[0] == 401
    r = soko("registry", "robot-secret", "Bad Name", "--namespace", "ci", check=False)
    assert r.returncode == 2 and "invalid robot name" in r.stderr
