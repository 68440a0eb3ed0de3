"""Several `soko serve` replicas on one S3 bucket and one PostgreSQL database,
behind HAProxy (tests/haproxy.py): one registry, as its clients see it.

`ReplicatedRegistry` is a RegistryProc whose `port` is the load balancer's,
so every test written for one server runs against the replicas unchanged:
`start`, `stop`, `restart` and `kill9` act on every replica (the whole
registry restarts or crashes); `replicas[i]` is one of them, for tests that
kill or inspect one. Each replica has a root of its own (nothing a replica
needs may live on its local disk) and the same flags and config file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tests.haproxy import HAProxy

from .conftest import RegistryProc


@dataclass
class ReplicatedRegistry(RegistryProc):
    count: int = 2
    sticky: bool = True
    replicas: list[RegistryProc] = field(default_factory=list)
    lb: HAProxy | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.metadata and self.storage_url, "replicas share PostgreSQL metadata and S3 storage"

    def _member(self, i: int) -> RegistryProc:
        root = self.root if i == 0 else self.root.parent / f"{self.root.name}-replica{i}"
        # the storage flag is in self.args already (RegistryProc.__post_init__)
        return RegistryProc(root, list(self.args), self.metadata, env=self.env)

    def start(self, port: int = 0) -> "ReplicatedRegistry":
        if not self.replicas:
            self.replicas = [self._member(i) for i in range(self.count)]
        for r in self.replicas:
            r.args = list(self.args)  # flags or a config added since
            r.start(r.port)
        if self.lb is None:
            self.lb = HAProxy([("127.0.0.1", r.port) for r in self.replicas], sticky=self.sticky,
                              workdir=self.root.parent / f"{self.root.name}-haproxy").start()
        else:
            self.lb.wait_up()
        self.port = self.lb.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = self.replicas[0].proc
        self.log = self.replicas[0].log
        return self

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    def close(self) -> None:
        """Stop the replicas and the load balancer (the fixture's teardown)."""
        self.stop()
        if self.lb is not None:
            self.lb.stop()
            self.lb = None

    def kill9(self) -> None:
        for r in self.replicas:
            r.kill9()

    def restart(self) -> "ReplicatedRegistry":
        self.stop()
        return self.start()

    def errors(self) -> str:
        return "".join(r.errors() for r in self.replicas)

    def replica_of(self, name: str) -> RegistryProc:
        """The replica the load balancer calls `name` (X-Soko-Replica)."""
        return self.replicas[int(name.removeprefix("r"))]
