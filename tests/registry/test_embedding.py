"""The API `soko serve` builds on: serve()/run() with on_ready, make_app()."""
from __future__ import annotations

import asyncio
import threading

from registry.server import ServerConfig, ServerInfo, serve
from registry.server.app import make_app

from .conftest import Client, unique


def test_serve_reports_the_real_port_and_stops(tmp_path):
    infos: list[ServerInfo] = []
    ready = threading.Event()
    holder: dict = {}

    def main() -> None:
        async def go() -> None:
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = asyncio.Event()

            def on_ready(info: ServerInfo) -> None:
                infos.append(info)
                ready.set()

            await serve(ServerConfig(addr="127.0.0.1:0", root=str(tmp_path / "reg")), on_ready, holder["stop"])

        asyncio.run(go())

    t = threading.Thread(target=main)
    t.start()
    assert ready.wait(30)
    info = infos[0]
    assert info.port > 0 and info.url == f"http://127.0.0.1:{info.port}" and info.tls_cert is None
    c = Client("127.0.0.1", info.port)
    name = unique()
    digest, raw = c.push_image(name, "v1")
    assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
    c.close()
    holder["loop"].call_soon_threadsafe(holder["stop"].set)
    t.join(30)
    assert not t.is_alive()
    assert (tmp_path / "reg" / "metadata.db").is_file()


async def test_make_app_in_process(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    app = make_app(ServerConfig(root=str(tmp_path / "reg")))
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/v2/")
        assert r.status == 200 and r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        r = await client.post("/v2/app/blobs/uploads/?digest=sha256:"
                              "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", data=b"hello")
        assert r.status == 201
        r = await client.get("/v2/app/blobs/sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        assert await r.read() == b"hello"
