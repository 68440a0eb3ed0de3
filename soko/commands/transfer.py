"""Moving images: push, pull, copy, login, logout."""
from __future__ import annotations

import sys

import click


def _options(insecure: bool = False, jobs: int | None = None):
    from registry.client import ClientOptions

    opts = ClientOptions(insecure=insecure)
    if jobs:
        opts.jobs = jobs
    return opts


def _run_with_progress(quiet: bool, fn):
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

    opts = _options(insecure, jobs)
    opts.compression, opts.compression_level = compression, level
    result = _run_with_progress(quiet, lambda p: push(store, image, dest, opts, p))
    _record_repo_digest(store, result.reference, result.digest)
    if not quiet:
        from storage import references

        tag = references.parse(result.reference).tag or "latest"
        click.echo(f"{tag}: digest: {result.digest} size: {result.size}")
    return result


def _record_repo_digest(store, reference: str, digest: str) -> None:
    """`name@digest` becomes one of the image's RepoDigests, as Docker records pushes and pulls."""
    from storage import image_facts

    image_id = store.image(digest).id  # an index: the image this machine runs from it
    image_facts.record_repo_digest(store, reference, digest, image_id)
    if image_facts.image_id_of(store, digest) != image_id:
        image_facts.record_repo_digest(store, reference, digest, digest)


def _check_level(ctx, param, level):
    from storage.compression import check_level
    from storage.errors import StorageError

    try:
        return check_level(ctx.params.get("compression", "gzip"), level)
    except StorageError as e:
        raise click.BadParameter(str(e), ctx, param) from None


@click.command("push")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None, help="Blobs at once.")
@click.option("-q", "--quiet", is_flag=True, help="No progress; only the digest line.")
@click.option("--compression", type=click.Choice(["gzip", "zstd", "none"]), default="gzip", is_eager=True,
              help="How uncompressed layers travel (default gzip); compressed ones go as they are.")
@click.option("--compression-level", type=int, default=None, callback=_check_level,
              help="gzip 0-9 (default 6), zstd 1-22 (default: level 3 with a 4 MiB window); "
                   "used when a layer is first compressed.")
@click.argument("image")
@click.argument("dest", required=False)
@click.pass_context
def push_cmd(ctx, insecure, jobs, quiet, compression, compression_level, image, dest) -> None:
    """Upload an image to a registry (DEST defaults to IMAGE's own reference)."""
    push_image(ctx.obj.image_store(), image, dest, insecure, jobs, quiet, compression, compression_level)


@click.command("pull")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.option("--platform", default=None, help="os/arch[/variant] (default: this machine).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None, help="Blobs at once.")
@click.option("-q", "--quiet", is_flag=True, help="No progress; only the image's full reference.")
@click.argument("ref")
@click.pass_context
def pull_cmd(ctx, insecure, platform, jobs, quiet, ref) -> None:
    """Download an image into the local store."""
    from registry.client import pull
    from storage import references
    from storage.errors import StorageError
    from storage.model import Platform

    plat = Platform.parse(platform) if platform else None
    parsed = references.parse(ref)
    store = ctx.obj.image_store()
    try:
        before = store.resolve(str(parsed), plat).id
    except StorageError:
        before = None
    if not quiet:
        if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
            click.echo("Using default tag: latest")
        click.echo(f"{parsed.digest or parsed.tag}: Pulling from {parsed.path}")
    result = _run_with_progress(quiet, lambda p: pull(store, ref, plat, _options(insecure, jobs), p))
    top = result.index_digest or result.digest
    _record_repo_digest(store, str(parsed), top)
    if quiet:
        click.echo(str(parsed))
        return
    status = "Image is up to date" if before == result.image_id else "Downloaded newer image"
    click.echo(f"Digest: {top}")
    click.echo(f"Status: {status} for {parsed.familiar()}")
    click.echo(str(parsed))


@click.command("copy")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary line.")
@click.argument("src")
@click.argument("dst")
@click.pass_context
def copy_cmd(ctx, insecure, quiet, src, dst) -> None:
    """Copy between docker://REF, oci-archive:FILE, docker-archive:FILE and soko:REF."""
    from registry.client import copy

    store = ctx.obj.image_store() if (src.startswith("soko:") or dst.startswith("soko:")) else None
    result = _run_with_progress(quiet, lambda p: copy(src, dst, _options(insecure), p, store))
    if not quiet:
        click.echo(f"Copied {result.source} to {result.destination} ({result.digest})")


@click.command("login")
@click.option("-u", "--username", default=None, help="User name (asked for when missing).")
@click.option("-p", "--password", default=None, help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.argument("registry")
@click.pass_context
def login_cmd(ctx, username, password, password_stdin, insecure, registry) -> None:
    """Check credentials against REGISTRY and store them in ~/.docker/config.json."""
    from registry.client import login

    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    login(registry, username, password, _options(insecure))
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("registry")
@click.pass_context
def logout_cmd(ctx, registry) -> None:
    """Forget the credentials of REGISTRY."""
    from registry.client import logout

    if logout(registry):
        click.echo(f"Removing login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")
