"""The registry-metadata contract (registry/server/meta.py), one suite run against
SQLite and PostgreSQL: tags, manifests with references and subjects, blob links,
upload sessions, quotas under racing pushes, gc's SQL phase and its exclusion of
pushes, the UI's views and the migrations."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from registry.errors import APIError, RegistryError
from registry.server.config import ImmutableRule, ServerConfig
from registry.server.meta import REF_BLOB, REF_MANIFEST, GCRun, NewManifest, RegistryMeta
from registry.server.metadb import open_metadata
from registry.server.metadb.schema import MIGRATIONS, POSTGRES, SQLITE, render
from registry.server.policy import Policies

from .conftest import sha256

BACKENDS = (SQLITE, POSTGRES)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def url(request, backend: str) -> str | None:
    """None for SQLite (in the test's root), else a fresh PostgreSQL database."""
    return None if backend == SQLITE else request.getfixturevalue("pg_url")


@pytest.fixture
def meta(tmp_path: Path, url: str | None) -> RegistryMeta:
    m = open_metadata(tmp_path, url)
    yield m
    m.close()


def other(tmp_path: Path, url: str | None) -> RegistryMeta:
    """A second handle on the same metadata: another process, as far as locks go."""
    return open_metadata(tmp_path, url)


def manifest(repo: str, seed: str, refs=(), subject=None, artifact_type=None, annotations=None,
             media_type="application/vnd.oci.image.manifest.v1+json") -> NewManifest:
    return NewManifest(repo, sha256(seed.encode()), media_type, 100 + len(seed), subject, artifact_type,
                       annotations, list(refs))


def link(meta: RegistryMeta, repo: str, data: str, guard=None) -> str:
    digest = sha256(data.encode())
    assert meta.link_blob(repo, digest, len(data), lambda: True, guard)
    return digest


def put(meta: RegistryMeta, m: NewManifest, tags=(), guard=None) -> list[str]:
    return meta.put_manifest(m, list(tags), lambda: None, guard)


# -- tags, manifests, references ----------------------------------------------------------------------
def test_tags_are_listed_in_byte_order_and_paged(meta):
    layer = link(meta, "r", "layer")
    m = manifest("r", "m", [(layer, REF_BLOB)])
    # byte order, not a locale's: "B" < "a-c" < "a_c" < "ab" (a locale sorts "ab" before "a-c")
    tags = ["ab", "a-c", "B", "a_c", "v1.10", "v1.9"]
    assert put(meta, m, tags) == []
    assert meta.tags("r", None, None) == sorted(tags)
    assert meta.tags("r", None, 2) == ["B", "a-c"]
    assert meta.tags("r", "a-c", 2) == ["a_c", "ab"]
    assert meta.tags("r", "v1.9", None) == []
    assert meta.manifest_by_tag("r", "ab").digest == m.digest
    assert meta.manifest_by_tag("r", "nope") is None and meta.manifest_by_tag("q", "ab") is None
    assert meta.tags_of("r", m.digest) == sorted(tags)


def test_a_manifest_needs_its_references_in_its_repository(meta):
    layer = link(meta, "a", "layer")
    cfg = link(meta, "b", "config")  # linked, but in another repository
    m = manifest("a", "m", [(cfg, REF_BLOB), (layer, REF_BLOB)])
    placed = []
    assert meta.put_manifest(m, ["v1"], lambda: placed.append(1)) == [cfg]
    assert placed == [] and meta.manifest_by_digest("a", m.digest) is None and not meta.repo_exists("x")
    link(meta, "a", "config")
    assert meta.put_manifest(m, ["v1"], lambda: placed.append(1)) == [] and placed == [1]
    row = meta.manifest_by_digest("a", m.digest)
    assert (row.digest, row.media_type, row.size) == (m.digest, m.media_type, m.size)
    assert meta.linked_size("a", m.digest) == m.size  # a manifest is a blob of its repository too
    # an index needs its children as manifests of the repository
    index = manifest("a", "index", [(m.digest, REF_MANIFEST), (sha256(b"absent"), REF_MANIFEST)],
                     media_type="application/vnd.oci.image.index.v1+json")
    assert put(meta, index) == [sha256(b"absent")]
    # a pull-through cache stores first, fetches later
    assert meta.put_manifest(index, [], lambda: None, require_refs=False) == []
    assert meta.manifest_by_digest("a", index.digest) is not None


def test_referrers_by_subject_and_artifact_type(meta):
    layer = link(meta, "r", "layer")
    subject = manifest("r", "subject", [(layer, REF_BLOB)])
    put(meta, subject, ["v1"])
    sig = manifest("r", "sig", subject=subject.digest, artifact_type="application/vnd.example.sig",
                   annotations={"b": "2", "a": "1"})
    sbom = manifest("r", "sbom", subject=subject.digest, artifact_type="application/spdx+json")
    put(meta, sig)
    time.sleep(0.01)
    put(meta, sbom)
    put(meta, manifest("other", "sig", subject=subject.digest, artifact_type="application/vnd.example.sig"))
    refs = meta.referrers("r", subject.digest, None)
    assert [r.digest for r in refs] == [sig.digest, sbom.digest]  # in the order they came
    assert refs[0].annotations == {"a": "1", "b": "2"} and refs[1].annotations is None
    assert refs[0].to_json()["artifactType"] == "application/vnd.example.sig"
    assert [r.digest for r in meta.referrers("r", subject.digest, "application/spdx+json")] == [sbom.digest]
    assert meta.referrers("r", sha256(b"nothing"), None) == []


def test_moving_and_deleting_tags_and_manifests(meta):
    layer = link(meta, "r", "layer")
    one, two = manifest("r", "one", [(layer, REF_BLOB)]), manifest("r", "two", [(layer, REF_BLOB)])
    put(meta, one, ["latest", "v1"])
    put(meta, two, ["latest"])
    assert meta.manifest_by_tag("r", "latest").digest == two.digest
    assert meta.set_tag("r", "stable", one.digest) and meta.manifest_by_tag("r", "stable").digest == one.digest
    assert not meta.set_tag("r", "x", sha256(b"unknown"))
    assert meta.delete_tag("r", "v1") and not meta.delete_tag("r", "v1")
    assert meta.manifest_by_digest("r", one.digest) is not None  # a tag's delete keeps its manifest
    assert meta.delete_manifest("r", one.digest)
    assert meta.manifest_by_tag("r", "stable") is None and meta.linked_size("r", one.digest) is None
    assert not meta.delete_manifest("r", one.digest)
    assert meta.tags("r", None, None) == ["latest"]


def test_blob_links_per_repository(meta):
    digest = sha256(b"blob")
    assert not meta.link_blob("a", digest, 4, lambda: False)  # gone from the store: no link
    assert meta.linked_size("a", digest) is None and not meta.any_link(digest) and not meta.repo_exists("a")
    for repo in ("b", "a", "c/d"):
        assert meta.link_blob(repo, digest, 4, lambda: True)
    assert meta.linked_size("a", digest) == 4 and meta.linked_size("z", digest) is None
    assert meta.repos_linking(digest) == ["a", "b", "c/d"] and meta.repos_linking(digest, 1) == ["a"]
    assert meta.unlink_blob("a", digest) and not meta.unlink_blob("a", digest)
    assert meta.any_link(digest) and meta.repositories(None, None) == ["a", "b", "c/d"]
    assert meta.repositories("a", 1) == ["b"]
    assert meta.repositories_like("C/") == ["c/d"] and meta.repositories_like("", 2) == ["a", "b"]


def test_upload_sessions(meta):
    meta.new_upload("u1", "r")
    time.sleep(0.01)
    meta.new_upload("u2", "r")
    row = meta.upload("u1")
    assert (row.id, row.repo) == ("u1", "r") and row.started == row.updated
    time.sleep(0.01)
    meta.touch_upload("u1")
    assert meta.upload("u1").updated > row.updated
    assert [u.id for u in meta.recent_uploads(10)] == ["u1", "u2"] and meta.count_uploads() == 2
    assert meta.upload_ids() == {"u1", "u2"}
    placed = []
    digest = sha256(b"data")
    meta.finish_upload("u1", "r", digest, 4, lambda: placed.append(digest))
    assert placed == [digest] and meta.upload("u1") is None and meta.linked_size("r", digest) == 4
    meta.delete_upload("u2")
    assert meta.count_uploads() == 0 and meta.upload("u2") is None


def test_a_refused_guard_changes_nothing(meta):
    def refuse(tx):
        raise APIError("DENIED", "no")
    with pytest.raises(APIError):
        link(meta, "r", "blob", refuse)
    placed = []
    with pytest.raises(APIError):
        meta.finish_upload(None, "r", sha256(b"x"), 1, lambda: placed.append(1), refuse)
    with pytest.raises(APIError):
        put(meta, manifest("r", "m"), ["v1"], refuse)
    assert placed == [] and not meta.repo_exists("r") and meta.stats().blobs == 0


# -- policies ------------------------------------------------------------------------------------------------
def policies(**config) -> Policies:
    return Policies(ServerConfig(**config))


def test_quota_counts_unique_bytes_of_the_namespace(meta):
    p = policies(quotas={"team": 100})
    assert link(meta, "team/a", "x" * 60, p.quota_guard("team/a", sha256(b"x" * 60), 60))
    # the same blob in another repository of the namespace costs nothing more
    assert link(meta, "team/b", "x" * 60, p.quota_guard("team/b", sha256(b"x" * 60), 60))
    link(meta, "teamster/a", "y" * 90)  # another namespace that merely starts alike
    with pytest.raises(APIError, match="quota exceeded: namespace 'team' uses 60 of its 100 bytes"):
        link(meta, "team/c", "z" * 41, p.quota_guard("team/c", sha256(b"z" * 41), 41))
    assert link(meta, "team", "w" * 40, p.quota_guard("team", sha256(b"w" * 40), 40))


def test_two_pushes_racing_past_a_quota_exactly_one_wins(tmp_path, url, meta):
    """Both transactions are open at once (a barrier inside them) where the database
    lets them be: on PostgreSQL the quota lock is all that keeps the second out."""
    p = policies(quotas={"team": 100})
    second = other(tmp_path, url)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def push(m: RegistryMeta, repo: str, data: str) -> None:
        def inside() -> bool:
            try:
                barrier.wait(timeout=1)  # SQLite's writers cannot both be here: it times out
            except threading.BrokenBarrierError:
                pass
            return True
        digest = sha256(data.encode())
        try:
            results[repo] = m.link_blob(repo, digest, len(data), inside, p.quota_guard(repo, digest, len(data)))
        except APIError as e:
            results[repo] = e
    threads = [threading.Thread(target=push, args=(m, r, d))
               for m, r, d in ((meta, "team/a", "a" * 60), (second, "team/b", "b" * 60))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.close()
    assert sorted(type(v).__name__ for v in results.values()) == ["APIError", "bool"], results
    assert meta.stats().bytes == 60


def test_immutable_tag_cannot_move_even_when_two_pushes_race(tmp_path, url, meta):
    p = policies(immutable=[ImmutableRule("r", "v*")])
    layer = link(meta, "r", "layer")
    one, two = manifest("r", "one", [(layer, REF_BLOB)]), manifest("r", "two", [(layer, REF_BLOB)])
    second = other(tmp_path, url)
    barrier = threading.Barrier(2)
    errors: list[APIError] = []

    def push(m: RegistryMeta, new: NewManifest) -> None:
        def place() -> None:
            try:
                barrier.wait(timeout=1)
            except threading.BrokenBarrierError:
                pass
        try:
            m.put_manifest(new, ["v1"], place, p.manifest_guard("r", new.digest, new.size, ["v1"]))
        except APIError as e:
            errors.append(e)
    threads = [threading.Thread(target=push, args=a) for a in ((meta, one), (second, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.close()
    assert len(errors) == 1 and "immutable" in errors[0].message
    winner = meta.manifest_by_tag("r", "v1").digest
    with pytest.raises(APIError, match="immutable"):
        meta.delete_manifest("r", winner, p.delete_manifest_guard("r", winner))
    assert meta.manifest_by_tag("r", "v1").digest == winner


# -- garbage collection's SQL phase ----------------------------------------------------------------------
def test_gc_transaction_sweeps_metadata(meta):
    old = link(meta, "r", "old layer")
    kept = link(meta, "r", "kept layer")
    m = manifest("r", "m", [(kept, REF_BLOB)])
    put(meta, m, ["v1", "v2"])
    child = manifest("r", "child", [(kept, REF_BLOB)])
    put(meta, child)
    index = manifest("r", "index", [(child.digest, REF_MANIFEST)], media_type="application/vnd.oci.image.index.v1+json")
    put(meta, index, ["multi"])
    meta.new_upload("stale", "r")
    cutoff = time.time() + 1  # everything so far counts as old
    with meta.gc_transaction(commit=False) as tx:  # a dry run changes nothing
        assert tx.stale_uploads(cutoff) == ["stale"]
        tx.delete_uploads(["stale"])
        assert tx.delete_dead_links(cutoff) == 1
    assert meta.upload("stale") is not None and meta.linked_size("r", old) is not None
    with meta.gc_transaction() as tx:
        assert sorted(tx.tagged_repositories()) == ["r"] and tx.manifest_repositories() == ["r"]
        assert [t for t, _ in tx.tags_by_age("r")] == ["multi", "v2", "v1"]  # newest first
        assert set(tx.index_children()) == {(index.digest, child.digest)}
        assert tx.tagged_manifests() == {("r", m.digest), ("r", index.digest)}
        assert {n.digest for n in tx.manifests()} == {m.digest, child.digest, index.digest}
        tx.delete_tag("r", "v1")
        assert tx.delete_manifest("r", m.digest) == 1  # v2 went with it
        # `old` (no manifest refers to it) and m's own link; `kept` stays: the child refers to it
        assert tx.delete_dead_links(cutoff) == 2
        tx.delete_uploads(tx.stale_uploads(cutoff))
        tx.drop_orphans()
        assert not tx.is_linked(old) and tx.is_linked(kept)
        tx.record_gc(GCRun(time.time(), 0.5, 3, 300, 1, 2, "replica-a:42"))
    assert meta.tags("r", None, None) == ["multi"] and meta.upload_ids() == set()
    stats = meta.stats()
    assert (stats.gc_runs, stats.gc_bytes_freed, stats.last_gc.blobs_removed, stats.last_gc.tags_removed,
            stats.last_gc.runner) == (1, 300, 3, 2, "replica-a:42")
    with meta.gc_transaction() as tx:
        assert tx.delete_manifest("r", index.digest) == 1 and tx.delete_manifest("r", child.digest) == 0
        assert tx.delete_dead_links(cutoff) == 3  # the index's, the child's and `kept`
        tx.drop_orphans()
    assert meta.repositories(None, None) == [] and meta.stats().blobs == 0


def test_a_push_waits_while_gc_deletes(tmp_path, url, meta):
    """A link made while gc's transaction is open lands after it: it sees what gc deleted."""
    digest = sha256(b"blob")
    in_store = {digest}
    pusher = other(tmp_path, url)
    done = threading.Event()
    result: list[bool] = []

    def push() -> None:
        result.append(pusher.link_blob("r", digest, 4, lambda: digest in in_store))
        done.set()
    with meta.gc_transaction() as tx:
        assert not tx.is_linked(digest)
        t = threading.Thread(target=push)
        t.start()
        assert not done.wait(0.5), "a link went in while gc held its transaction"
        in_store.discard(digest)  # gc deletes the unlinked blob
    t.join()
    pusher.close()
    assert result == [False] and meta.linked_size("r", digest) is None


def test_gc_waits_for_a_push_in_flight(tmp_path, url, meta):
    digest = sha256(b"blob")
    inside, release = threading.Event(), threading.Event()
    pusher = other(tmp_path, url)

    def still_there() -> bool:
        inside.set()
        release.wait(5)
        return True
    t = threading.Thread(target=lambda: pusher.link_blob("r", digest, 4, still_there))
    t.start()
    assert inside.wait(5)
    linked: list[bool] = []
    g = threading.Thread(target=lambda: linked.append(_gc_sees_link(meta, digest)))
    g.start()
    time.sleep(0.3)
    assert not linked, "gc's transaction began while a push was linking"
    release.set()
    t.join()
    g.join()
    pusher.close()
    assert linked == [True]


def _gc_sees_link(meta: RegistryMeta, digest: str) -> bool:
    with meta.gc_transaction() as tx:
        return tx.is_linked(digest)


def test_one_collector_at_a_time_on_postgresql(tmp_path, pg_url):
    a, b = open_metadata(tmp_path, pg_url), open_metadata(tmp_path, pg_url)
    with a.gc_run() as first:
        with b.gc_run() as second:
            assert first and not second
    with b.gc_run() as again:
        assert again
    a.close()
    b.close()


# -- views -------------------------------------------------------------------------------------------------
def test_ui_views_filter_sort_and_page(meta):
    for name in ("team/app", "team/db", "web", "secret"):
        layer = link(meta, name, f"layer of {name}" * (3 if name == "web" else 1))
        put(meta, manifest(name, name, [(layer, REF_BLOB)]), [f"v{i}" for i in range(3 if name == "team/db" else 1)])
    visible = lambda n: n != "secret"  # noqa: E731
    rows, total = meta.repository_page(visible, "", "name", False, lambda total: (2, 0))
    assert total == 3 and [r.name for r in rows] == ["team/app", "team/db"]
    rows, total = meta.repository_page(visible, "", "name", False, lambda total: (2, 2))
    assert [r.name for r in rows] == ["web"]
    rows, _ = meta.repository_page(visible, "TEAM", "tags", True, lambda total: (50, 0))
    assert [(r.name, r.tags) for r in rows] == [("team/db", 3), ("team/app", 1)]
    rows, _ = meta.repository_page(None, "", "size", True, lambda total: (1, 0))
    assert rows[0].name == "web"
    fig = meta.repository_figures("web")
    assert fig.tags == 1 and fig.size > 0 and fig.pushed > 0 and meta.repository_figures("none") is None
    tags, total = meta.tag_page("team/db", "1", "name", False, lambda total: (50, 0))
    assert total == 1 and tags[0].tag == "v1" and tags[0].media_type.startswith("application/vnd.oci")
    tags, total = meta.tag_page("team/db", "", "pushed", True, lambda total: (2, 0))
    assert total == 3 and len(tags) == 2
    s = meta.stats()
    assert (s.repositories, s.tags, s.manifests, s.uploads, s.gc_runs, s.last_gc) == (4, 6, 4, 0, 0, None)


# -- migrations ---------------------------------------------------------------------------------------------
def _sqlite_schema(path: Path) -> dict:
    c = sqlite3.connect(path)
    out: dict = {}
    for (table,) in c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'reg_%'"):
        cols = c.execute(f"PRAGMA table_info({table})").fetchall()
        out[table] = {"columns": [(name, _kind(typ), bool(notnull) or pk > 0, pk) for _, name, typ, notnull, _, pk in cols],
                      "indexes": sorted(tuple(r[2] for r in c.execute(f"PRAGMA index_info({idx[1]})"))
                                        for idx in c.execute(f"PRAGMA index_list({table})"))}
    c.close()
    return out


def _postgres_schema(url: str) -> dict:
    import psycopg

    out: dict = {}
    with psycopg.connect(url) as c:
        tables = [r[0] for r in c.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema='public' AND table_name LIKE 'reg_%'")]
        for table in tables:
            pk = dict(c.execute(
                "SELECT a.attname, array_position(i.indkey, a.attnum) + 1 FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid=i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid=%s::regclass AND i.indisprimary",
                (table,)).fetchall())
            cols = c.execute("SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns "
                             "WHERE table_name=%s ORDER BY ordinal_position", (table,)).fetchall()
            for name, typ, _, collation in cols:
                assert typ != "text" or collation == "C", (table, name, collation)
            indexes = []
            for (idx,) in c.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid=%s::regclass",
                                    (table,)):
                indexes.append(tuple(r[0] for r in c.execute(
                    "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                    "JOIN pg_attribute a ON a.attnum=k.attnum WHERE i.indexrelid=%s::regclass "
                    "AND a.attrelid=i.indrelid ORDER BY k.n", (idx,))))
            out[table] = {"columns": [(name, _kind(typ), nullable == "NO", pk.get(name, 0))
                                      for name, typ, nullable, _ in cols],
                          "indexes": sorted(indexes)}
    return out


def _kind(sql_type: str) -> str:
    t = sql_type.lower()
    return "int" if "int" in t else "real" if t in ("real", "double precision") else "text" if "text" in t else t


def test_both_dialects_make_the_same_schema(tmp_path, pg_url):
    open_metadata(tmp_path, None).close()
    open_metadata(tmp_path, pg_url).close()
    lite, pg = _sqlite_schema(tmp_path / "metadata.db"), _postgres_schema(pg_url)
    assert set(lite) == {"reg_repositories", "reg_blob_links", "reg_manifests", "reg_manifest_refs", "reg_tags",
                         "reg_uploads", "reg_gc_runs"}
    # SQLite's INTEGER PRIMARY KEY is a rowid alias: its index is the table itself
    lite["reg_gc_runs"]["indexes"].append(("id",))
    for table in lite:
        lite[table]["indexes"].sort()
    assert lite == pg


def test_migrations_bring_an_older_schema_up_and_refuse_a_newer_one(tmp_path, url, backend):
    first = render(backend)[:1]
    if backend == SQLITE:  # a root from before reg_gc_runs existed
        from storage.metadata import MetadataDB

        db = MetadataDB(tmp_path / "metadata.db")
        db.migrate("registry", first)
        db.close()
    else:
        import psycopg

        from registry.server.metadb.schema import statements
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            for stmt in statements(first[0]):
                c.execute(stmt)
            c.execute("INSERT INTO schema_versions VALUES('registry', 1)")
    m = open_metadata(tmp_path, url)
    with m.gc_transaction() as tx:
        tx.record_gc(GCRun(1.0, 2.0, 3, 4, 5, 6))
    assert m.stats().last_gc == GCRun(1.0, 2.0, 3, 4, 5, 6)
    m.close()
    again = open_metadata(tmp_path, url)  # migrated already: nothing to do
    assert again.stats().gc_runs == 1
    again.close()
    _set_version(tmp_path, url, len(MIGRATIONS) + 1)
    with pytest.raises(RegistryError, match="newer than this soko understands"):
        open_metadata(tmp_path, url)


def _set_version(root: Path, url: str | None, version: int) -> None:
    if url is None:
        with sqlite3.connect(root / "metadata.db") as c:
            c.execute("UPDATE schema_versions SET version=? WHERE component='registry'", (version,))
        c.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE schema_versions SET version=%s WHERE component='registry'", (version,))


def test_replicas_starting_together_migrate_once(pg_url, tmp_path):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_metadata(tmp_path, pg_url).close()
        except BaseException as e:
            errors.append(e)
    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_database_that_does_not_answer_is_one_clear_error(tmp_path):
    from tests.pgserver import free_port

    url = f"postgresql://soko@127.0.0.1:{free_port()}/registry"
    with pytest.raises(RegistryError, match=r"^metadata postgresql://soko@127.0.0.1:\d+/registry: .*refused"):
        open_metadata(tmp_path, url)
    with pytest.raises(RegistryError, match="want postgresql://"):
        open_metadata(tmp_path, "mysql://x/y")


def _collecting(meta: RegistryMeta, inside=lambda: None) -> tuple[threading.Thread, threading.Event]:
    """A collector's transaction on `meta`, started in a thread: the thread, and an event set
    (after `inside()`) once the transaction has begun."""
    entered = threading.Event()

    def collect() -> None:
        with meta.gc_transaction():
            inside()
            entered.set()
    t = threading.Thread(target=collect)
    t.start()
    return t, entered


def test_gc_waits_for_pins_and_pins_for_nobody(meta, tmp_path, url):
    """A pin (a push between its blob's commit and its link) holds off gc's
    transactions in any process; pins and links never wait for pins."""
    gc_side = other(tmp_path, url)
    try:
        p1 = meta.pin()
        p2 = gc_side.pin()  # another process pins too, at once
        link(meta, "r", "linked while pinned")  # a pinned push links
        t, entered = _collecting(gc_side)
        assert not entered.wait(0.5)
        p1.release()
        assert not entered.wait(0.3)  # the other pin still holds
        p2.release()
        assert entered.wait(10)
        t.join()
        p3 = meta.pin()  # and pins come back after the run
        p3.release()
    finally:
        gc_side.close()


def test_pins_arriving_while_gc_waits_wait_for_it_on_postgresql(tmp_path, pg_url):
    """A process's pins share one connection's lock (a count), yet a collector
    waiting for them is not starved by pins that keep arriving: a pin asked for
    while it waits comes after it, as separate sessions queue in PostgreSQL."""
    meta, gc_side = open_metadata(tmp_path, pg_url), open_metadata(tmp_path, pg_url)
    order: list[str] = []
    try:
        p1 = meta.pin()
        t, entered = _collecting(gc_side, lambda: order.append("gc"))
        assert not entered.wait(0.3)  # the collector waits for p1
        late: list = []

        def pin_late() -> None:
            late.append(meta.pin())
            order.append("late pin")
        u = threading.Thread(target=pin_late)
        u.start()
        time.sleep(0.3)
        assert order == []  # the late pin waits behind the collector; the collector for p1
        p1.release()
        assert entered.wait(10)
        u.join(10)
        t.join()
        assert order == ["gc", "late pin"]
        late[0].release()
    finally:
        meta.close()
        gc_side.close()


def _pin_holder_backend(pg_url: str) -> tuple[int, object]:
    """(pid, the query start of its last statement) of the session holding pins shared (GC_PIN)."""
    import psycopg

    from registry.server.metadb.postgres import GC_PIN, LOCK_CLASS

    with psycopg.connect(pg_url, autocommit=True) as c:
        return c.execute("SELECT a.pid, a.query_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                         "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s "
                         "AND l.objid::bigint = %s AND l.objsubid = 2", (LOCK_CLASS, GC_PIN)).fetchone()


def _a_late_pin_waits_behind_the_collector(meta, held, collector: threading.Thread,
                                          collected: threading.Event) -> None:
    """A pin asked for now waits behind the collector, which waits for `held`; once `held` is
    released the collector runs, then the late pin is granted."""
    late: list = []
    u = threading.Thread(target=lambda: late.append(meta.pin()))
    u.start()
    u.join(0.5)
    assert late == [] and not collected.is_set()
    held.release()
    assert collected.wait(10)
    collector.join(10)
    u.join(10)
    assert len(late) == 1
    late[0].release()


def test_a_held_pin_asks_postgresql_nothing_until_a_collector_comes(tmp_path, pg_url):
    """While a pin is held and no collector comes, the holder's session sends no statement (it
    once looked for waiting collectors 40 times a second); a collector that comes is heard at
    once: pins asked for after it wait for it."""
    meta, gc_side = open_metadata(tmp_path, pg_url), open_metadata(tmp_path, pg_url)
    try:
        p1 = meta.pin()
        time.sleep(0.2)
        pid, started = _pin_holder_backend(pg_url)
        time.sleep(1.0)
        assert _pin_holder_backend(pg_url) == (pid, started)  # the same session, no statement since
        t, entered = _collecting(gc_side)
        time.sleep(0.3)
        _a_late_pin_waits_behind_the_collector(meta, p1, t, entered)
    finally:
        meta.close()
        gc_side.close()


def test_a_collector_that_asks_seconds_after_its_announcement_is_still_seen(tmp_path, pg_url):
    """On a loaded machine a collector's lock request can come seconds after its NOTIFY: the
    holder keeps looking until it sees it (it once looked for a second, then slept, and pins
    kept joining the count in front of the collector)."""
    import psycopg

    from registry.server.metadb.pgpins import announce
    from registry.server.metadb.postgres import GC_PIN, LOCK_CLASS

    meta = open_metadata(tmp_path, pg_url)
    collector = psycopg.connect(pg_url, autocommit=True)
    try:
        p1 = meta.pin()
        time.sleep(0.2)
        announce(collector)
        time.sleep(1.5)  # a slow collector
        got = threading.Event()

        def collect() -> None:
            with collector.transaction():
                collector.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, GC_PIN))
                got.set()
        t = threading.Thread(target=collect)
        t.start()
        time.sleep(0.3)
        _a_late_pin_waits_behind_the_collector(meta, p1, t, got)
    finally:
        meta.close()
        collector.close()
