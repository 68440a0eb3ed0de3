"""A real S3 server for tests: Ceph's RADOS Gateway from Debian's packages,
on loopback, all state in one temp dir.

radosgw needs a RADOS cluster, so this boots the smallest that works: one
ceph-mon, one ceph-osd on memstore (objects in RAM, no mkfs), no mgr, no cephx
inside the cluster (S3 requests are still signature-checked against a user
made with radosgw-admin). Every daemon binds 127.0.0.1; radosgw and the mon
take kernel-chosen ports (never 6800-7300, where the OSD binds). Daemons are
started in their own sessions and stopped by the PIDs recorded here, never by
name. Up in about 3 s.

    python -m tests.s3server DIR     # start, print S3_* variables, wait for ^C
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "SOKOTESTACCESSKEY001"
SECRET_KEY = "sokotestsecretkey000000000000000000000000"
REGION = "us-east-1"
PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")
POOLS = (".rgw.root", "default.rgw.log", "default.rgw.control", "default.rgw.meta",
         "default.rgw.buckets.index", "default.rgw.buckets.data", "default.rgw.buckets.non-ec")


class S3ServerError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(d: Path, fsid: str, mon_port: int, port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
run dir = {d}/run
log file = {d}/log/$name.log
mon data = {d}/mon/$id
osd data = {d}/osd/$id
osd objectstore = memstore
memstore device bytes = {8 * 1024 ** 3}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.1
osd fast shutdown = false

[client]
admin socket =

[mon]
admin socket = $run_dir/$name.asok
[osd]
admin socket = $run_dir/$name.asok
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw]
admin socket = $run_dir/$name.asok
rgw frontends = beast endpoint=127.0.0.1:{port}
rgw data = {d}/rgw
rgw thread pool size = 32
debug rgw = 1
"""


@dataclass
class RadosGW:
    dir: Path
    port: int = 0
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def url(self, bucket: str, prefix: str = "") -> str:
        """The `--storage` URL of a bucket here."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region={self.region}"

    def bucket(self, prefix: str = "soko") -> str:
        """A new bucket; its `--storage` URL (with `prefix`)."""
        import asyncio

        from storage.content.s3api import Credentials, S3Client

        name = f"t-{uuid.uuid4().hex[:20]}"

        async def make() -> None:
            c = S3Client(self.endpoint, self.region, name, Credentials(self.access_key, self.secret_key))
            await c.create_bucket()
            await c.close()

        asyncio.run(make())
        return self.url(name, prefix)

    # -- running commands ------------------------------------------------------------------------
    def _ceph(self, *args: str, timeout: float = 30) -> str:
        r = subprocess.run([args[0], "-c", str(self.conf), *args[1:]], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise S3ServerError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return r.stdout

    def _launch(self, name: str, *args: str) -> None:
        log = open(self.dir / "log" / f"{name}.out", "ab")
        p = subprocess.Popen([args[0], "-c", str(self.conf), *args[1:], "-f"], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pids[name] = p.pid
        self._procs[name] = p

    def _wait(self, what: str, check, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (S3ServerError, subprocess.TimeoutExpired, OSError):
                pass
            for name, p in self._procs.items():
                if p.poll() is not None:
                    raise S3ServerError(f"{name} exited ({p.returncode}) while waiting for {what}; see "
                                        f"{self.dir}/log/{name}.out")
            if time.monotonic() > end:
                raise S3ServerError(f"timed out waiting for {what}; see {self.dir}/log")
            time.sleep(0.1)

    def _s3_up(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")

    # -- life --------------------------------------------------------------------------------------
    def start(self) -> "RadosGW":
        missing = missing_binaries()
        if missing:
            raise S3ServerError(f"missing {' '.join(missing)}: apt-get install {' '.join(PACKAGES)} "
                                "(make setup does)")
        self._procs: dict[str, subprocess.Popen] = {}
        for sub in ("log", "run", "rgw", "mon/a", "osd/0"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        mon_port = free_port()
        self.port = self.port or free_port()
        if 6800 <= self.port <= 7300:
            raise S3ServerError(f"port {self.port} is in the OSD's range 6800-7300")
        self.conf.write_text(_conf(self.dir, fsid, mon_port, self.port))
        try:
            self._ceph("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", "--fsid", fsid,
                       str(self.dir / "monmap"))
            self._ceph("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(self.dir / "monmap"))
            self._launch("mon", "ceph-mon", "-i", "a")
            self._wait("ceph-mon", lambda: self._ceph("ceph", "--connect-timeout", "5", "mon", "stat", timeout=10))
            osd_uuid = str(uuid.uuid4())
            self._ceph("ceph", "osd", "new", osd_uuid)
            self._ceph("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
            self._launch("osd", "ceph-osd", "-i", "0")
            self._wait("ceph-osd", lambda: "osd.0 up" in self._ceph("ceph", "osd", "dump"))
            # RGW's pools now and in parallel, not lazily at the first requests
            jobs = [subprocess.Popen(["sh", "-c", f'ceph -c "{self.conf}" osd pool create {p} 8 8 replicated && '
                                                  f'ceph -c "{self.conf}" osd pool application enable {p} rgw'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in POOLS]
            if any(j.wait(60) != 0 for j in jobs):
                raise S3ServerError("creating radosgw's pools failed")
            self._ceph("radosgw-admin", "user", "create", "--uid=soko", "--display-name=soko tests",
                       f"--access-key={self.access_key}", f"--secret-key={self.secret_key}")
            self._launch("rgw", "radosgw", "-n", "client.rgw")
            self._wait(f"radosgw on 127.0.0.1:{self.port}", self._s3_up)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop exactly the daemons this object started, radosgw first."""
        for name in ("rgw", "osd", "mon"):
            p = getattr(self, "_procs", {}).get(name)
            if p is None or p.poll() is not None:
                continue
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)

    def rgw_log(self) -> Path:
        return self.dir / "log" / "client.rgw.log"


def main() -> None:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/soko-s3").resolve()
    t = time.monotonic()
    gw = RadosGW(d).start()
    print(f"S3_ENDPOINT={gw.endpoint}\nS3_ACCESS_KEY={gw.access_key}\nS3_SECRET_KEY={gw.secret_key}\n"
          f"S3_REGION={gw.region}\n# up in {time.monotonic() - t:.1f} s; ^C stops it", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
