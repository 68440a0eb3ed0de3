"""Servers the COPY/ADD tests start on loopback: a static HTTP server (ETag and Last-Modified,
as real ones send them; it also serves bare git repositories over git's dumb HTTP protocol)
and `git daemon`."""
from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import threading
import time
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        self.server.requests.append((self.command, self.path, dict(self.headers)))  # type: ignore[attr-defined]
        path = Path(self.translate_path(self.path))
        if path.is_file() and self.server.etags:  # type: ignore[attr-defined]
            etag = '"' + hashlib.sha256(path.read_bytes()).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._etag = etag
        return super().send_head()

    def end_headers(self) -> None:
        etag = getattr(self, "_etag", None)
        if etag:
            self.send_header("ETag", etag)
            self._etag = None
        super().end_headers()


class HTTPServer:
    """Serves `root` on 127.0.0.1:<ephemeral>; `requests` records (method, path, headers)."""

    def __init__(self, root: Path, etags: bool = True, tls: tuple[Path, Path] | None = None):
        handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.httpd.etags = etags  # type: ignore[attr-defined]
        scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list:
        return self.httpd.requests  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(base: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), to trust through SSL_CERT_FILE."""
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def git(*args, cwd: Path | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or "/"),
           "PATH": "/usr/bin:/bin", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
           "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z"}
    return subprocess.run(["git", *map(str, args)], cwd=cwd, env=env, check=True, capture_output=True).stdout.decode()


class GitRepo:
    """A work tree and the bare copy servers publish (`publish()` after each commit)."""

    def __init__(self, base: Path):
        self.work = base / "work"
        self.bare = base / "srv" / "repo.git"
        self.work.mkdir(parents=True)
        git("init", "-q", "-b", "main", self.work)

    def commit(self, files: dict[str, str], message: str = "c", executable: tuple[str, ...] = ()) -> str:
        for name, text in files.items():
            p = self.work / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            p.chmod(0o755 if name in executable else 0o644)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def publish(self) -> None:
        if not self.bare.exists():
            self.bare.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "-q", "--bare", self.work, self.bare)
        else:
            git("push", "-q", "--force", "--tags", self.bare, "main", cwd=self.work)
        git("update-server-info", cwd=self.bare)  # git's dumb HTTP protocol: a static server is enough


class GitDaemon:
    """`git daemon` serving the bare repositories under `base_path` on 127.0.0.1 (git://)."""

    def __init__(self, base_path: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                                      f"--port={port}", f"--base-path={base_path}", str(base_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"git://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("git daemon did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class SokoServe:
    """The real `soko serve` on 127.0.0.1:<ephemeral>, data under `root` (as a CI cache registry)."""

    def __init__(self, root: Path):
        import os
        import sys

        repo = Path(__file__).resolve().parents[2]
        self.log = root.parent / f"{root.name}-serve.log"
        root.mkdir(parents=True, exist_ok=True)
        err = open(self.log, "wb+")
        self.proc = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(root), "serve", "--addr",
                                      "127.0.0.1:0", "--root", str(root / "registry")], stdout=subprocess.DEVNULL,
                                     stderr=err, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            err.seek(0)
            text = err.read().decode(errors="replace")
            if "listening on " in text:
                self.url = text.split("listening on ", 1)[1].split()[0]
                self.host = self.url.split("://", 1)[1]
                err.close()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        err.close()
        self.close()
        raise RuntimeError(f"soko serve did not start: {self.log.read_text(errors='replace')}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
