"""Basic authentication against an htpasswd file of bcrypt entries
(`htpasswd -B` writes `$2y$`), as distribution's htpasswd auth does.

bcrypt is slow on purpose, so a verified `Authorization` value is remembered
(by its SHA-256, never in clear) until the file changes; the check itself
runs off the event loop.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from pathlib import Path

import bcrypt

from ..errors import APIError, ConfigError

_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
_RECHECK = 1.0  # seconds between looks at the file's mtime
_CACHE_MAX = 4096


def load_htpasswd(path: str | os.PathLike) -> dict[str, bytes]:
    """user -> bcrypt hash; other hash kinds are refused (distribution only knows bcrypt)."""
    users: dict[str, bytes] = {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read htpasswd file {path}: {e.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"{path}:{lineno}: not a `user:hash` line")
        h = hashed.encode()
        if not h.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(f"{path}:{lineno}: user {user!r} has no bcrypt hash (use htpasswd -B)")
        users[user] = h
    return users


class BasicAuth:
    def __init__(self, path: str, realm: str):
        self.path = Path(path)
        self.realm = realm
        self.users = load_htpasswd(self.path)
        self._mtime = self._stat()
        self._checked_at = time.monotonic()
        self._ok: dict[bytes, str] = {}  # sha256(Authorization) -> user

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < _RECHECK:
            return
        self._checked_at = now
        mtime = self._stat()
        if mtime != self._mtime:
            try:
                self.users = load_htpasswd(self.path)
            except ConfigError:
                return  # keep serving with the last good file
            self._mtime = mtime
            self._ok.clear()

    def challenge(self, message: str = "authentication required") -> APIError:
        return APIError("UNAUTHORIZED", message,
                        headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    def cached_user(self, header: str | None) -> str | None:
        """The user of an Authorization value verified before (fast path, on the loop)."""
        if not header:
            return None
        self._maybe_reload()
        return self._ok.get(hashlib.sha256(header.encode()).digest())

    def verify(self, header: str | None) -> str:
        """(worker thread) The user named by a Basic Authorization value, or UNAUTHORIZED."""
        if not header or not header[:6].lower() == "basic ":
            raise self.challenge()
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise self.challenge("malformed credentials") from None
        user, sep, password = decoded.partition(":")
        hashed = self.users.get(user)
        if not sep or hashed is None or not bcrypt.checkpw(password.encode(), hashed):
            raise self.challenge("invalid username or password")
        if len(self._ok) >= _CACHE_MAX:
            self._ok.clear()
        self._ok[hashlib.sha256(header.encode()).digest()] = user
        return user
