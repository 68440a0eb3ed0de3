"""The UI's pages: repositories, a repository, an image, the registry; and
deleting a tag. Each shows only what the viewer may pull."""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aiohttp import web

from storage import digests, references
from storage.errors import StorageError

from ...errors import APIError
from .. import manifests
from ..stats import registry_stats
from . import queries
from .images import image_view
from .frame import Viewer, repo_url

if TYPE_CHECKING:
    from .frame import UI

DISK_CACHE_SECONDS = 15.0  # the blob store walk of the registry page is reused this long


def _query(request: web.Request, sorts: dict[str, str], default: str) -> tuple[str, str, bool, int]:
    q = request.query.get("q", "").strip()[:200]
    sort = request.query.get("sort", default)
    sort = sort if sort in sorts else default
    descending = request.query.get("order", "desc" if sort in ("pushed", "size", "tags") else "asc") == "desc"
    try:
        page = max(1, min(int(request.query.get("page", "1")), 1_000_000))
    except ValueError:
        page = 1
    return q, sort, descending, page


def _login_needed(ui: "UI", request: web.Request, viewer: Viewer) -> web.Response | None:
    """Anonymous viewers who may see nothing here are sent to sign in first."""
    if viewer.anonymous and ui.has_accounts:
        return ui.redirect(request, viewer, "/ui/login?" + urlencode({"next": request.path_qs}))
    return None


async def repositories(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    q, sort, descending, number = _query(request, queries.REPO_SORTS, "name")
    rows, page = await ui.srv.reg.run(queries.repositories, ui.srv.reg.meta, ui.pull_filter(viewer), q, sort,
                                      descending, number)
    template = "repositories_table.html" if request.query.get("partial") == "1" else "repositories.html"
    return ui.render(request, viewer, template, rows=rows, page=page, q=q, sort=sort, descending=descending)


def _repository_name(ui: "UI", request: web.Request, viewer: Viewer, name: str) -> web.Response | None:
    """An answer instead of the page when the name is bad or hidden from the viewer."""
    try:
        references.validate_repository(name)
    except StorageError:
        return ui.error(request, viewer, 404, "No such repository", f"{name!r} is not a repository name.")
    if not ui.may(viewer, "pull", name):
        return _login_needed(ui, request, viewer) or ui.error(
            request, viewer, 404, "No such repository", f"There is no repository {name} that you may see.")
    return None


async def repository(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    name = request.match_info["name"]
    refused = _repository_name(ui, request, viewer, name)
    if refused is not None:
        return refused
    reg = ui.srv.reg
    repo = await reg.run(queries.repository, reg.meta, name)
    if repo is None:
        return ui.error(request, viewer, 404, "No such repository", f"There is no repository {name} that you may see.")
    q, sort, descending, number = _query(request, queries.TAG_SORTS, "name")
    rows, page = await reg.run(queries.tags, reg.meta, name, q, sort, descending, number)
    summaries = await reg.run(ui.summaries.many, list({(r.digest, r.media_type) for r in rows}))
    deleted = request.query.get("deleted", "")
    if deleted and await reg.run(reg.meta.manifest_by_tag, name, deleted[:128]) is not None:
        deleted = ""  # only say a tag went when it did
    return ui.render(request, viewer, "repository.html", repo=repo, rows=rows, page=page, q=q, sort=sort,
                     descending=descending, summaries=summaries, can_delete=ui.can_delete(viewer, name),
                     deleted=deleted[:128])


async def image(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    ref = request.match_info["ref"]
    if "@" in ref:
        name, _, reference = ref.partition("@")
    else:
        name, _, reference = ref.rpartition(":")
    refused = _repository_name(ui, request, viewer, name)
    if refused is not None:
        return refused
    reg = ui.srv.reg
    try:
        if "@" in ref:
            digests.parse(reference)
            row = await reg.run(reg.meta.manifest_by_digest, name, reference)
        else:
            references.validate_tag(reference)
            row = await reg.run(reg.meta.manifest_by_tag, name, reference)
    except StorageError:
        row = None
    if row is None:
        return ui.error(request, viewer, 404, "No such image", f"{name} has no manifest {reference}.")
    view = await reg.run(image_view, reg.store.blocking, reg.meta, name, row.digest, row.media_type, row.size)
    return ui.render(request, viewer, "image.html", view=view, reference=reference,
                     pull_ref=f"{request.host}/{name}{'@' if '@' in ref else ':'}{reference}")


def _disk_usage(ui: "UI", key: tuple) -> tuple[int, int]:
    """(blob files, their bytes): a walk of the blob store, reused for a few seconds
    while `key` (what links blobs, when gc last ran) stays the same."""
    cached = ui.disk_usage
    now = time.monotonic()
    if cached is not None and cached[1] == key and now - cached[0] < DISK_CACHE_SECONDS:
        return cached[2]
    count = total = 0
    for info in ui.srv.reg.store.blocking.walk():
        total += info.size
        count += 1
    ui.disk_usage = (now, key, (count, total))
    return count, total


def _upload_bytes(ui: "UI", upload_id: str) -> int | None:
    info = ui.srv.reg.store.blocking.ingest(upload_id)
    return None if info is None else info.offset


def _registry_facts(ui: "UI", visible) -> dict:
    meta = ui.srv.reg.meta
    stats = registry_stats(meta)
    blob_files, disk_bytes = _disk_usage(ui, (stats.blobs, stats.bytes, stats.gc_runs))
    return {"stats": stats, "blob_files": blob_files, "disk_bytes": disk_bytes,
            "uploads": [(u, _upload_bytes(ui, u.id)) for u in queries.uploads(meta, visible)]}


async def registry(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    refused = _login_needed(ui, request, viewer) if not ui.srv.access.open else None
    if refused is not None:
        return refused
    facts = await ui.srv.reg.run(_registry_facts, ui, ui.pull_filter(viewer))
    cfg = ui.srv.config
    return ui.render(request, viewer, "registry.html", gc_interval=cfg.gc.interval, read_only=cfg.read_only,
                     auth_mode=ui.srv.auth.mode, **facts)


async def delete_tag(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    form = await ui.form(request, viewer)
    if form is None:
        return ui.error(request, viewer, 403, "Refused", "The form was not sent from this registry's page "
                                                         "(its CSRF token is missing or wrong). Nothing changed.")
    name, tag = form.get("repository", ""), form.get("tag", "")
    refused = _repository_name(ui, request, viewer, name)
    if refused is not None:
        return refused
    if not ui.may(viewer, "delete", name):
        return ui.error(request, viewer, 403, "Refused", f"{viewer.name} may not delete tags in {name}.")
    try:
        ui.srv.check_writable(name)
        await manifests.remove(ui.srv, request, name, tag)
    except APIError as e:
        status = 404 if e.code == "MANIFEST_UNKNOWN" else 403
        return ui.error(request, viewer, status, "Not deleted", e.message if e.code != "MANIFEST_UNKNOWN"
                        else f"{name} has no tag {tag}.")
    return ui.redirect(request, viewer, repo_url(name) + "?" + urlencode({"deleted": tag}))
