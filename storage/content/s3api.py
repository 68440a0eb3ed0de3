"""The S3 calls the S3 content store makes, signed with AWS Signature V4, over aiohttp.

Why not aiobotocore: it brings botocore (about 80 MB of service models, half
a second to import) and pins aiohttp's versions, and spends its request
pipeline (hooks, model-driven serialisation) on every call, where this store
makes a dozen kinds of requests whose XML is a few lines. Signing is HMAC
over a canonical request. Bodies go as UNSIGNED-PAYLOAD (S3 allows it; the
store verifies every blob's digest itself), so no pass over the data is
spent on signing.

Addressing is path-style (`ENDPOINT/BUCKET/KEY`), which radosgw, MinIO and
AWS all accept. Calls that are safe to repeat are retried on connection
errors and 5xx answers.
"""
from __future__ import annotations

import asyncio
import base64
import configparser
import datetime
import email.utils
import hashlib
import hmac
import os
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..errors import StorageError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
RETRIES = 3
COPY_MAX = 5 * 1024 ** 3  # CopyObject's limit; bigger objects are copied in parts
COPY_PART = 1024 ** 3


class S3Error(StorageError):
    def __init__(self, status: int, code: str, message: str, what: str):
        super().__init__(f"S3 {what}: {status} {code}: {message}".rstrip(": "))
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


def find_credentials(access_key: str | None = None, secret_key: str | None = None,
                     session_token: str | None = None) -> Credentials:
    """Given keys, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, else
    the profile (AWS_PROFILE, default "default") of ~/.aws/credentials."""
    if access_key and secret_key:
        return Credentials(access_key, secret_key, session_token)
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None)
    path = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials")
    profile = env.get("AWS_PROFILE", "default")
    cp = configparser.ConfigParser()
    try:
        cp.read(path)
    except configparser.Error as e:
        raise StorageError(f"{path}: {e}") from None
    if cp.has_option(profile, "aws_access_key_id") and cp.has_option(profile, "aws_secret_access_key"):
        return Credentials(cp.get(profile, "aws_access_key_id"), cp.get(profile, "aws_secret_access_key"),
                           cp.get(profile, "aws_session_token", fallback=None))
    raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, [storage] access_key "
                       f"and secret_key, or profile {profile!r} in {path}")


def _uri(path: str) -> str:
    return quote(path, safe="/-_.~")


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(el: ET.Element, name: str) -> str | None:
    for child in el:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _iso_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _http_time(text: str) -> float:
    return email.utils.parsedate_to_datetime(text).timestamp()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float
    etag: str = ""


