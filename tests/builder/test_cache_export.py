"""--cache-to / --cache-from: a cache exported to a real `soko serve` (or a local OCI layout) and
imported on a fresh store, as another CI runner would. Steps run and blobs fetched are counted."""
from __future__ import annotations

import json

import pytest

from builder import BuildError, BuildOptions, build
from builder.cachespec import parse_from, parse_to
from builder.errors import CacheExportError, CacheSpecError
from storage.images import ImageStore
from tests.builder.helpers import ImageFS, write_context
from tests.builder.servers import SokoServe
from tests.client.proxy import Proxy

MULTI = """\
FROM busybox AS deps
RUN echo deps > /deps && head -c 20000 /dev/urandom > /deps.bin
FROM busybox AS builder
COPY src/ /src/
RUN cat /src/* > /built && head -c 20000 /dev/urandom > /builder-scratch
FROM busybox
WORKDIR /app
COPY --from=builder /built ./built
COPY --from=deps /deps ./deps
COPY late.txt ./
RUN echo final > /app/final
CMD ["cat", "/app/built"]
"""


@pytest.fixture
def registry(tmp_path):
    srv = SokoServe(tmp_path / "serve")
    yield srv
    srv.close()


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {"src/a.txt": "a\n", "src/b.txt": "b\n", "late.txt": "late\n",
                                            "Dockerfile": MULTI})


def runner(store: ImageStore, tmp_path, name: str) -> ImageStore:
    """A fresh store holding only the base image (the same bytes: pulled from one registry on a real CI)."""
    from registry.client.local import transfer

    other = ImageStore(tmp_path / name)
    transfer(store, other, store.resolve_digest("busybox"), "busybox:latest")
    return other


def run_build(store, ctx, **kw):
    events = []
    result = build(store, BuildOptions(context=ctx, **kw), events.append)
    ran = [e.instruction for e in events if e.kind == "step" and not e.cached]
    return result, ran, events


def layers_of(store, ref) -> list[str]:
    return [d.digest for d in store.resolve(ref).manifest.layers]


def test_registry_cache_on_a_fresh_runner_runs_nothing_and_fetches_only_the_image(store, ctx, registry, tmp_path):
    cache = f"{registry.host}/app:cache"
    first, ran, _ = run_build(store, ctx, tags=["app:1"], cache_to=[parse_to(f"type=registry,ref={cache},mode=max")])
    assert sum(r.startswith("RUN") for r in ran) == 3
    image_layers = layers_of(store, "app:1")
    base_layers = layers_of(store, "busybox")
    fresh = runner(store, tmp_path, "fresh")
    with Proxy(registry.host, intercept=lambda seen: None) as px:  # records every request
        second, ran, events = run_build(fresh, ctx, tags=["app:1"],
                                        cache_from=[parse_from(f"type=registry,ref={px.host}/app:cache")])
    assert ran == [], ran  # no step ran: every RUN (and COPY) came from the cache
    assert second.manifest_digest == first.manifest_digest  # the very image the first runner built
    assert sorted(second.fetched) == sorted(set(image_layers) - set(base_layers))
    blob_gets = {r.path.rsplit("/", 1)[1] for r in px.requests if r.method == "GET" and "/blobs/" in r.path}
    cache_config = [r for r in blob_gets if r not in image_layers]
    assert len(cache_config) == 1 and set(blob_gets) - set(cache_config) == set(second.fetched)
    # the intermediate stages' layers were hits too, and were never downloaded
    stored = set(fresh.blobs)
    deps_run = json.loads(json.dumps(store.resolve("app:1").config.data))  # (for the message)
    assert not [d for d in stored if d not in image_layers and d not in base_layers
                and fresh.blobs.size(d) > 15000], deps_run["rootfs"]
    assert ImageFS(fresh, "app:1").read("/app/built") == b"a\nb\n"
    # the next build on that runner downloads nothing: the fetched hits joined its own cache
    third, ran, _ = run_build(fresh, ctx, tags=["app:1"], cache_from=[parse_from(f"type=registry,ref={cache}")])
    assert ran == [] and third.fetched == [] and third.manifest_digest == first.manifest_digest


