"""The registry client: push, pull, copy, login, logout.

The CLI is synchronous; these wrap the async implementations with
asyncio.run. Progress goes to a callback (`ProgressEvent`), errors are
`ClientError` subclasses with one-line messages.
"""
from __future__ import annotations

from storage.images import ImageStore
from storage.model import Platform

from .errors import ClientError
from .options import ClientOptions, CopyResult, Progress, ProgressEvent, PullResult, PushResult, no_progress
from .tasks import run_sync

__all__ = ["push", "pull", "copy", "login", "logout", "search", "ClientOptions", "ProgressEvent", "PushResult",
           "PullResult", "CopyResult", "ClientError"]


def push(store: ImageStore, src_ref: str, dest_ref: str | None = None, options: ClientOptions | None = None,
         progress: Progress = no_progress) -> PushResult:
    """Upload the local image `src_ref` as `dest_ref` (default: `src_ref` itself)."""
    from .pushing import push_async
    return run_sync(push_async(store, src_ref, dest_ref, options, progress))


def pull(store: ImageStore, ref: str, platform: Platform | None = None, options: ClientOptions | None = None,
         progress: Progress = no_progress) -> PullResult:
    """Download `ref` (for `platform`, default this machine's) into the store and tag it."""
    from .pulling import pull_async
    return run_sync(pull_async(store, ref, platform, options, progress))


def copy(src: str, dst: str, options: ClientOptions | None = None, progress: Progress = no_progress,
         store: ImageStore | None = None, platform: Platform | None = None) -> CopyResult:
    """Copy between docker://REF, oci-archive:FILE[:REF], docker-archive:FILE[:REF] and soko:REF
    (`store` is the local store, needed for soko:)."""
    from .copying import copy_async
    return run_sync(copy_async(src, dst, options, progress, store, platform))


def login(registry: str, user: str, password: str, options: ClientOptions | None = None) -> str:
    """Check the credentials against the registry, then store them; returns where they went."""
    from .logins import login_async
    return run_sync(login_async(registry, user, password, options))


def logout(registry: str, options: ClientOptions | None = None) -> bool:
    """Forget the registry's credentials; False when there were none."""
    from .logins import logout_sync
    return logout_sync(registry, options)


def search(term: str, limit: int = 25, options: ClientOptions | None = None) -> list:
    """Search HOST/TERM (a registry's /v1/search); returns SearchResults."""
    from .searching import search_async
    return run_sync(search_async(term, limit, options))
