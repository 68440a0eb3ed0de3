"""`soko cp`: files between a container and the host, with Docker's rules.

`C:PATH` names a path in a container (running or not) on either side; `-`
is a tar stream on stdin (into the container) or stdout (out of it). The
source is sent as a tar named for where it lands, as Docker's client does:
into an existing directory under its own name (`SRC/.`: its contents),
otherwise under the destination's name. Tars from a container are unpacked
on the host with tarfile's "data" filter: nothing lands outside the
destination, no device nodes, no setuid bits, files owned by whoever runs
soko.
"""
from __future__ import annotations

import os
import shutil
import sys

import click

from ..errors import SokoError


def _split(arg: str) -> tuple[str | None, str]:
    """(container, path) for `C:PATH`; (None, path) for a host path (or `-`)."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    name, sep, path = arg.partition(":")
    if sep and name and "/" not in name:
        return name, path or "/"
    return None, arg


def _target(src_path: str, src_is_dir: bool, dest: str, dest_info: dict | None) -> tuple[str, str]:
    """(directory to unpack into, name of the top entry in the tar), by Docker's cp rules."""
    contents = src_path.endswith("/.")
    base = os.path.basename(src_path.rstrip("/").removesuffix("/.").rstrip("/")) or "."
    if dest_info is not None and dest_info["dir"]:
        return dest, "." if contents else base
    if dest_info is not None and src_is_dir:
        raise SokoError(f"cannot copy a directory to a file: {dest}")
    if dest_info is None and dest.endswith("/"):
        raise SokoError(f"the destination directory must exist: {dest}")
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    return parent, os.path.basename(dest.rstrip("/"))


@click.command("cp")
@click.option("-a", "--archive", is_flag=True, help="Keep owners (uid:gid) of what is copied in.")
@click.option("-L", "--follow-link", is_flag=True, help="Follow a symlink in the source path.")
@click.argument("src")
@click.argument("dest")
@click.pass_context
def cp_cmd(ctx, archive, follow_link, src, dest) -> None:
    """Copy files between a container and the host (C:PATH on either side; - is a tar stream)."""
    import tarfile  # only here: `soko --help` imports this module

    from runtime import fsaccess

    from .containers import get

    sname, spath = _split(src)
    dname, dpath = _split(dest)
    if (sname is None) == (dname is None):
        raise SokoError("copying between containers or between host paths is not supported: "
                        "one side must be CONTAINER:PATH")
    if sname is not None:
        c = get(ctx, sname)
        info = fsaccess.stat(c, spath)
        if info is None:
            raise SokoError(f"Could not find the file {spath} in container {sname}")
        if dpath == "-":
            sys.stdout.flush()
            with fsaccess.reading(c, spath, info["name"] if info["name"] != "/" else ".", follow_link) as f:
                shutil.copyfileobj(f, sys.stdout.buffer, 1 << 16)
            sys.stdout.buffer.flush()
            return
        host = os.path.abspath(dpath)
        dinfo = {"dir": os.path.isdir(host)} if os.path.exists(host) else None
        into, name = _target(spath, info["dir"], host, dinfo)
        if not os.path.isdir(into):
            raise SokoError(f"the destination directory must exist: {into}")
        with fsaccess.reading(c, spath, name, follow_link) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(into, filter="data")
        return
    c = get(ctx, dname)
    if spath == "-":
        dinfo = fsaccess.stat(c, dpath)
        if dinfo is None or not dinfo["dir"]:
            raise SokoError(f"destination {dpath!r} must be a directory in the container")
        with fsaccess.writing(c, dpath, archive) as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 16)
        return
    if not os.path.lexists(spath.removesuffix("/.") or "/"):
        raise SokoError(f"no such file or directory: {spath}")
    into, name = _target(spath, os.path.isdir(spath), dpath, fsaccess.stat(c, dpath))
    if fsaccess.stat(c, into) is None:
        raise SokoError(f"the destination directory must exist: {into}")
    with fsaccess.writing(c, into, archive) as f, \
            tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(spath if name == "." else spath.removesuffix("/."), arcname=name, filter=fsaccess.whole_seconds)
