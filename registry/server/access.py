"""Authorization: the one place that answers "may account A do action X on
repository R" (`AccessControl.actions`/`may`), for the registry's handlers,
its token endpoint and anything else that serves the same accounts.

Rules (`[[access]]`) are read top to bottom. For a signed-in account, the
first rule whose `account` is the account itself or one of its groups
(`group:NAME`) and whose repository glob matches decides what it may do;
besides, whatever the first matching `anonymous` rule allows, everyone may
do. No matching rule: nothing. A robot never reaches outside its namespaces
(beyond what anonymous may), and `readers` never get more than pull.

Without any rule: with no accounts (and no token auth) the registry is open;
with accounts, every signed-in account may do everything and anonymous nothing
(what soko's htpasswd mode always did).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .accounts import Account, Directory
from .config import ACTIONS, ANONYMOUS, GROUP_PREFIX, AccessRule, ServerConfig, namespace_of
from .globs import compile_glob
from .tokens import Scope

ALL = frozenset(ACTIONS)
NONE: frozenset[str] = frozenset()
PULL = frozenset({"pull"})
CATALOG_ACTIONS = ("*", "search")  # what registry:catalog may be asked for


@dataclass(frozen=True)
class _Rule:
    account: str
    pattern: object  # compiled glob
    actions: frozenset[str]

    def covers(self, repository: str) -> bool:
        return self.pattern.match(repository) is not None


class AccessControl:
    def __init__(self, config: ServerConfig, directory: Directory):
        self.directory = directory
        self.rules = [_rule(r) for r in config.access]
        self.readers = frozenset(config.readers)
        # nobody to tell apart and no rule: everyone may do everything (tokens always decide for themselves)
        self.open = not config.has_accounts and not self.rules and config.token is None

    def _first(self, identities: set[str], repository: str) -> frozenset[str]:
        for rule in self.rules:
            if rule.account in identities and rule.covers(repository):
                return rule.actions
        return NONE

    def actions(self, account: Account, repository: str) -> frozenset[str]:
        """What `account` may do on `repository`: a subset of pull, push, delete."""
        if self.open:
            return ALL
        if not self.rules:
            own = NONE if account.anonymous else ALL
            anyone = NONE
        else:
            anyone = self._first({ANONYMOUS}, repository)
            if account.anonymous:
                return anyone
            identities = {account.name} | {GROUP_PREFIX + g for g in account.groups}
            own = self._first(identities, repository)
        if account.namespaces and namespace_of(repository) not in account.namespaces:
            own = NONE
        if account.name in self.readers:
            own &= PULL
        return own | anyone

    def may(self, account: Account, action: str, repository: str) -> bool:
        return action in self.actions(account, repository)

    def visible(self, account: Account, repositories: Iterable[str]) -> list[str]:
        """The repositories `account` may pull (catalog, search)."""
        return [r for r in repositories if "pull" in self.actions(account, r)]

    def grant(self, account: Account, scopes: Iterable[Scope]) -> list[dict]:
        """The `access` claim of a token for `account` asking for `scopes`: each
        asked action it may do, nothing more (a push without push rights gets pull)."""
        merged: dict[tuple[str, str], set[str]] = {}
        for s in scopes:
            if s.type == "repository":
                allowed = self.actions(account, s.name)
                if "*" in s.actions:
                    got = {"*"} if allowed == ALL else set(allowed)
                else:
                    got = set(s.actions) & allowed
            elif s.type == "registry" and s.name == "catalog":
                got = set(s.actions) & set(CATALOG_ACTIONS)  # listings are filtered per account instead
            else:
                got = set()
            if got:
                merged.setdefault((s.type, s.name), set()).update(got)
        return [{"type": t, "name": n, "actions": sorted(a)} for (t, n), a in merged.items()]


def _rule(r: AccessRule) -> _Rule:
    return _Rule(r.account, compile_glob(r.repository), r.granted)
