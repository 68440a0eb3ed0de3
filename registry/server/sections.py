"""Config sections for running a registry in production: `[metrics]`,
`[[notifications.endpoints]]` and `[proxy]` (registry/CONFIG.md documents
every key). Each checks its own values; what needs the rest of the config
(a metrics account must exist) is checked by ServerConfig."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .configfile import ConfigProblem, Duration, Key

METRICS_OPEN, METRICS_OFF = "open", "off"
EVENT_ACTIONS = ("push", "pull", "delete", "mount")


@dataclass
class MetricsOptions:
    """`/metrics` for Prometheus: "open" to anyone, "off" (404), or only for
    the named account (Basic credentials or a token of that account)."""
    access: str = METRICS_OPEN

    @property
    def enabled(self) -> bool:
        return self.access != METRICS_OFF

    @property
    def account(self) -> str | None:
        return None if self.access in (METRICS_OPEN, METRICS_OFF) else self.access

    def check(self, key: Key) -> None:
        if not self.access:
            raise ConfigProblem((*key, "access"), 'want "open", "off" or an account name')


def check_url(url: str, key: Key, path_ok: bool = True) -> None:
    """An absolute http(s) URL with a host (and, unless `path_ok`, nothing after it)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as e:
        raise ConfigProblem(key, f"not a URL: {url!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigProblem(key, f"not an http(s) URL: {url!r}")
    if not path_ok and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ConfigProblem(key, f"want the registry's base URL (scheme://host[:port]), not {url!r}")


@dataclass
class IgnoreOptions:
    """distribution 2.8's `ignore`: events with these target media types or actions are not sent."""
    mediatypes: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def check(self, key: Key) -> None:
        for i, a in enumerate(self.actions):
            if a not in EVENT_ACTIONS:
                raise ConfigProblem((*key, "actions", i), f"unknown action {a!r} ({', '.join(EVENT_ACTIONS)})")


@dataclass
class Endpoint:
    """One webhook receiver, with distribution's keys."""
    name: str = ""
    url: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    timeout: Duration = 5.0  # one delivery attempt
    threshold: int = 5  # failures in a row before waiting `backoff` between attempts
    backoff: Duration = 1.0
    ignoredmediatypes: list[str] = field(default_factory=list)
    ignore: IgnoreOptions = field(default_factory=IgnoreOptions)
    disabled: bool = False

    def check(self, key: Key) -> None:
        for name in ("name", "url"):
            if not getattr(self, name):
                raise ConfigProblem((*key, name), "required")
        check_url(self.url, (*key, "url"))
        if self.timeout <= 0:
            raise ConfigProblem((*key, "timeout"), "must be > 0")
        if self.threshold < 0:
            raise ConfigProblem((*key, "threshold"), "must be >= 0")
        for header in self.headers:
            if not header or any(c in header for c in " :\r\n\t"):
                raise ConfigProblem((*key, "headers", header), f"invalid header name {header!r}")
            for i, v in enumerate(self.headers[header]):
                if "\n" in v or "\r" in v:
                    raise ConfigProblem((*key, "headers", header, i), "a header value cannot hold a line break")

    def ignores(self, action: str, media_type: str | None) -> bool:
        if action in self.ignore.actions:
            return True
        return media_type is not None and (media_type in self.ignoredmediatypes or media_type in self.ignore.mediatypes)


@dataclass
class NotificationOptions:
    endpoints: list[Endpoint] = field(default_factory=list)

    def check(self, key: Key) -> None:
        seen: set[str] = set()
        for i, e in enumerate(self.endpoints):
            if e.name in seen:
                raise ConfigProblem((*key, "endpoints", i, "name"), f"another endpoint is named {e.name!r}")
            seen.add(e.name)

    @property
    def active(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.disabled]


@dataclass
class Upstream:
    """A registry that repositories under `namespace` are pulled through from:
    `NAMESPACE/REPO` here is `REPO` there."""
    namespace: str = ""
    remoteurl: str = ""
    username: str | None = None
    password: str | None = None
    ttl: Duration | None = None  # tag freshness; default: the [proxy] ttl

    def check(self, key: Key) -> None:
        for name in ("namespace", "remoteurl"):
            if not getattr(self, name):
                raise ConfigProblem((*key, name), "required")
        if any(c in self.namespace for c in "*?[]"):
            raise ConfigProblem((*key, "namespace"), f"a namespace is a name prefix such as 'hub' (no glob: "
                                                     f"every repository under it is proxied), not {self.namespace!r}")
        from storage.errors import StorageError
        from storage.references import validate_repository

        try:
            validate_repository(self.namespace)
        except StorageError as e:
            raise ConfigProblem((*key, "namespace"), str(e)) from None
        check_remote(self, key)


def check_remote(opts: "Upstream | ProxyOptions", key: Key) -> None:
    if opts.remoteurl:
        check_url(opts.remoteurl, (*key, "remoteurl"), path_ok=False)
    if (opts.username is None) != (opts.password is None):
        raise ConfigProblem((*key, "username" if opts.username is None else "password"),
                            "username and password go together")
    if opts.ttl is not None and opts.ttl < 0:
        raise ConfigProblem((*key, "ttl"), "must be >= 0")


@dataclass
class ProxyOptions:
    """Pull-through cache: every repository from `remoteurl` (the repository
    names alike), and/or the repositories under each upstream's namespace."""
    remoteurl: str | None = None
    username: str | None = None
    password: str | None = None
    ttl: Duration = 300.0  # a cached tag younger than this is served without asking upstream
    upstreams: list[Upstream] = field(default_factory=list)

    def check(self, key: Key) -> None:
        check_remote(self, key)
        if not self.remoteurl and not self.upstreams:
            raise ConfigProblem((*key, "remoteurl"), "give remoteurl, [[proxy.upstreams]] or both")
        seen: set[str] = set()
        for i, u in enumerate(self.upstreams):
            if u.namespace in seen:
                raise ConfigProblem((*key, "upstreams", i, "namespace"),
                                    f"another upstream serves namespace {u.namespace!r}")
            seen.add(u.namespace)


@dataclass
class StorageOptions:
    """Where blobs live: the directory under the root (no `url`), or an S3 bucket."""
    url: str | None = None  # s3://BUCKET/PREFIX?endpoint=...&region=...
    access_key: str | None = None  # else AWS_ACCESS_KEY_ID, else ~/.aws/credentials
    secret_key: str | None = None
    redirect: bool = False  # answer blob GETs with 307 to a presigned URL
    part_size: int = 8 * 1024 * 1024  # S3 multipart part size (at least 5 MiB)

    def check(self, key: Key) -> None:
        if self.url is not None:
            if not self.url.startswith("s3://"):
                raise ConfigProblem((*key, "url"), f"want s3://BUCKET/PREFIX?endpoint=...&region=..., not {self.url!r}")
            from storage.content.s3 import parse_url
            from storage.errors import StorageError

            try:
                parse_url(self.url)
            except StorageError as e:
                raise ConfigProblem((*key, "url"), str(e)) from None
        elif self.redirect:
            raise ConfigProblem((*key, "redirect"), "redirects need S3 storage (url = \"s3://...\")")
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigProblem((*key, "access_key" if self.access_key is None else "secret_key"),
                                "access_key and secret_key go together")
        if self.part_size < 5 * 1024 * 1024:
            raise ConfigProblem((*key, "part_size"), "must be at least 5 MiB (S3's minimum part size)")


@dataclass
class MetadataOptions:
    """Where the registry keeps its metadata: absent, `metadata.db` (SQLite) in
    the root; `postgresql://USER[:PASSWORD]@HOST:PORT/DB`, a PostgreSQL database
    that several `soko serve` replicas may share (registry/METADATA.md)."""
    url: str | None = None

    def check(self, key: Key) -> None:
        if self.url is not None:
            from .metadb import check_url as check_metadata_url

            problem = check_metadata_url(self.url)
            if problem is not None:
                raise ConfigProblem((*key, "url"), problem)

