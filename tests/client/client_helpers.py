"""Test helpers for the registry client: images in a store, registries, a token service."""
from __future__ import annotations

import gzip
import hashlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from storage import digests, mediatypes as mt
from storage.images import ImageStore
from storage.model import Descriptor, ImageConfig, Manifest
from tests.tarballs import make_tar

BUSYBOX = Path("/usr/bin/busybox")


def add_layer(store: ImageStore, entries: list[tuple], level: int = 1) -> tuple[Descriptor, str]:
    """Store a gzip layer of tarballs.make_tar entries (parents added); returns its descriptor and diff_id."""
    raw = make_tar(entries, parents=True)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    gz = gzip.compress(raw, compresslevel=level, mtime=0)
    digest = store.blobs.put_bytes(gz)
    store.record_layer(diff_id, digest, "gzip", len(gz))
    return Descriptor(mt.OCI_LAYER_GZIP, digest, len(gz)), diff_id


def busybox_layer(store: ImageStore) -> tuple[Descriptor, str]:
    data = BUSYBOX.read_bytes()
    return add_layer(store, [("file", "bin/busybox", data, 0o755), ("symlink", "bin/sh", "busybox"),
                             ("symlink", "bin/ls", "busybox")], level=6)


def random_layer(store: ImageStore, size: int, seed: int, name: str = "data.bin") -> tuple[Descriptor, str]:
    rnd = random.Random(seed)
    return add_layer(store, [("file", f"data/{name}", rnd.randbytes(size), 0o755)], level=1)


def assert_same_image(src: ImageStore, src_ref: str, dst: ImageStore, dst_ref: str | None = None) -> None:
    """`dst` holds the image `src` has under `src_ref`, byte for byte: manifest, config and layers."""
    a, b = src.resolve(src_ref), dst.resolve(dst_ref or src_ref)
    assert b.digest == a.digest and b.manifest.raw == a.manifest.raw
    for d in a.manifest.references():
        assert dst.blobs.read_bytes(d.digest) == src.blobs.read_bytes(d.digest), d.digest


def make_image(store: ImageStore, ref: str, layers: list[tuple[Descriptor, str]],
               media_type: str = mt.OCI_MANIFEST, cmd: list[str] | None = None) -> Manifest:
    cfg = ImageConfig.new()
    cfg.config["Cmd"] = cmd or ["/bin/sh"]
    cfg.data["created"] = "2024-01-01T00:00:00Z"
    for _, diff_id in layers:
        cfg.diff_ids.append(diff_id)
        cfg.history.append({"created": "2024-01-01T00:00:00Z", "created_by": "test"})
    m = store.commit(cfg, [d for d, _ in layers], media_type)
    store.tag(ref, m.digest)
    return m


# -- registries -----------------------------------------------------------------------
def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_port(ip: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def local_ip() -> str:
    """A non-loopback IPv4 address of this machine (traffic to it stays inside the machine)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    raise RuntimeError("this machine has no non-loopback IPv4 address for the TLS tests")


def make_tls(root: Path, ips: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `ips`: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soko test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ips[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (root / "ca.pem", root / "cert.pem", root / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up (401 with auth)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Registry:
    kind: str
    host: str                  # 127.0.0.1:PORT
    root: Path
    proc: subprocess.Popen | None = None
    user: str | None = None
    password: str | None = None
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_distribution(root: Path, htpasswd: tuple[str, str] | None = None, token: dict | None = None,
                       ip: str = "127.0.0.1", tls: tuple[Path, Path] | None = None, port: int | None = None,
                       access_log: bool = False) -> Registry:
    """CNCF distribution 2.8 (`docker-registry serve`) on a free port (loopback unless `ip`); its
    access log (one line per request, in registry.log) when asked."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port(ip)
    auth = ""
    if htpasswd:
        user, password = htpasswd
        line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True).stdout
        (root / "htpasswd").write_bytes(line)
        auth = f"auth:\n  htpasswd:\n    realm: soko-test\n    path: {root / 'htpasswd'}\n"
    elif token:
        auth = ("auth:\n  token:\n"
                f"    realm: {token['realm']}\n    service: {token['service']}\n"
                f"    issuer: {token['issuer']}\n    rootcertbundle: {token['rootcertbundle']}\n")
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"log:\n  level: error\n  accesslog:\n    disabled: {'false' if access_log else 'true'}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {ip}:{port}\n  secret: soko-test-secret\n"
        + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "") + auth)
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    reg = Registry("distribution", f"{ip}:{port}", root, proc,
                   htpasswd[0] if htpasswd else None, htpasswd[1] if htpasswd else None)
    try:
        wait_port(ip, port)
    except Exception:
        reg.stop()
        raise
    return reg


def have_soko_server() -> bool:
    try:
        import registry.server.__main__  # noqa: F401
        return True
    except ImportError:
        return False


