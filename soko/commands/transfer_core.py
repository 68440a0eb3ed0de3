"""What `soko pull` and `soko push` do, without click: reached through click (transfer.py) or
straight from a plain command line (soko/entry.py, transfer_options.py)."""
from __future__ import annotations

from ..entry import echo


def client_options(insecure: bool = False, jobs: int | None = None):
    from registry.client import ClientOptions

    opts = ClientOptions(insecure=insecure)
    if jobs:
        opts.jobs = jobs
    return opts


def with_progress(quiet: bool, fn):
    from ..progress import make_progress

    progress = make_progress(quiet)
    try:
        return fn(progress)
    finally:
        close = getattr(progress, "close", None)
        if close:
            close()


def push_image(store, image: str, dest: str | None, insecure: bool, jobs: int | None, quiet: bool,
               compression: str = "gzip", level: int | None = None):
    from registry.client import push

    opts = client_options(insecure, jobs)
    opts.compression, opts.compression_level = compression, level
    result = with_progress(quiet, lambda p: push(store, image, dest, opts, p))
    _record_repo_digest(store, result.reference, result.digest)
    if not quiet:
        from storage import references

        tag = references.parse(result.reference).tag or "latest"
        echo(f"{tag}: digest: {result.digest} size: {result.size}")
    return result


def _record_repo_digest(store, reference: str, digest: str) -> None:
    """`name@digest` becomes one of the image's RepoDigests, as Docker records pushes and pulls."""
    from storage import image_facts

    image_id = store.image(digest).id  # an index: the image this machine runs from it
    image_facts.record_repo_digest(store, reference, digest, image_id)
    if image_facts.image_id_of(store, digest) != image_id:
        image_facts.record_repo_digest(store, reference, digest, digest)


def pull_image(store, ref: str, insecure: bool, platform: str | None, jobs: int | None, quiet: bool):
    """Pull `ref` into `store` and print what Docker prints (the reference alone with `quiet`)."""
    from registry.client import pull
    from storage import references
    from storage.errors import StorageError
    from storage.model import Platform

    plat = Platform.parse(platform) if platform else None
    parsed = references.parse(ref)
    try:
        before = store.resolve(str(parsed), plat).id
    except StorageError:
        before = None
    if not quiet:
        if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
            echo("Using default tag: latest")
        echo(f"{parsed.digest or parsed.tag}: Pulling from {parsed.path}")
    result = with_progress(quiet, lambda p: pull(store, ref, plat, client_options(insecure, jobs), p))
    top = result.index_digest or result.digest
    _record_repo_digest(store, str(parsed), top)
    if quiet:
        echo(str(parsed))
        return result
    status = "Image is up to date" if before == result.image_id else "Downloaded newer image"
    echo(f"Digest: {top}")
    echo(f"Status: {status} for {parsed.familiar()}")
    echo(str(parsed))
    return result


def run(obj, name: str, kw: dict) -> None:
    """`pull` or `push` with click's keyword arguments, for the context `obj`."""
    store = store_while_importing(obj, name)
    if name == "pull":
        pull_image(store, kw["ref"], kw["insecure"], kw["platform"], kw["jobs"], kw["quiet"])
    else:
        push_image(store, kw["image"], kw["dest"], kw["insecure"], kw["jobs"], kw["quiet"],
                   kw["compression"], kw["compression_level"])


def store_while_importing(obj, name: str):
    """The store, opened in a thread while this one imports the client for `name`: creating a
    fresh store is mostly SQLite's fsyncs (6-28 ms here, the first pull on a machine), which
    the client's imports (asyncio, ssl, http.client: ~30 ms of CPU) hide. Its failure is
    raised here, as itself."""
    from concurrent.futures import ThreadPoolExecutor

    import storage.images  # noqa: F401 - imported here, not in the thread, which then only opens the store

    with ThreadPoolExecutor(1, thread_name_prefix="soko-store") as pool:
        opened = pool.submit(obj.image_store)
        import registry.client.wire_std  # noqa: F401 - the session's transport, chosen when it opens
        if name == "pull":
            import registry.client.pulling  # noqa: F401
        else:
            import registry.client.pushing  # noqa: F401
        return opened.result()
