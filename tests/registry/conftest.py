"""A real registry server process on a free loopback port, and a plain
http.client speaker for it.

The server fixtures run on every stack a module lists: `STACKS`, or else
each storage in `BACKENDS` (default: the directory under the root; "s3": a
bucket on the session's radosgw, `--storage`) with each metadata backend in
`METADATA_BACKENDS` (default: SQLite only). `SOKO_TEST_METADATA=postgresql`
runs every module on PostgreSQL. Each test module gets a database of its own
for `server`, each test one for `fresh_server` (tests/pgserver.py)."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.pgserver import pg_server, pg_url  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
SQLITE, POSTGRES = "sqlite", "postgresql"
FORCED_BACKEND = os.environ.get("SOKO_TEST_METADATA")  # every module on this backend
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def unique(prefix: str = "repo") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Client:
    """One keep-alive connection; reconnects when the server closed it.
    `source` is the loopback address it connects from (127.0.0.2 is another client)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None, auth: str | None = None,
                 source: str | None = None):
        self.host, self.port, self.tls, self.auth = host, port, tls, auth
        self.source = (source, 0) if source else None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=60,
                                               source_address=self.source)
        return http.client.HTTPConnection(self.host, self.port, timeout=60, source_address=self.source)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Resp:
        headers = dict(headers or {})
        if self.auth and "Authorization" not in headers:
            headers["Authorization"] = self.auth
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                return Resp(r.status, r.headers, data)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    http.client.BadStatusLine):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- conveniences ----------------------------------------------------
    def push_blob(self, name: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256(data)
        r = self.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201, (r.status, r.body)
        return digest

    def put_manifest(self, name: str, ref: str, raw: bytes, media_type: str = OCI_MANIFEST) -> Resp:
        return self.request("PUT", f"/v2/{name}/manifests/{ref}", body=raw, headers={"Content-Type": media_type})

    def push_image(self, name: str, tag: str | None = "latest", layers: int = 1, media_type: str = OCI_MANIFEST,
                   extra: dict | None = None, seed: str | None = None) -> tuple[str, bytes]:
        """Push a tiny image; returns (manifest digest, manifest bytes)."""
        seed = seed or uuid.uuid4().hex
        docker = media_type == DOCKER_MANIFEST
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        descs = []
        for i in range(layers):
            data = f"layer {i} of {seed}".encode() * 10
            descs.append({"mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                          "digest": self.push_blob(name, data), "size": len(data)})
        manifest = {"schemaVersion": 2, "mediaType": media_type,
                    "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                               "digest": self.push_blob(name, cfg), "size": len(cfg)},
                    "layers": descs, **(extra or {})}
        raw = json.dumps(manifest, indent=2).encode()
        digest = sha256(raw)
        r = self.put_manifest(name, tag or digest, raw, media_type)
        assert r.status == 201, (r.status, r.body)
        return digest, raw


@dataclass
class RegistryProc:
    root: Path
    args: list[str] = field(default_factory=list)
    metadata: str | None = None  # a postgresql:// URL, or None: SQLite in the root
    proc: subprocess.Popen | None = None
    url: str = ""
    port: int = 0
    log: Path | None = None
    nofile: int | None = None  # RLIMIT_NOFILE (soft and hard) of the server process
    storage_url: str | None = None  # an s3:// URL: blobs in S3 (--storage)
    env: dict[str, str] = field(default_factory=dict)  # its credentials

    def __post_init__(self) -> None:
        if self.storage_url:
            self.args = ["--storage", self.storage_url, *self.args]

    @property
    def backend(self) -> str:
        return "s3" if self.storage_url else "directory"

    def storage(self):
        from registry.server.sections import StorageOptions

        return StorageOptions(self.storage_url, self.env.get("AWS_ACCESS_KEY_ID"),
                              self.env.get("AWS_SECRET_ACCESS_KEY"))

    def _blocking(self, fn):
        """fn(the blocking view of the server's content store), from the test's process."""
        from registry.server.core import open_content
        from storage.content import blocking_session

        with blocking_session(open_content(self.root, self.storage())) as b:
            return fn(b)

    def blob_exists(self, digest: str) -> bool:
        return self._blocking(lambda b: b.has(digest))

    def ingest_exists(self, upload_id: str) -> bool:
        return self._blocking(lambda b: b.ingest(upload_id) is not None)

    def ingest_offsets(self) -> dict[str, int]:
        """ref -> bytes, of every ingest in the server's store."""
        def offsets(b) -> dict[str, int]:
            out = {}
            for i in b.ingests():
                info = b.ingest(i.ref)
                if info is not None:
                    out[i.ref] = info.offset
            return out
        return self._blocking(offsets)

    def collect(self, **kw):
        """Garbage collection of this server's root, as `soko gc --registry` runs it."""
        from registry.server.gc import collect

        return collect(self.root, storage=self.storage(), metadata=self.metadata, **kw)

    def start(self, port: int = 0) -> "RegistryProc":
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        self.log = self.root.parent / f"{self.root.name}-server.log"
        errf = open(self.log, "ab")
        limit = self.nofile

        def preexec() -> None:
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        metadata = ["--metadata", self.metadata] if self.metadata else []
        self.proc = subprocess.Popen([sys.executable, "-m", "registry.server", "--addr", f"127.0.0.1:{port}",
                                      "--root", str(self.root), *metadata, *self.args],
                                     stdout=subprocess.PIPE, stderr=errf, cwd=REPO, env=env, preexec_fn=preexec)
        errf.close()
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            self.proc.wait(timeout=10)
            raise AssertionError(f"server did not start: {line!r}\n{self.log.read_text()}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def client(self, **kw) -> Client:
        return Client("127.0.0.1", self.port, **kw)

    def configure(self, config: dict | str) -> "RegistryProc":
        """Serve with this config, a dict written as TOML or the TOML text itself (before start)."""
        from .tomlw import dumps

        path = self.root.parent / f"{self.root.name}-config.toml"
        path.write_text(config if isinstance(config, str) else dumps(config))
        self.args = [*self.args, "--config", str(path)]
        return self

    def fds(self) -> int:
        """Descriptors the server process holds open right now."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> "RegistryProc":
        self.stop()
        return self.start(self.port)

    def errors(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def sql(self, statement: str, params: tuple = ()) -> None:
        """Change the registry's metadata behind the server's back (`?` placeholders),
        in whichever database it uses: tests that need rows of another age."""
        if self.metadata:
            import psycopg

            with psycopg.connect(self.metadata, autocommit=True) as c:
                c.execute(statement.replace("?", "%s"), params)
            return
        import sqlite3

        with sqlite3.connect(self.root / "metadata.db") as c:
            c.execute(statement, params)
        c.close()


@dataclass(frozen=True)
class Stack:
    """What a registry under test runs on."""
    storage: str = "directory"  # or "s3"
    metadata: str = SQLITE  # or POSTGRES

    def __str__(self) -> str:
        return f"{self.storage}-{self.metadata}"


def module_stacks(module) -> list[Stack]:
    stacks = getattr(module, "STACKS", None)
    if stacks is None:
        stacks = [Stack(s, m) for s in getattr(module, "BACKENDS", ["directory"])
                  for m in getattr(module, "METADATA_BACKENDS", (SQLITE,))]
    if FORCED_BACKEND:
        stacks = list(dict.fromkeys(Stack(s.storage, FORCED_BACKEND) for s in stacks))
    return stacks


def pytest_generate_tests(metafunc) -> None:
    if "stack" in metafunc.fixturenames:
        stacks = module_stacks(metafunc.module)
        metafunc.parametrize("stack", stacks, ids=[str(s) for s in stacks], indirect=True, scope="module")


@pytest.fixture(scope="module")
def stack(request) -> Stack:
    """Where the servers of this module keep blobs and metadata."""
    return request.param


def _database(request, metadata: str):
    if metadata == SQLITE:
        yield None
        return
    pg = request.getfixturevalue("pg_server")
    url = pg.database()
    yield url
    pg.drop(url)


def stack_args(request, stack: Stack) -> dict:
    """RegistryProc's storage arguments for a stack: a new bucket on the session's radosgw for s3."""
    if stack.storage == "directory":
        return {}
    gw = request.getfixturevalue("radosgw")
    return {"storage_url": gw.bucket(), "env": gw.env()}


@pytest.fixture(scope="module")
def module_metadata(request, stack):
    """The `--metadata` URL of the module's server (None: SQLite in its root)."""
    yield from _database(request, stack.metadata)


@pytest.fixture
def test_metadata(request, stack):
    """A `--metadata` URL of this test's own (None: SQLite in the root)."""
    yield from _database(request, stack.metadata)


@pytest.fixture(scope="module")
def server(tmp_path_factory, request, stack, module_metadata) -> RegistryProc:
    """One server for a module's API tests (each test uses its own repositories)."""
    srv = RegistryProc(tmp_path_factory.mktemp("registry") / "root", metadata=module_metadata,
                       **stack_args(request, stack)).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


@pytest.fixture
def fresh_server(tmp_path, request, stack, test_metadata) -> RegistryProc:
    """A server of the test's own, for restarts, kills and special flags."""
    srv = RegistryProc(tmp_path / "root", metadata=test_metadata, **stack_args(request, stack))
    yield srv
    srv.stop()


@pytest.fixture
def client(server) -> Client:
    c = server.client()
    yield c
    c.close()