def start_soko_server(root: Path, htpasswd: tuple[str, str] | None = None, config: dict | None = None,
                      tls: tuple[Path, Path] | None = None, command: list[str] | None = None) -> Registry:
    """The soko registry (`python -m registry.server` from this tree, or `command`, e.g. an installed
    `soko serve`) on a free loopback port (with a `config`, written as TOML; serving HTTPS with
    `tls` = (certificate, key))."""
    import sys

    from tests.registry.tomlw import dumps
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = (command or [sys.executable, "-m", "registry.server"]) + ["--addr", f"127.0.0.1:{port}",
                                                                    "--root", str(root / "data")]
    if config:
        (root / "config.toml").write_text(dumps(config))
        cmd += ["--config", str(root / "config.toml")]
    if htpasswd:
        line = subprocess.run(["htpasswd", "-Bbn", *htpasswd], check=True, capture_output=True).stdout
        (root / "htpasswd").write_bytes(line)
        cmd += ["--htpasswd", str(root / "htpasswd")]
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    log = open(root / "registry.log", "wb")
    repo_root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=repo_root,
                            env=None if command else {**os.environ, "PYTHONPATH": str(repo_root)})
    reg = Registry("soko", f"127.0.0.1:{port}", root, proc,
                   htpasswd[0] if htpasswd else None, htpasswd[1] if htpasswd else None)
    try:
        if tls:
            wait_port("127.0.0.1", port)
        else:
            wait_http(f"http://{reg.host}/v2/")
    except Exception:
        reg.stop()
        raise
    return reg


def sha256_file(path: Path) -> str:
    return "sha256:" + digests.of_path(path)[0].split(":", 1)[1]


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def start_token_registry(root: Path, users: dict[str, str] | None = None, **kw) -> tuple["TokenServer", Registry]:
    """A running TokenServer and a distribution that trusts it (stop both when done)."""
    ts = TokenServer(root / "tokens", users or {"tester": "s3cret"}, **kw).__enter__()
    reg = start_distribution(root / "reg", token={"realm": ts.realm, "service": ts.service,
                                                  "issuer": ts.issuer, "rootcertbundle": ts.bundle})
    return ts, reg


class LoopbackHTTP:
    """A ThreadingHTTPServer on a free loopback port, served from a thread; `with` stops it."""
    _server: "http.server.ThreadingHTTPServer | None" = None

    def _serve(self, handler: type) -> int:
        import http.server
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self._server.server_address[1]

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- a Docker token service for distribution's `auth: token` ---------------------------------
class TokenServer(LoopbackHTTP):
    """Issues RS256 JWTs with an x5c chain, as distribution's token auth expects.

    Anonymous callers get `pull` on repositories under `public/`; users (Basic
    auth, or a refresh token handed out with `offline_token=true`) get what
    they ask for. `jwt_lifetime` is what the registry enforces, `expires_in`
    what clients are told (they differ when a test wants a token to die early)."""

    service = "soko-test-registry"
    issuer = "soko-test-issuer"

    def __init__(self, root: Path, users: dict[str, str], expires_in: int = 300, jwt_lifetime: int | None = None):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        root.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.expires_in = expires_in
        self.jwt_lifetime = jwt_lifetime if jwt_lifetime is not None else expires_in
        self.requests: list[dict] = []
        self.refresh_tokens: dict[str, str] = {}
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soko test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = 0

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def _jwt(self, subject: str, access: list[dict]) -> str:
        import base64
        import json as _json
        import secrets as _secrets

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.jwt_lifetime,
                  "nbf": now - 1, "iat": now, "jti": _secrets.token_hex(8), "access": access}
        signing_input = f"{b64(_json.dumps(header).encode())}.{b64(_json.dumps(claims).encode())}"
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(sig)}"

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3:
                continue
            kind, name, actions = parts
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def __enter__(self) -> "TokenServer":
        import base64
        import http.server
        import json as _json
        import secrets as _secrets
        from urllib.parse import parse_qs, urlparse

        ts = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = _json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _issue(self, user: str | None, scopes: list[str], offline: bool, how: str) -> None:
                ts.requests.append({"how": how, "user": user, "scopes": scopes, "offline": offline})
                body = {"token": ts._jwt(user or "", ts._grant(user, scopes)), "expires_in": ts.expires_in,
                        "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                if offline and user:
                    rt = _secrets.token_hex(16)
                    ts.refresh_tokens[rt] = user
                    body["refresh_token"] = rt
                self._answer(200, body)

            def do_GET(self) -> None:
                q = parse_qs(urlparse(self.path).query)
                user = None
                authz = self.headers.get("Authorization", "")
                if authz.startswith("Basic "):
                    u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
                    if ts.users.get(u) != p:
                        ts.requests.append({"how": "denied", "user": u, "scopes": q.get("scope", [])})
                        return self._answer(401, {"details": "incorrect username or password"})
                    user = u
                self._issue(user, q.get("scope", []), q.get("offline_token", [""])[0] == "true", "get")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(n).decode())
                if form.get("grant_type") == ["refresh_token"]:
                    user = ts.refresh_tokens.get(form.get("refresh_token", [""])[0])
                    if user is None:
                        return self._answer(401, {"details": "invalid refresh token"})
                    scopes = " ".join(form.get("scope", [])).split()
                    return self._issue(user, scopes, False, "refresh")
                self._answer(400, {"details": "unsupported grant"})

        self.port = self._serve(Handler)
        return self
