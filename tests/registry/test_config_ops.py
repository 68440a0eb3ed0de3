"""[metrics], [[notifications.endpoints]] and [proxy] in the TOML config: every
key read, and each bad value an error naming the file, line and key."""
from __future__ import annotations

import pytest

from registry.errors import ConfigError
from registry.server.config import ServerConfig, flag_overrides

from .teams import bcrypt_hash

HASH = bcrypt_hash("pw")

EXAMPLE = f'''\
[users]
alice = "{HASH}"

[metrics]
access = "alice"

[[notifications.endpoints]]
name = "ci-hook"
url = "http://127.0.0.1:9000/events"
headers = {{ Authorization = ["Bearer abc"], X-Extra = ["1", "2"] }}
timeout = "5s"
threshold = 5
backoff = "1s"
ignoredmediatypes = ["application/octet-stream"]
ignore = {{ mediatypes = ["text/plain"], actions = ["pull"] }}

[[notifications.endpoints]]
name = "off"
url = "https://hooks.example/x"
disabled = true

[proxy]
remoteurl = "https://registry-1.docker.io"
username = "me"
password = "secret"
ttl = "1h"

[[proxy.upstreams]]
namespace = "quay"
remoteurl = "https://quay.io"
ttl = "10m"

[[proxy.upstreams]]
namespace = "mirrors/ghcr"
remoteurl = "http://127.0.0.1:5001"
username = "u"
password = "p"
'''


def test_the_sections_load(tmp_path):
    path = tmp_path / "ops.toml"
    path.write_text(EXAMPLE)
    cfg = ServerConfig.from_file(path)
    assert cfg.metrics.account == "alice" and cfg.metrics.enabled
    hook, off = cfg.notifications.endpoints
    assert (hook.name, hook.timeout, hook.threshold, hook.backoff) == ("ci-hook", 5, 5, 1)
    assert hook.headers == {"Authorization": ["Bearer abc"], "X-Extra": ["1", "2"]}
    assert hook.ignores("push", "application/octet-stream") and hook.ignores("push", "text/plain")
    assert hook.ignores("pull", "application/vnd.oci.image.manifest.v1+json")
    assert not hook.ignores("push", "application/vnd.oci.image.manifest.v1+json")
    assert off.disabled and cfg.notifications.active == [hook]
    p = cfg.proxy
    assert (p.remoteurl, p.username, p.password, p.ttl) == ("https://registry-1.docker.io", "me", "secret", 3600)
    assert [(u.namespace, u.remoteurl, u.ttl) for u in p.upstreams] == [
        ("quay", "https://quay.io", 600), ("mirrors/ghcr", "http://127.0.0.1:5001", None)]
    flagged = ServerConfig.load(path, flag_overrides(proxy="http://127.0.0.1:7000"))
    assert flagged.proxy.remoteurl == "http://127.0.0.1:7000" and flagged.proxy.username == "me"
    assert ServerConfig.load(None, flag_overrides(proxy="http://127.0.0.1:7000")).proxy.ttl == 300


def test_defaults_when_absent(tmp_path):
    cfg = ServerConfig.from_dict({})
    assert not cfg.metrics.enabled and cfg.notifications.endpoints == [] and cfg.proxy is None
    assert ServerConfig.from_dict({"metrics": {}}).metrics.access == "open"


