"""A private PostgreSQL 15 cluster for tests: Debian's initdb and pg_ctl under a temp dir.

TESTING.md: postgres refuses to run as root, so as root the cluster belongs
to the `postgres` system user (the package creates it) and every server
command runs through `runuser -u postgres --`; as anyone else it runs as
that user. The binaries are Debian's (/usr/lib/postgresql/<major>/bin),
never whatever else is first on PATH: a fresh CI machine has only those.
The server listens on 127.0.0.1 at a free port (and a socket in the temp
dir), trusts local connections for the role `soko`, and is stopped with
`pg_ctl stop` (then by its postmaster PID if that fails); the dir goes with it.

Each test gets a database of its own, cloned from a template
(`CREATE DATABASE ... TEMPLATE`, a few milliseconds), so tests never see
each other's rows. The template's default collation is ICU English, not
"C": what the registry must order bytewise, its schema orders bytewise.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

USER = "soko"  # the role initdb makes the superuser
ENGINE_USER = "postgres"  # who runs the server when we are root


def bindir() -> Path:
    """Debian's server binaries (the newest major installed)."""
    base = Path("/usr/lib/postgresql")
    found = sorted((p / "bin" for p in base.glob("*") if (p / "bin" / "pg_ctl").is_file()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (make setup installs the postgresql package)")
        pytest.skip("PostgreSQL is not installed (package postgresql)")
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One running cluster; `database()` hands out fresh databases."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        # mkdtemp under /tmp, not pytest's 0700 tree: the postgres user must reach it
        self.base = Path(tempfile.mkdtemp(prefix="soko-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        self.template = "soko_template"
        if self.as_root:
            pw = pwd.getpwnam(ENGINE_USER)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--encoding=UTF8",
                      "--no-locale", "--no-sync")
            self._start()
            # an English collation by default, as most production clusters have: byte order
            # (tags/list, _catalog) must come from the schema, not from the cluster's locale
            self.sql("postgres", f"CREATE DATABASE {self.template} TEMPLATE template0 ENCODING 'UTF8' "
                                 "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
        except BaseException:
            self.stop()
            raise

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin / tool), *args]
        return ["runuser", "-u", ENGINE_USER, "--", *cmd] if self.as_root else cmd

    def _run(self, tool: str, *args: str) -> str:
        p = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, cwd=self.base)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {p.returncode}: {p.stderr or p.stdout}")
        return p.stdout

    def _start(self) -> None:
        # durability is not what tests measure: no fsync makes CREATE DATABASE and commits cheap
        opts = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                f"-c max_connections=300 -k {self.base}")
        for _ in range(5):  # another process may take the port between free_port() and the bind
            self.port = free_port()
            p = subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                                         "-o", f"{opts} -p {self.port}", "start"),
                               capture_output=True, text=True, cwd=self.base)
            if p.returncode == 0:
                return
            if "could not bind" not in self.log.read_text(errors="replace"):
                raise RuntimeError(f"pg_ctl start failed: {p.stderr or p.stdout}\n{self.log_tail()}")
        raise RuntimeError(f"PostgreSQL found no free port: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def url(self, db: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def sql(self, db: str, statement: str) -> str:
        """Run one statement with psql (outside any transaction: CREATE DATABASE may run)."""
        p = subprocess.run([str(self.bin.parent / "bin" / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", db, "-c", statement],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {p.stderr}")
        return p.stdout

    def database(self) -> str:
        """A new empty database (from the template); returns its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.sql("postgres", f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.sql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            p = subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"),
                               capture_output=True, text=True, cwd=self.base)
            if p.returncode != 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.05)
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL cluster for the whole session."""
    srv = PostgresServer()
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer):
    """A fresh database of this test's own: its postgresql:// URL."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)
