"""Image references, normalized as Docker does.

`busybox` is `docker.io/library/busybox:latest`; `localhost:5000/team/app:1.2`,
`name@sha256:...` and `name:tag@sha256:...` are all accepted. `familiar()`
gives the short form Docker shows (`busybox`, `team/app`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import digests
from .errors import DigestError, InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"

# The distribution-spec's grammar, ASCII only and matched whole (fullmatch):
# `\w` would take any Unicode letter or digit and `$` a trailing newline.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """An image reference (`[domain/]path[:tag][@digest]`), normalized as Docker does."""
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        if self.domain == DEFAULT_DOMAIN:
            return self.path[len(OFFICIAL_PREFIX):] if self.path.startswith(OFFICIAL_PREFIX) else self.path
        return self.name

    def familiar(self) -> str:
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str | None) -> "Reference":
        return Reference(self.domain, self.path, tag, None)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def validate_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise InvalidReference(f"invalid tag {tag!r}")
    return tag


def validate_repository(path: str) -> str:
    """A repository path as the distribution spec allows it (no domain)."""
    if len(path) > MAX_NAME or not PATH_RE.fullmatch(path):
        raise InvalidReference(f"invalid repository name {path!r}")
    return path


def parse(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse and normalize; a reference without tag or digest gets `default_tag`."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        try:
            digests.parse(digest)
        except DigestError as e:
            raise InvalidReference(f"invalid reference {text!r}: {e}") from None
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid reference {text!r}: bad tag {tag!r}")
    first, _, remainder = rest.partition("/")
    # As Docker's daemon does: only a `.`, a `:` or `localhost` make a registry
    # name; `UPPER/case` is a repository on Docker Hub, and not lowercase.
    if remainder and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN_RE.fullmatch(first):
            raise InvalidReference(f"invalid reference {text!r}: bad registry {first!r}")
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if path != path.lower() and PATH_RE.fullmatch(path.lower()):
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    if not PATH_RE.fullmatch(path) or len(domain) + 1 + len(path) > MAX_NAME:
        raise InvalidReference(f"invalid reference format: {text!r}")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)
