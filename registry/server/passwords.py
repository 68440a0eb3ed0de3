"""Checking passwords (bcrypt, as `htpasswd -B` writes them) without letting
a hostile client turn bcrypt's slowness against everyone:
- a verified `Authorization` value is remembered (by its SHA-256, never in
  clear) until the accounts change, so an authenticated client pays once;
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
from .accounts import Account, Directory
from .admission import too_many

_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
_CACHE_MAX = 4096
FAILED_FOR = 5.0  # seconds a refused Authorization value is answered from memory
BCRYPT_MAX = 72  # bytes of password bcrypt looks at
CHECK_THREADS = 2


def is_bcrypt(hashed: str | bytes) -> bool:
    h = hashed.encode() if isinstance(hashed, str) else hashed
    return h.startswith(_BCRYPT_PREFIXES) and len(h) == 60


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


def hash_secret(secret: str, rounds: int = 10) -> str:
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def _dummy_hash(hashes: list[bytes]) -> bytes:
    """A hash of the cost most entries use, to check unknown users against."""
    costs = Counter(h[4:6] for h in hashes if h[4:6].isdigit())
    cost = int(costs.most_common(1)[0][0]) if costs else 5
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=min(max(cost, 4), 31)))


def _key(header: str) -> bytes:
    return hashlib.sha256(header.encode(errors="surrogateescape")).digest()


def basic_value(user: str, password: str) -> str:
    """The Basic Authorization value of a user and password (the token endpoint's
    POST form is checked through the same cache)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode(errors="surrogateescape")).decode()


class PasswordChecker:
    """Basic Authorization values -> accounts, throttled as the module says."""

    def __init__(self, directory: Directory, max_pending: int = 8):
        self.directory = directory
        self.max_pending = max_pending
        self._dummy = _dummy_hash(directory.hashes())
        self._generation = directory.generation
        self._ok: dict[bytes, Account] = {}  # sha256(Authorization) -> account
        self._failed: dict[bytes, float] = {}  # sha256(Authorization) -> refused until (monotonic)
        self._pending: Counter[str] = Counter()  # client -> checks queued or running
        self._turns: dict[str, asyncio.Lock] = {}  # client -> one check at a time
        self._pool = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="soko-bcrypt")

    def _sync(self) -> None:
        self.directory.refresh()
        if self.directory.generation != self._generation:
            self._generation = self.directory.generation
            self._dummy = _dummy_hash(self.directory.hashes())
            self._ok.clear()
            self._failed.clear()

    def cached(self, header: str | None) -> Account | None:
        """The account of an Authorization value verified before (fast path, on the loop)."""
        if not header:
            return None
        self._sync()
        account = self._ok.get(_key(header))
        if account is not None and account.expired():
            return None
        return account

    def _refused_recently(self, key: bytes) -> bool:
        until = self._failed.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._failed[key]
        return False

    async def check(self, header: str, client: str) -> tuple[Account, bool]:
        """The account a Basic value names and whether bcrypt ran for it now
        (UNAUTHORIZED when refused, TOOMANYREQUESTS for a client with too many checks queued)."""
        account = self.cached(header)
        if account is not None:
            return account, False
        key = _key(header)
        if self._refused_recently(key):
            raise APIError("UNAUTHORIZED", "invalid username or password")
        if self._pending[client] >= self.max_pending:
            raise too_many("too many password checks")
        self._pending[client] += 1
        turn = self._turns.setdefault(client, asyncio.Lock())
        try:
            async with turn:
                account = self._ok.get(key)  # the same value may have been checked while this one waited
                if account is not None and not account.expired():
                    return account, False
                if self._refused_recently(key):
                    raise APIError("UNAUTHORIZED", "invalid username or password")
                try:
                    account = await asyncio.get_running_loop().run_in_executor(self._pool, self.verify, header)
                except APIError:
                    if len(self._failed) >= _CACHE_MAX:
                        self._failed.clear()
                    self._failed[key] = time.monotonic() + FAILED_FOR
                    raise
                if len(self._ok) >= _CACHE_MAX:
                    self._ok.clear()
                self._ok[key] = account
                return account, True
        finally:
            self._pending[client] -= 1
            if self._pending[client] <= 0:
                del self._pending[client]
                self._turns.pop(client, None)

    def verify(self, header: str) -> Account:
        """(worker thread) The account a Basic Authorization value names, or UNAUTHORIZED."""
        if not header[:6].lower() == "basic ":
            raise APIError("UNAUTHORIZED", "authentication required")
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise APIError("UNAUTHORIZED", "malformed credentials") from None
        user, sep, password = decoded.partition(":")
        secret = password.encode()
        found = self.directory.find(user) if sep else None
        usable = found is not None and len(secret) <= BCRYPT_MAX
        try:  # always one bcrypt check, the same cost whether the user exists or not
            ok = bcrypt.checkpw(secret if usable else secret[:BCRYPT_MAX], found[1] if usable else self._dummy)
        except ValueError:  # e.g. a NUL byte bcrypt refuses
            ok = False
        if not (ok and usable):
            raise APIError("UNAUTHORIZED", "invalid username or password")
        account = found[0]
        if account.expired():
            raise APIError("UNAUTHORIZED", f"account {account.name} has expired")
        return account

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