def test_a_changed_file_invalidates_exactly_the_steps_after_it(store, ctx, registry, tmp_path):
    cache = f"{registry.host}/app:cache"
    run_build(store, ctx, tags=["app:1"], cache_to=[parse_to(f"type=registry,ref={cache},mode=max")])
    (ctx / "late.txt").write_text("changed late\n")
    fresh = runner(store, tmp_path, "fresh")
    _, ran, _ = run_build(fresh, ctx, tags=["app:2"], cache_from=[parse_from(f"type=registry,ref={cache}")])
    assert ran == ["COPY late.txt ./", "RUN echo final > /app/final", 'CMD ["cat", "/app/built"]']
    (ctx / "src/b.txt").write_text("B\n")
    fresh2 = runner(store, tmp_path, "fresh2")
    _, ran, _ = run_build(fresh2, ctx, tags=["app:3"], cache_from=[parse_from(f"type=registry,ref={cache}")])
    assert ran == ["COPY src/ /src/", "RUN cat /src/* > /built && head -c 20000 /dev/urandom > /builder-scratch",
                   "COPY --from=builder /built ./built", "COPY --from=deps /deps ./deps", "COPY late.txt ./",
                   "RUN echo final > /app/final", 'CMD ["cat", "/app/built"]']
    assert ImageFS(fresh2, "app:3").read("/app/built") == b"a\nB\n"


