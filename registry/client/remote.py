"""One repository on a registry: the distribution API calls, one method each.

Higher layers (pull, push, copy) decide *what* to move; this module knows
*how* each endpoint is spelled and what its answers mean.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin

from storage import digests, mediatypes as mt

from . import wire
from .auth import scope_for
from .errors import ProtocolError, UploadError, VerificationError
from .session import RegistrySession

MANIFEST_ACCEPT = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST])
MAX_MANIFEST = 4 * 1024 * 1024
_RANGE_RE = re.compile(r"^(?:bytes=)?(\d+)-(-?\d+)$")


@dataclass
class FetchedManifest:
    """A manifest as the registry sent it: its exact bytes, its media type, its digest."""
    raw: bytes
    media_type: str
    digest: str


class Repository:
    """`session` + a repository path such as `library/busybox`."""

    def __init__(self, session: RegistrySession, path: str, push: bool = False):
        self.session = session
        self.path = path
        self.scopes: tuple[str, ...] = (scope_for(path, ["pull", "push"] if push else ["pull"]),)

    @property
    def registry(self) -> str:
        return self.session.registry

    def describe(self, ref: str | None = None) -> str:
        name = f"{self.registry}/{self.path}"
        if ref:
            name += ("@" if ":" in ref else ":") + ref
        return name

    # -- manifests ------------------------------------------------------------
    async def get_manifest(self, ref: str) -> FetchedManifest:
        """GET a manifest by tag or digest, verifying it against the digest it was asked by
        (or the Docker-Content-Digest the registry claims for a tag)."""
        what = self.describe(ref)
        resp = await self.session.request("GET", f"/v2/{self.path}/manifests/{ref}", scopes=self.scopes,
                                          headers={"Accept": MANIFEST_ACCEPT})
        async with resp:
            await self.session.raise_for_status(resp, f"manifest {what}", self.describe())
            length = resp.content_length
            if length is not None and length > MAX_MANIFEST:
                raise ProtocolError(f"manifest {what} is {length} bytes, more than the {MAX_MANIFEST} allowed")
            raw = await resp.read(MAX_MANIFEST)
            if len(raw) > MAX_MANIFEST:
                raise ProtocolError(f"manifest {what} is larger than the {MAX_MANIFEST} bytes allowed")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            claimed = resp.headers.get("Docker-Content-Digest")
        if digests.is_valid(ref):
            alg = digests.parse(ref).algorithm
            actual = digests.of_bytes(raw, alg)
            if actual != ref:
                raise VerificationError(f"manifest {what}: registry sent content with digest {actual}", ref)
            digest = digests.of_bytes(raw) if alg != "sha256" else actual
        else:
            digest = digests.of_bytes(raw)
            if claimed and digests.is_valid(claimed) and digests.parse(claimed).algorithm == "sha256" \
                    and claimed != digest:
                raise VerificationError(f"manifest {what}: registry claims {claimed} but sent content "
                                        f"with digest {digest}", claimed)
        return FetchedManifest(raw, media_type, digest)

    async def manifest_exists(self, ref: str) -> str | None:
        """HEAD a manifest: its digest when present, else None."""
        resp = await self.session.request("HEAD", f"/v2/{self.path}/manifests/{ref}", scopes=self.scopes,
                                          headers={"Accept": MANIFEST_ACCEPT})
        async with resp:
            if resp.status == 404:
                return None
            await self.session.raise_for_status(resp, f"manifest {self.describe(ref)}", self.describe())
            return resp.headers.get("Docker-Content-Digest") or ref

    async def put_manifest(self, ref: str, raw: bytes, media_type: str) -> str:
        """PUT the exact bytes; returns the digest the registry reports."""
        what = self.describe(ref)
        resp = await self.session.request("PUT", f"/v2/{self.path}/manifests/{ref}", scopes=self.scopes,
                                          headers={"Content-Type": media_type}, data=raw)
        async with resp:
            if resp.status >= 400 and resp.status not in (401, 403, 404):
                from .session import error_detail
                detail = await error_detail(resp)
                raise UploadError(f"registry refused manifest {what} ({resp.status}"
                                  f"{': ' + detail if detail else ''})")
            await self.session.raise_for_status(resp, f"manifest {what}", self.describe())
            return resp.headers.get("Docker-Content-Digest") or digests.of_bytes(raw)

    # -- blobs ----------------------------------------------------------------
    async def blob_size(self, digest: str) -> int | None:
        """HEAD a blob: its size when the repository has it, else None."""
        resp = await self.session.request("HEAD", f"/v2/{self.path}/blobs/{digest}", scopes=self.scopes)
        async with resp:
            if resp.status == 404:
                return None
            await self.session.raise_for_status(resp, f"blob {digest} in {self.describe()}", self.describe())
            return resp.content_length if resp.content_length is not None else -1

    async def open_blob(self, digest: str, offset: int = 0) -> wire.Response:
        """GET a blob from `offset`; the caller reads and releases the response.
        Status is 200 (whole blob) or 206 (from offset)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = await self.session.request("GET", f"/v2/{self.path}/blobs/{digest}", scopes=self.scopes,
                                          headers=headers)
        if resp.status == 416 and offset:
            resp.release()
            raise ProtocolError(f"blob {digest}: {self.registry} cannot serve from offset {offset}")
        if resp.status >= 400:
            async with resp:
                await self.session.raise_for_status(resp, f"blob {digest} in {self.describe()}", self.describe())
        return resp

    # -- uploads ----------------------------------------------------------------
    def _absolute(self, location: str | None, what: str) -> str:
        if not location:
            raise ProtocolError(f"{self.registry}: {what} answer has no Location")
        return urljoin(self.session.url(f"/v2/{self.path}/blobs/uploads/"), location)

    async def start_upload(self, mount: str | None = None, source: str | None = None) -> tuple[str | None, bool]:
        """POST an upload session. With `mount`/`source`, try a cross-repository
        mount first: returns (None, True) when the registry mounted the blob, else
        (upload location, False)."""
        params = {"mount": mount, "from": source} if mount and source else None
        scopes = self.scopes + ((scope_for(source, ["pull"]),) if source else ())
        resp = await self.session.request("POST", f"/v2/{self.path}/blobs/uploads/", scopes=scopes,
                                          params=params, headers={"Content-Length": "0"})
        async with resp:
            if resp.status == 201 and params:
                return None, True
            if resp.status != 202:
                await self.session.raise_for_status(resp, f"upload to {self.describe()}", self.describe())
                raise ProtocolError(f"{self.registry}: starting an upload gave {resp.status}, expected 202")
            return self._absolute(resp.headers.get("Location"), "upload start"), False

    async def upload_status(self, location: str) -> tuple[int, str] | None:
        """The server's offset for an upload (GET status -> Range), and the
        location to continue at; None when the upload is gone or unusable."""
        resp = await self.session.request("GET", location, scopes=self.scopes)
        async with resp:
            if resp.status in (400, 404, 416):
                return None
            await self.session.raise_for_status(resp, f"upload status in {self.describe()}", self.describe())
            rng = resp.headers.get("Range", "")
            m = _RANGE_RE.match(rng.strip())
            # "0-0" is what registries say for an empty upload (and, alas, for one byte): take it as empty
            offset = int(m.group(2)) + 1 if m and int(m.group(2)) > 0 else 0
            return offset, self._absolute(resp.headers.get("Location") or location, "upload status")

    async def cancel_upload(self, location: str) -> None:
        try:
            resp = await self.session.request("DELETE", location, scopes=self.scopes, retries=0)
            resp.release()
        except Exception:  # best effort: the registry expires abandoned uploads anyway
            pass


def with_digest(location: str, digest: str) -> str:
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}{urlencode({'digest': digest})}"

