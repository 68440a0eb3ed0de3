"""Credentials shared with Docker: `config.json` in $DOCKER_CONFIG or ~/.docker.

Lookup order is Docker's: `credHelpers[host]`, else `credsStore`, else the
`auths` entry (`auth` = base64 "user:password", `identitytoken`). Helpers
are the `docker-credential-NAME` programs: `get` and `erase` read the server
URL on stdin, `store` reads {"ServerURL", "Username", "Secret"}; a Username
of "<token>" means the secret is an identity (refresh) token.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import CredentialsError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
TOKEN_USER = "<token>"
_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Credentials:
    """A user and password for one registry, or an identity token in place of the password."""
    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


def config_dir(override: Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def server_key(registry: str) -> str:
    """The key Docker files credentials under: the Hub's legacy URL, else the host."""
    host = normalize_host(registry)
    return DOCKER_HUB_KEY if host in _HUB_HOSTS else host


def normalize_host(entry: str) -> str:
    """`https://host:5000/v1/` -> `host:5000` (keys in config.json come in both forms)."""
    e = entry.strip()
    for prefix in ("https://", "http://"):
        if e.startswith(prefix):
            e = e[len(prefix):]
    return e.split("/", 1)[0].lower()


class CredentialStore:
    """Reads and writes one config.json (and the helpers it names)."""

    def __init__(self, directory: Path | None = None):
        self.dir = config_dir(directory)
        self.path = self.dir / "config.json"

    def _load(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise CredentialsError(f"cannot read {self.path}: {e.strerror}") from None
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except ValueError as e:
            raise CredentialsError(f"{self.path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{self.path}: expected a JSON object")
        return data

    def _save(self, data: dict) -> None:
        import tempfile  # only login and logout write: a pull or push need not import it (~1-2 ms)

        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".config.json.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent="\t")
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def helper_for(self, registry: str, data: dict | None = None) -> str | None:
        data = self._load() if data is None else data
        key = server_key(registry)
        helpers = data.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for k, name in helpers.items():
                if normalize_host(k) == normalize_host(key) and isinstance(name, str) and name:
                    return name
        store = data.get("credsStore")
        return store if isinstance(store, str) and store else None

    # -- reading -----------------------------------------------------------
    def get(self, registry: str) -> Credentials:
        """Credentials for `registry` (a host such as `localhost:5000` or `docker.io`);
        empty Credentials when none are configured."""
        data = self._load()
        key = server_key(registry)
        helper = self.helper_for(registry, data)
        if helper:
            creds = run_helper_get(helper, key)
            if creds is not None:
                return creds
        auths = data.get("auths") or {}
        if not isinstance(auths, dict):
            raise CredentialsError(f"{self.path}: 'auths' must be an object")
        want = normalize_host(key)
        entry = auths.get(key)
        if entry is None:
            entry = next((v for k, v in auths.items() if normalize_host(k) == want), None)
        if not isinstance(entry, dict):
            return Credentials()
        return _decode_entry(entry, key, self.path)

    # -- writing (login/logout) --------------------------------------------
    def store(self, registry: str, creds: Credentials) -> str:
        """File credentials as Docker does; returns where they went (for messages)."""
        data = self._load()
        key = server_key(registry)
        helper = self.helper_for(registry, data)
        if helper:
            user, secret = ((TOKEN_USER, creds.identity_token) if creds.identity_token
                            else (creds.username, creds.password))
            _run_helper(helper, "store", json.dumps({"ServerURL": key, "Username": user, "Secret": secret}))
            # Docker leaves an empty entry so that `auths` lists the registry.
            data.setdefault("auths", {})[key] = {}
            self._save(data)
            return f"credential helper docker-credential-{helper}"
        entry: dict = {"auth": base64.b64encode(f"{creds.username}:{creds.password if not creds.identity_token else ''}"
                                                .encode()).decode()}
        if creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        auths = data.setdefault("auths", {})
        for k in [k for k in auths if normalize_host(k) == normalize_host(key) and k != key]:
            del auths[k]
        auths[key] = entry
        self._save(data)
        return str(self.path)

    def erase(self, registry: str) -> bool:
        """Forget credentials for `registry`; False when there were none."""
        data = self._load()
        key = server_key(registry)
        helper = self.helper_for(registry, data)
        found = False
        if helper:
            try:
                _run_helper(helper, "erase", key)
                found = True
            except CredentialsError as e:
                if "not found" not in str(e).lower():
                    raise
        auths = data.get("auths") or {}
        stale = [k for k in auths if normalize_host(k) == normalize_host(key)]
        for k in stale:
            del auths[k]
        if stale:
            found = True
            self._save(data)
        return found


def _decode_entry(entry: dict, key: str, path: Path) -> Credentials:
    user = entry.get("username") or ""
    password = entry.get("password") or ""
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            raise CredentialsError(f"{path}: the auth entry for {key} is not base64 'user:password'") from None
        if ":" not in decoded:
            raise CredentialsError(f"{path}: the auth entry for {key} is not base64 'user:password'")
        user, password = decoded.split(":", 1)
    token = entry.get("identitytoken") or ""
    return Credentials(user, password, token)


def _run_helper(name: str, action: str, stdin: str) -> str:
    prog = f"docker-credential-{name}"
    try:
        p = subprocess.run([prog, action], input=stdin.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {prog} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {prog} {action} timed out") from None
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode != 0:
        msg = out or p.stderr.decode(errors="replace").strip() or f"exit status {p.returncode}"
        raise CredentialsError(f"{prog} {action}: {msg.splitlines()[0]}")
    return out


def run_helper_get(name: str, server_url: str) -> Credentials | None:
    """Ask `docker-credential-NAME get`; None when it has nothing for the server."""
    try:
        out = _run_helper(name, "get", server_url)
    except CredentialsError as e:
        if "credentials not found" in str(e).lower():
            return None
        raise
    try:
        obj = json.loads(out)
    except ValueError:
        raise CredentialsError(f"docker-credential-{name} get: output is not JSON") from None
    if not isinstance(obj, dict):
        raise CredentialsError(f"docker-credential-{name} get: output is not a JSON object")
    user, secret = obj.get("Username") or "", obj.get("Secret") or ""
    if user == TOKEN_USER:
        return Credentials(identity_token=secret)
    return Credentials(user, secret)