class S3Client:
    """One bucket at one endpoint."""

    def __init__(self, endpoint: str, region: str, bucket: str, creds: Credentials, ca_bundle: str | None = None,
                 connections: int = 64):
        self.endpoint = URL(endpoint.rstrip("/"))
        if self.endpoint.scheme not in ("http", "https") or not self.endpoint.host:
            raise StorageError(f"bad S3 endpoint {endpoint!r}: want http(s)://HOST[:PORT]")
        self.region = region
        self.bucket = bucket
        self.creds = creds
        self.host = self.endpoint.raw_authority
        self._ssl: ssl.SSLContext | bool = True
        if self.endpoint.scheme == "https" and ca_bundle:
            self._ssl = ssl.create_default_context(cafile=ca_bundle)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # counters, for tests and the bench
        self.bytes_read = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=300),
                auto_decompress=False, skip_auto_headers=("Content-Type",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- signing -------------------------------------------------------------------------------
    def _path(self, key: str | None) -> str:
        base = self.endpoint.raw_path.rstrip("/")
        return f"{base}/{self.bucket}" + (f"/{key}" if key is not None else "")

    def _signing_key(self, date: str) -> bytes:
        k = _hmac(("AWS4" + self.creds.secret_key).encode(), date)
        for part in (self.region, "s3", "aws4_request"):
            k = _hmac(k, part)
        return k

    def _sign(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], payload: str,
              now: datetime.datetime) -> str:
        amz = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz[:8]
        names = sorted(h.lower() for h in headers)
        lower = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        canonical = "\n".join([method, _uri(path), _query(query), "".join(f"{n}:{lower[n]}\n" for n in names),
                               ";".join(names), payload])
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"AWS4-HMAC-SHA256 Credential={self.creds.access_key}/{scope}, SignedHeaders={';'.join(names)}, " \
               f"Signature={signature}"

    def presign(self, key: str, expires: int = 900, method: str = "GET") -> str:
        """A URL anyone may use for `method` on `key` until it expires (no credentials sent)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz = now.strftime("%Y%m%dT%H%M%SZ")
        path = self._path(key)
        query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                 "X-Amz-Credential": f"{self.creds.access_key}/{amz[:8]}/{self.region}/s3/aws4_request",
                 "X-Amz-Date": amz, "X-Amz-Expires": str(int(expires)), "X-Amz-SignedHeaders": "host"}
        if self.creds.session_token:
            query["X-Amz-Security-Token"] = self.creds.session_token
        canonical = "\n".join([method, _uri(path), _query(query), f"host:{self.host}\n", "host", UNSIGNED])
        scope = f"{amz[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        query["X-Amz-Signature"] = hmac.new(self._signing_key(amz[:8]), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.endpoint.scheme}://{self.host}{_uri(path)}?{_query(query)}"

    # -- one request ---------------------------------------------------------------------------
    async def request(self, method: str, key: str | None, query: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: bytes | None = None,
                      ok: tuple[int, ...] = (200,), what: str = "", stream: bool = False,
                      retry: bool = True) -> aiohttp.ClientResponse:
        """Send one signed request; the response (unread when `stream`, else read) if its
        status is in `ok`, else S3Error. Retried on connection errors and 5xx when `retry`."""
        query = query or {}
        path = self._path(key)
        url = URL.build(scheme=self.endpoint.scheme, authority=self.host, path=_uri(path),
                        query_string=_query(query), encoded=True)
        what = what or f"{method} {key or self.bucket}"
        attempt = 0
        while True:
            attempt += 1
            now = datetime.datetime.now(datetime.timezone.utc)
            payload = EMPTY_SHA256 if not body else (UNSIGNED if len(body) > 65536
                                                     else hashlib.sha256(body).hexdigest())
            hdrs = {**(headers or {}), "Host": self.host, "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
                    "x-amz-content-sha256": payload}
            if self.creds.session_token:
                hdrs["x-amz-security-token"] = self.creds.session_token
            hdrs["Authorization"] = self._sign(method, path, query, hdrs, payload, now)
            if body is not None:
                hdrs["Content-Length"] = str(len(body))
            self.requests += 1
            try:
                resp = await self.session.request(method, url, headers=hdrs, data=body)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                if retry and attempt < RETRIES:
                    await asyncio.sleep(0.1 * 2 ** attempt)
                    continue
                raise StorageError(f"S3 {what}: {self.endpoint}: {e.__class__.__name__}: {e}") from None
            if resp.status in ok:
                if not stream:
                    await resp.read()
                return resp
            data = await resp.read()
            resp.release()
            if retry and resp.status >= 500 and attempt < RETRIES:
                await asyncio.sleep(0.1 * 2 ** attempt)
                continue
            code, message = str(resp.status), resp.reason or ""
            if data:
                try:
                    root = ET.fromstring(data)
                    code, message = _find(root, "Code") or code, _find(root, "Message") or message
                except ET.ParseError:
                    pass
            raise S3Error(resp.status, code, message, what)

    # -- objects -------------------------------------------------------------------------------
    async def head(self, key: str) -> ObjectInfo | None:
        resp = await self.request("HEAD", key, ok=(200, 404))
        if resp.status == 404:
            return None
        return ObjectInfo(key, int(resp.headers["Content-Length"]), _http_time(resp.headers["Last-Modified"]),
                          resp.headers.get("ETag", "").strip('"'))

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> aiohttp.ClientResponse | None:
        """The object's body (a range of it) as an unread response; None when there is no such object."""
        headers = {}
        if offset or length is not None:
            headers["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        resp = await self.request("GET", key, headers=headers, ok=(200, 206, 404), stream=True)
        if resp.status == 404:
            resp.release()
            return None
        return resp

    async def get_bytes(self, key: str) -> bytes | None:
        resp = await self.request("GET", key, ok=(200, 404))
        if resp.status == 404:
            return None
        data = await resp.read()
        self.bytes_read += len(data)
        return data

    async def put(self, key: str, body: bytes) -> None:
        await self.request("PUT", key, body=body, headers={"Content-Type": "application/octet-stream"})

    async def delete(self, key: str) -> None:
        await self.request("DELETE", key, ok=(204, 200, 404))

    async def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            xml = "<Delete><Quiet>true</Quiet>" + "".join(
                f"<Object><Key>{_xml(k)}</Key></Object>" for k in batch) + "</Delete>"
            body = xml.encode()
            resp = await self.request("POST", None, {"delete": ""}, body=body, what="DeleteObjects", headers={
                "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                "Content-Type": "application/xml"})
            errors = [e for e in ET.fromstring(await resp.read()) if _local(e.tag) == "Error"]
            if errors:
                raise StorageError(f"S3 DeleteObjects: {_find(errors[0], 'Key')}: {_find(errors[0], 'Code')}")

    async def copy(self, src: str, dst: str, size: int) -> None:
        """Server-side copy (in parts past CopyObject's 5 GiB)."""
        source = _uri(self._path(src))
        if size <= COPY_MAX:
            resp = await self.request("PUT", dst, headers={"x-amz-copy-source": source}, what=f"copy to {dst}")
            body = await resp.read()
            if body and _local(ET.fromstring(body).tag) == "Error":  # S3 may fail a copy inside a 200
                raise StorageError(f"S3 copy of {src} to {dst} failed: {body[:200]!r}")
            return
        upload = await self.create_multipart(dst)
        try:
            parts = []
            for n, start in enumerate(range(0, size, COPY_PART), 1):
                end = min(start + COPY_PART, size) - 1
                resp = await self.request("PUT", dst, {"partNumber": str(n), "uploadId": upload},
                                          headers={"x-amz-copy-source": source,
                                                   "x-amz-copy-source-range": f"bytes={start}-{end}"})
                parts.append((n, _find(ET.fromstring(await resp.read()), "ETag") or ""))
            await self.complete_multipart(dst, upload, parts)
        except BaseException:
            await self.abort_multipart(dst, upload)
            raise

    # -- multipart uploads ---------------------------------------------------------------------
    async def create_multipart(self, key: str) -> str:
        resp = await self.request("POST", key, {"uploads": ""}, headers={"Content-Type": "application/octet-stream"},
                                  retry=False)
        upload = _find(ET.fromstring(await resp.read()), "UploadId")
        if not upload:
            raise StorageError(f"S3 CreateMultipartUpload of {key}: no UploadId in the answer")
        return upload

    async def upload_part(self, key: str, upload: str, number: int, body: bytes) -> str:
        resp = await self.request("PUT", key, {"partNumber": str(number), "uploadId": upload}, body=body)
        return resp.headers.get("ETag", "")

    async def complete_multipart(self, key: str, upload: str, parts: list[tuple[int, str]]) -> None:
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml(etag)}</ETag></Part>" for n, etag in parts) + \
            "</CompleteMultipartUpload>"
        # Not retried blindly: a repeat of one that went through answers NoSuchUpload.
        resp = await self.request("POST", key, {"uploadId": upload}, body=xml.encode(), retry=False,
                                  headers={"Content-Type": "application/xml"}, what=f"complete {key}")
        body = await resp.read()
        if body and _local(ET.fromstring(body).tag) == "Error":  # S3 may fail a completion inside a 200
            raise StorageError(f"S3 CompleteMultipartUpload of {key} failed: {body[:200]!r}")

    async def abort_multipart(self, key: str, upload: str) -> None:
        await self.request("DELETE", key, {"uploadId": upload}, ok=(204, 200, 404))

    async def list_multipart(self, prefix: str) -> list[tuple[str, str, float]]:
        """(key, upload id, initiated) of the multipart uploads under `prefix`."""
        out: list[tuple[str, str, float]] = []
        query = {"uploads": "", "prefix": prefix}
        while True:
            resp = await self.request("GET", None, query, what="ListMultipartUploads")
            root = ET.fromstring(await resp.read())
            for up in root:
                if _local(up.tag) == "Upload":
                    out.append((_find(up, "Key") or "", _find(up, "UploadId") or "",
                                _iso_time(_find(up, "Initiated") or "1970-01-01T00:00:00Z")))
            if _find(root, "IsTruncated") != "true":
                return out
            query = {**query, "key-marker": _find(root, "NextKeyMarker") or "",
                     "upload-id-marker": _find(root, "NextUploadIdMarker") or ""}

    # -- listing -------------------------------------------------------------------------------
    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        while True:
            resp = await self.request("GET", None, query, what=f"list {prefix}")
            root = ET.fromstring(await resp.read())
            for el in root:
                if _local(el.tag) == "Contents":
                    yield ObjectInfo(_find(el, "Key") or "", int(_find(el, "Size") or 0),
                                     _iso_time(_find(el, "LastModified") or "1970-01-01T00:00:00Z"))
            token = _find(root, "NextContinuationToken")
            if _find(root, "IsTruncated") != "true" or not token:
                return
            query = {**query, "continuation-token": token}

    async def create_bucket(self) -> None:
        await self.request("PUT", None, ok=(200, 409), what=f"create bucket {self.bucket}")

    async def bucket_exists(self) -> bool:
        return (await self.request("HEAD", None, ok=(200, 404, 403))).status == 200


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