def test_mode_min_holds_the_final_image_steps_only(store, ctx, registry, tmp_path):
    run_build(store, ctx, tags=["app:1"], cache_to=[parse_to(f"type=local,dest={tmp_path / 'min'}"),
                                                     parse_to(f"type=local,dest={tmp_path / 'max'},mode=max")])
    def doc(d):
        index = json.loads((d / "index.json").read_text())
        m = json.loads((d / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
        return m, json.loads((d / "blobs/sha256" / m["config"]["digest"].split(":")[1]).read_text())

    mmin, cmin = doc(tmp_path / "min")
    mmax, cmax = doc(tmp_path / "max")
    image = set(layers_of(store, "app:1"))
    assert {x["digest"] for x in mmin["layers"]} <= image
    assert {x["digest"] for x in mmax["layers"]} - image  # the stages' own layers
    assert mmin["artifactType"] == mmax["artifactType"] == "application/vnd.soko.build-cache.v1"
    assert len(cmax["records"]) > len(cmin["records"])
    assert {r["kind"] for r in cmax["records"]} == {"step", "alias"}
    # min on a fresh runner: the final stage hits, the COPY --from hits by alias, so its
    # stages never run either; a change in a stage then needs that stage's steps, which min lacks
    fresh = runner(store, tmp_path, "fresh")
    _, ran, _ = run_build(fresh, ctx, tags=["app:1"], cache_from=[parse_from(f"type=local,src={tmp_path / 'min'}")])
    assert ran == []
    (ctx / "src/a.txt").write_text("A\n")
    fresh2 = runner(store, tmp_path, "fresh2")
    _, ran, _ = run_build(fresh2, ctx, cache_from=[parse_from(f"type=local,src={tmp_path / 'min'}")])
    assert "RUN echo deps > /deps && head -c 20000 /dev/urandom > /deps.bin" in ran
    fresh3 = runner(store, tmp_path, "fresh3")
    _, ran, _ = run_build(fresh3, ctx, cache_from=[parse_from(f"type=local,src={tmp_path / 'max'}")])
    assert not [r for r in ran if r.startswith("RUN echo deps")]


def test_unreachable_cache_sources_are_warnings(store, ctx, tmp_path):
    r, ran, events = run_build(store, ctx, tags=["app:1"], cache_from=[
        parse_from("type=registry,ref=127.0.0.1:1/nothing:cache"), parse_from(f"type=local,src={tmp_path / 'none'}"),
        parse_from("127.0.0.1:1/plain:latest")])
    warnings = [e.text for e in events if e.kind == "warning"]
    assert len(warnings) == 3 and all("building without it" in w for w in warnings), warnings
    assert store.resolve("app:1").id == r.image_id and len(ran) > 0


def test_a_failed_export_fails_after_the_image_is_stored(store, ctx, tmp_path):
    with pytest.raises(CacheExportError, match=r"^--cache-to 127.0.0.1:1/x:cache: ") as e:
        run_build(store, ctx, tags=["app:1"], cache_to=[parse_to("type=registry,ref=127.0.0.1:1/x:cache")])
    assert e.value.result is not None and store.resolve("app:1").id == e.value.result.image_id
    r, _, events = run_build(store, ctx, tags=["app:2"],
                             cache_to=[parse_to("type=registry,ref=127.0.0.1:1/x:cache,ignore-error=true")])
    assert [e.text for e in events if e.kind == "warning"][0].startswith("--cache-to 127.0.0.1:1/x:cache: ")
    assert store.resolve("app:2").id == r.image_id


def test_a_plain_image_is_followed_by_its_history(store, ctx, registry, tmp_path):
    """A pushed image without any cache export: RUN steps are reused when the base, every
    instruction and every layer below match; COPY is redone and must give the same layer."""
    from registry.client.pushing import push_async
    from registry.client.tasks import run_sync

    (ctx / "Dockerfile").write_text("FROM busybox\nENV A=1\nCOPY src/ /src/\nRUN cat /src/* > /all\n"
                                    "RUN --mount=type=tmpfs,target=/t cat /proc/sys/kernel/random/uuid > /m\n"
                                    "RUN echo after > /after\n")
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}  # a COPY's new directories are then made the same each time
    first, ran, _ = run_build(store, ctx, tags=["app:1"], build_args=epoch)
    run_sync(push_async(store, "app:1", f"{registry.host}/team/app:1"))
    fresh = runner(store, tmp_path, "fresh")
    _, ran, _ = run_build(fresh, ctx, tags=["app:1"], build_args=epoch,
                          cache_from=[parse_from(f"{registry.host}/team/app:1")])
    # COPY redone (its sources are not in the history), the first RUN reused; a RUN with a
    # --mount is not (what it mounted is not in the history either), nor anything after it once
    # its layer differs from the image's
    assert ran == ["COPY src/ /src/", "RUN --mount=type=tmpfs,target=/t cat /proc/sys/kernel/random/uuid > /m",
                   "RUN echo after > /after"]
    (ctx / "src/a.txt").write_text("other\n")
    fresh2 = runner(store, tmp_path, "fresh2")
    _, ran, _ = run_build(fresh2, ctx, build_args=epoch, cache_from=[parse_from(f"{registry.host}/team/app:1")])
    assert "RUN cat /src/* > /all" in ran  # the COPY gave another layer: nothing above it is reused


def test_cache_flags_are_checked():
    assert parse_to("type=registry,ref=localhost:5000/a:c,mode=max").mode == "max"
    assert parse_to("type=local,dest=/tmp/x").path == "/tmp/x" and parse_to("type=local,dest=/x").mode == "min"
    assert parse_from("localhost:5000/app:1").type == "image"
    assert parse_from("ref=localhost:5000/app:c").type == "registry"
    for bad in ("foo", "type=registry", "type=s3,ref=a/b", "type=registry,ref=a/b,mode=medium",
                "type=local", "type=registry,ref=Bad/Upper", "type=registry,ref=a/b,colour=red",
                "type=registry,ref=a/b,ref=c/d", "type=local,dest=/x,ignore-error=maybe", ""):
        with pytest.raises(CacheSpecError):
            parse_to(bad)
    for bad in ("type=local", "type=gha,scope=x", "Bad/Upper:x", "type=registry,ref=", "", "type=local,src=/x,a=b"):
        with pytest.raises(CacheSpecError):
            parse_from(bad)
    assert issubclass(CacheSpecError, BuildError)
