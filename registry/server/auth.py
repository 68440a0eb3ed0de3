"""Basic authentication against an htpasswd file of bcrypt entries
(`htpasswd -B` writes `$2y$`), as distribution's htpasswd auth does.

bcrypt is slow on purpose, which a hostile client can turn against everyone:
- a verified `Authorization` value is remembered (by its SHA-256, never in
  clear) until the file changes, so an authenticated client pays once;
- a refused one is remembered for FAILED_FOR seconds, so repeating it costs
  nothing;
- checks run on a pool of their own (never the one disk I/O uses), one at a
  time per client, with at most `max_pending` queued per client (past that,
  429): a client's flood of bad passwords delays that client only;
- an unknown user is checked against a dummy hash of the usual cost, and a
  password bcrypt cannot take (over 72 bytes) too, so the time of a refusal
  does not tell whether the user exists.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt

from ..errors import APIError, ConfigError
from .admission import too_many

_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
_RECHECK = 1.0  # seconds between looks at the file's mtime
_CACHE_MAX = 4096
FAILED_FOR = 5.0  # seconds a refused Authorization value is answered from memory
BCRYPT_MAX = 72  # bytes of password bcrypt looks at
CHECK_THREADS = 2


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


def _dummy_hash(users: dict[str, bytes]) -> bytes:
    """A hash of the cost most entries use, to check unknown users against."""
    costs = Counter(h[4:6] for h in users.values() if h[4:6].isdigit())
    cost = int(costs.most_common(1)[0][0]) if costs else 5
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=min(max(cost, 4), 31)))


def _key(header: str) -> bytes:
    return hashlib.sha256(header.encode(errors="surrogateescape")).digest()


class BasicAuth:
    def __init__(self, path: str, realm: str, max_pending: int = 8):
        self.path = Path(path)
        self.realm = realm
        self.max_pending = max_pending
        self.users = load_htpasswd(self.path)
        self._dummy = _dummy_hash(self.users)
        self._mtime = self._stat()
        self._checked_at = time.monotonic()
        self._ok: dict[bytes, str] = {}  # sha256(Authorization) -> user
        self._failed: dict[bytes, float] = {}  # sha256(Authorization) -> refused until (monotonic)
        self._pending: Counter[str] = Counter()  # client -> checks queued or running
        self._turns: dict[str, asyncio.Lock] = {}  # client -> one check at a time
        self._pool = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="soko-bcrypt")

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
                users = load_htpasswd(self.path)
            except ConfigError:
                return  # keep serving with the last good file
            self.users, self._dummy = users, _dummy_hash(users)
            self._mtime = mtime
            self._ok.clear()
            self._failed.clear()

    def challenge(self, message: str = "authentication required") -> APIError:
        return APIError("UNAUTHORIZED", message,
                        headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    def cached_user(self, header: str | None) -> str | None:
        """The user of an Authorization value verified before (fast path, on the loop)."""
        if not header:
            return None
        self._maybe_reload()
        return self._ok.get(_key(header))

    def _refused_recently(self, key: bytes) -> bool:
        until = self._failed.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._failed[key]
        return False

    async def authenticate(self, header: str | None, client: str) -> str:
        """The user named by `header` (UNAUTHORIZED, or TOOMANYREQUESTS for a client with too many checks queued)."""
        user = self.cached_user(header)
        if user is not None:
            return user
        if not header:
            raise self.challenge()
        key = _key(header)
        if self._refused_recently(key):
            raise self.challenge("invalid username or password")
        if self._pending[client] >= self.max_pending:
            raise too_many("too many password checks")
        self._pending[client] += 1
        turn = self._turns.setdefault(client, asyncio.Lock())
        try:
            async with turn:
                user = self._ok.get(key)  # the same value may have been checked while this one waited
                if user is not None:
                    return user
                if self._refused_recently(key):
                    raise self.challenge("invalid username or password")
                try:
                    user = await asyncio.get_running_loop().run_in_executor(self._pool, self.verify, header)
                except APIError:
                    if len(self._failed) >= _CACHE_MAX:
                        self._failed.clear()
                    self._failed[key] = time.monotonic() + FAILED_FOR
                    raise
                if len(self._ok) >= _CACHE_MAX:
                    self._ok.clear()
                self._ok[key] = user
                return user
        finally:
            self._pending[client] -= 1
            if self._pending[client] <= 0:
                del self._pending[client]
                self._turns.pop(client, None)

    def verify(self, header: str) -> str:
        """(worker thread) The user named by a Basic Authorization value, or UNAUTHORIZED."""
        if not header[:6].lower() == "basic ":
            raise self.challenge()
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self.challenge("malformed credentials") from None
        user, sep, password = decoded.partition(":")
        secret = password.encode()
        hashed = self.users.get(user) if sep else None
        usable = hashed is not None and len(secret) <= BCRYPT_MAX
        try:  # always one bcrypt check, the same cost whether the user exists or not
            ok = bcrypt.checkpw(secret if usable else secret[:BCRYPT_MAX], hashed if usable else self._dummy)
        except ValueError:  # e.g. a NUL byte bcrypt refuses
            ok = False
        if not (ok and usable):
            raise self.challenge("invalid username or password")
        return user

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
