"""What callers pass in (options) and get back (progress events, results)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MiB = 1024 * 1024


@dataclass
class ClientOptions:
    """Knobs of one push/pull/copy/login; the defaults suit a CLI user."""
    insecure: bool = False          # plain HTTP and unverified TLS allowed for every registry
    jobs: int = 4                   # blobs transferred at once
    ca_file: str | None = None      # extra CA bundle to trust (PEM)
    docker_config: Path | None = None  # directory of config.json (default $DOCKER_CONFIG, ~/.docker)
    monolithic_max: int = 32 * MiB  # blobs up to this size are uploaded with one PUT
    chunk_size: int = 64 * MiB      # PATCH size for larger blobs
    retries: int = 5                # attempts after the first, per request
    backoff: float = 0.5            # first retry delay in seconds, doubled each time
    max_backoff: float = 30.0       # no single wait (Retry-After included) is longer
    connect_timeout: float = 30.0
    read_timeout: float = 300.0     # silence on an open connection before it counts as dropped
    all_platforms: bool = True      # copy: an index travels with all its children
    direct_io: bool = True          # pulled blobs bypass the page cache (O_DIRECT) where possible
    compression: str = "gzip"       # push: how uncompressed layers travel (gzip, zstd or none)
    compression_level: int | None = None  # push: that compressor's level (None: its default)
    user_agent: str = "soko/0.1"
    transport: str = "stdlib"       # how the bytes travel: "stdlib" (http.client in threads) or "aiohttp"


@dataclass
class ProgressEvent:
    """One step of one blob (or manifest), for the CLI to draw.

    `id` is the short digest (12 hex digits) Docker shows, `action` one of
    Waiting, Preparing (compressing), Pushing, Pushed, Layer already exists,
    Mounted from NAME (push),
    Waiting, Downloading, Pull complete, Already exists (pull); `current` and
    `total` are bytes. Only layers are reported, as Docker does (not configs).
    A retried transfer shows `current` going back to where it resumes."""
    id: str
    action: str
    current: int = 0
    total: int | None = None
    digest: str = ""


Progress = Callable[[ProgressEvent], None]


def no_progress(_: ProgressEvent) -> None:
    pass


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@dataclass
class PushResult:
    """What a push did: where the image went and what became of each blob."""
    reference: str        # where it went, e.g. localhost:5000/team/app:1.2
    digest: str           # the manifest (or index) digest
    size: int             # manifest size in bytes (Docker prints it)
    pushed: list[str] = field(default_factory=list)    # blobs uploaded
    skipped: list[str] = field(default_factory=list)   # blobs the registry had
    mounted: list[str] = field(default_factory=list)   # blobs mounted from another repository


@dataclass
class PullResult:
    """What a pull did: the manifest (and index) it stored and which blobs it fetched."""
    reference: str        # the normalized reference pulled
    digest: str           # the image manifest digest stored and tagged
    index_digest: str | None  # the index the manifest was chosen from, if any
    image_id: str         # the config digest
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


@dataclass
class CopyResult:
    """What a copy did: from where, to where, and the top manifest's digest."""
    source: str
    destination: str
    digest: str           # the top-level manifest (or index) digest