EP = '[[notifications.endpoints]]\nname = "h"\nurl = "http://127.0.0.1:1/x"\n'
BAD = [
    ('[metrics]\naccess = "carol"\n', 2, 'metrics.access: unknown account \'carol\''),
    ('[metrics]\naccess = 5\n', 2, "metrics.access: expected a string, got an integer"),
    ('[[notifications.endpoints]]\nurl = "http://127.0.0.1:1/x"\n', 1, "notifications.endpoints[1].name: required"),
    ('[[notifications.endpoints]]\nname = "h"\n', 1, "notifications.endpoints[1].url: required"),
    ('[[notifications.endpoints]]\nname = "h"\nurl = "ftp://x/y"\n', 3,
     "notifications.endpoints[1].url: not an http(s) URL: 'ftp://x/y'"),
    (EP + 'headers = { Authorization = "Bearer x" }\n', 4,
     "notifications.endpoints[1].headers.Authorization: expected an array, got a string"),
    (EP + 'headers = { "Bad Name" = ["x"] }\n', 4,
     "notifications.endpoints[1].headers.\"Bad Name\": invalid header name 'Bad Name'"),
    (EP + 'timeout = "soon"\n', 4, "notifications.endpoints[1].timeout: invalid duration 'soon'"),
    (EP + 'timeout = 0\n', 4, "notifications.endpoints[1].timeout: must be > 0"),
    (EP + 'threshold = -1\n', 4, "notifications.endpoints[1].threshold: must be >= 0"),
    (EP + 'threshold = "5"\n', 4, "notifications.endpoints[1].threshold: expected an integer, got a string"),
    (EP + 'backoff = "1 sec"\n', 4, "notifications.endpoints[1].backoff: invalid duration '1 sec'"),
    (EP + 'ignoredmediatypes = "a/b"\n', 4,
     "notifications.endpoints[1].ignoredmediatypes: expected an array, got a string"),
    (EP + 'ignore = { actions = ["pull", "fly"] }\n', 4,
     "notifications.endpoints[1].ignore.actions[2]: unknown action 'fly'"),
    (EP + '[notifications.endpoints.ignore]\nmediatypes = [1]\n', 5,
     "notifications.endpoints[1].ignore.mediatypes[1]: expected a string, got an integer"),
    (EP + 'disabled = "no"\n', 4, "notifications.endpoints[1].disabled: expected true or false, got a string"),
    (EP + 'retries = 3\n', 4, "notifications.endpoints[1].retries: unknown key 'retries'"),
    (EP + "\n" + EP, 6, "notifications.endpoints[2].name: another endpoint is named 'h'"),
    ('[proxy]\nremoteurl = "registry-1.docker.io"\n', 2, "proxy.remoteurl: not an http(s) URL"),
    ('[proxy]\nremoteurl = "https://quay.io/v2/"\n', 2,
     "proxy.remoteurl: want the registry's base URL (scheme://host[:port]), not 'https://quay.io/v2/'"),
    ('[proxy]\nremoteurl = "http://h:99999"\n', 2, "proxy.remoteurl: not a URL"),
    ('[proxy]\nremoteurl = "https://quay.io"\nusername = "me"\n', 1, "proxy.password: username and password go"),
    ('[proxy]\nremoteurl = "https://quay.io"\nttl = "forever"\n', 3, "proxy.ttl: invalid duration 'forever'"),
    ('[proxy]\nttl = "1h"\n', 1, "proxy.remoteurl: give remoteurl, [[proxy.upstreams]] or both"),
    ('[[proxy.upstreams]]\nnamespace = "hub/*"\nremoteurl = "https://r.example"\n', 2,
     "proxy.upstreams[1].namespace: a namespace is a name prefix such as 'hub'"),
    ('[[proxy.upstreams]]\nnamespace = "Hub"\nremoteurl = "https://r.example"\n', 2,
     "proxy.upstreams[1].namespace: "),
    ('[[proxy.upstreams]]\nnamespace = "hub"\n', 1, "proxy.upstreams[1].remoteurl: required"),
    ('[[proxy.upstreams]]\nnamespace = "hub"\nremoteurl = "https://a.example"\npassword = "p"\n', 1,
     "proxy.upstreams[1].username: username and password go together"),
    ('[[proxy.upstreams]]\nnamespace = "hub"\nremoteurl = "https://a.example"\nttl = true\n', 4,
     "proxy.upstreams[1].ttl: expected a duration"),
    ('[[proxy.upstreams]]\nnamespace = "hub"\nremoteurl = "https://a.example"\n\n'
     '[[proxy.upstreams]]\nnamespace = "hub"\nremoteurl = "https://b.example"\n', 6,
     "proxy.upstreams[2].namespace: another upstream serves namespace 'hub'"),
]


@pytest.mark.parametrize("text,line,message", BAD, ids=[f"{i}-{b[2].split(':')[0]}" for i, b in enumerate(BAD)])
def test_bad_values_name_file_line_and_key(tmp_path, text, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        ServerConfig.from_file(path)
    assert str(ei.value).startswith(f"{path}:{line}: {message}"), str(ei.value)


def test_a_bad_proxy_flag_is_named_as_a_flag():
    with pytest.raises(ConfigError, match=r"^proxy\.remoteurl \(from the command line\): not an http\(s\) URL"):
        ServerConfig.load(None, flag_overrides(proxy="quay.io"))


def test_a_bad_section_starts_nothing(soko, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(f'root = "{tmp_path}/root"\naddr = "127.0.0.1:0"\n' + EP + 'timeout = "x"\n')
    r = soko("serve", "--config", path, check=False, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == \
        f"soko: {path}:6: notifications.endpoints[1].timeout: invalid duration 'x' (want e.g. 30s, 5m, 24h, 1h30m)"
    assert not (tmp_path / "root").exists()
