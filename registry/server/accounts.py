"""Who the registry knows: users ([users] and the htpasswd file), robots and
groups. The htpasswd file is re-read when it changes (the last good version
stays in use when the new one is broken), as distribution does."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .config import ANONYMOUS, ServerConfig

_RECHECK = 1.0  # seconds between looks at the htpasswd file's mtime


@dataclass(frozen=True)
class Account:
    """A caller: a user, a robot, or anonymous (name "anonymous")."""
    name: str
    kind: str  # "user" | "robot" | "anonymous"
    groups: frozenset[str] = frozenset()
    namespaces: tuple[str, ...] = ()  # robots: the only namespaces they may touch
    expires: float | None = None  # robots: epoch seconds

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) >= self.expires


ANONYMOUS_ACCOUNT = Account(ANONYMOUS, "anonymous")


class Directory:
    """Account lookups by name, with each account's bcrypt hash."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.generation = 0  # bumped when the accounts change (caches of checked passwords drop)
        self._path = Path(config.htpasswd) if config.htpasswd else None
        self._file_users: dict[str, bytes] = config.htpasswd_users()
        self._mtime = self._stat()
        self._checked_at = time.monotonic()
        self._member_of: dict[str, set[str]] = {}
        for group, members in config.groups.items():
            for m in members:
                self._member_of.setdefault(m, set()).add(group)

    def _stat(self) -> float:
        try:
            return self._path.stat().st_mtime if self._path else 0.0
        except OSError:
            return 0.0

    def refresh(self) -> None:
        """Pick up a changed htpasswd file (at most once a second)."""
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked_at < _RECHECK:
            return
        self._checked_at = now
        mtime = self._stat()
        if mtime == self._mtime:
            return
        from .passwords import load_htpasswd

        try:
            users = load_htpasswd(self._path)
        except ConfigError:
            return  # keep serving with the last good file
        self._file_users, self._mtime = users, mtime
        self.generation += 1

    @property
    def empty(self) -> bool:
        return not (self.config.users or self.config.robots or self._file_users or self._path)

    def hashes(self) -> list[bytes]:
        return [h.encode() for h in self.config.users.values()] + list(self._file_users.values()) + \
            [r.secret.encode() for r in self.config.robots.values()]

    def find(self, name: str) -> tuple[Account, bytes] | None:
        """The account called `name` and its bcrypt hash."""
        robot = self.config.robots.get(name)
        if robot is not None:
            expires = robot.expires.timestamp() if robot.expires else None
            return Account(name, "robot", namespaces=tuple(robot.namespaces), expires=expires), robot.secret.encode()
        hashed = self.config.users.get(name)
        hashed_b = hashed.encode() if hashed is not None else self._file_users.get(name)
        if hashed_b is None:
            return None
        return Account(name, "user", groups=frozenset(self._member_of.get(name, ()))), hashed_b

    def account(self, name: str) -> Account | None:
        if name == ANONYMOUS:
            return ANONYMOUS_ACCOUNT
        found = self.find(name)
        return None if found is None else found[0]

    def fingerprint(self, name: str) -> str | None:
        """A short digest of the account's current hash: refresh tokens carry it, so
        a changed password (or a removed account) ends them."""
        found = self.find(name)
        if found is None:
            return None
        return hashlib.sha256(found[1]).hexdigest()[:16]
