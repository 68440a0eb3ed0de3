"""RUN --mount: cache, secret, bind, tmpfs and ssh, with BuildKit's options, and nothing of them in a layer."""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
import threading
import time
from pathlib import Path

import pytest

from builder import BuildError, StepError
from builder.cachemounts import CacheMounts
from builder.secrets import SecretSource
from storage import compression
from tests.builder.helpers import ImageFS, do_build, write_context


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {"f": "context-file\n", "sub/g": "sub-file\n", "ignored/x": "hidden\n",
                                            ".dockerignore": "ignored\n"})


def layer_names(store, ref: str) -> list[list[str]]:
    """The paths in each layer of the image (RUN layers above the base)."""
    img = store.resolve(ref)
    out = []
    for d in img.manifest.layers[1:]:
        with store.blobs.open(d.digest) as raw, tarfile.open(fileobj=compression.open_reader(raw), mode="r|") as t:
            out.append(sorted(m.name for m in t))
    return out


def output(b) -> str:
    return "\n".join(b.output)


# -- type=cache -------------------------------------------------------------------------
def test_cache_mount_persists_is_shared_per_id_and_never_lands_in_a_layer(store, ctx):
    b1 = do_build(store, ctx, """\
FROM busybox
RUN --mount=type=cache,target=/var/cache/app echo one >> /var/cache/app/log && echo done > /marker
""", tags=["c1"])
    assert ImageFS(store, "c1").stat("/var/cache/app") is None  # the target left no empty directory
    assert ImageFS(store, "c1").stat("/var/cache") is None
    assert layer_names(store, "c1") == [["marker"]]
    b2 = do_build(store, ctx, """\
FROM busybox
RUN --mount=type=cache,target=/var/cache/app echo two >> /var/cache/app/log && cat /var/cache/app/log
RUN --mount=type=cache,id=/var/cache/app,target=/elsewhere cat /elsewhere/log
RUN --mount=type=cache,id=other,target=/var/cache/app ls -A /var/cache/app | wc -l
""", tags=["c2"])
    assert b2.output[:2] == ["one", "two"]           # kept from the first build
    assert b2.output[2:4] == ["one", "two"]          # shared by id, whatever the target
    assert b2.output[4].strip() == "0"               # another id: another cache
    assert [c.id for c in CacheMounts(store).list()] == ["/var/cache/app", "other"]
    assert layer_names(store, "c2") == [[], [], []]  # nothing written outside the caches: empty layers


def test_cache_mount_mode_owner_and_read_only(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox
RUN --mount=type=cache,target=/c,mode=0750,uid=1000,gid=1001 stat -c '%a %u %g' /c
RUN --mount=type=cache,target=/c,ro touch /c/x 2>&1 || echo read-only
USER 1000
RUN --mount=type=cache,target=/c touch /c/mine && echo ok
""", tags=["m"])
    assert b.output == ["750 1000 1001", "touch: /c/x: Read-only file system", "read-only", "ok"]


def test_cache_mount_from_a_stage_starts_with_its_content(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox AS seed
RUN mkdir -p /s/d && echo seeded > /s/d/file
FROM busybox
RUN --mount=type=cache,target=/c,from=seed,source=/s/d cat /c/file && echo more > /c/file2
RUN --mount=type=cache,target=/c,from=seed,source=/s/d ls /c
""", tags=["f"])
    assert b.output == ["seeded", "file", "file2"]


def test_cache_mount_private_sharing_uses_another_directory_when_busy(store, ctx):
    mounts = CacheMounts(store)
    with mounts.use("/c", "", "shared", 0o755, 0, 0) as held:
        (held / "from-holder").write_text("x")
        b = do_build(store, ctx, "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=private ls -A /c | wc -l\n")
        assert b.output == ["0"]
        b = do_build(store, ctx, "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=shared ls /c\n")
        assert b.output == ["from-holder"]


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])  # one clock for us and the container


def test_cache_mount_locked_sharing_waits_for_the_holder(store, ctx):
    mounts = CacheMounts(store)
    released: list[float] = []
    holding = threading.Event()

    def hold():
        with mounts.use("/c", "", "shared", 0o755, 0, 0):
            holding.set()
            time.sleep(1.5)
            released.append(uptime())

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    try:
        b = do_build(store, ctx, "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=locked cut -d' ' -f1 /proc/uptime\n")
    finally:
        t.join()
    assert float(b.output[0]) >= released[0]  # the step ran only after the holder let go


# -- type=tmpfs ---------------------------------------------------------------------------
def test_tmpfs_is_empty_each_time_and_sized(store, ctx):
    df = """\
FROM busybox
RUN --mount=type=tmpfs,target=/scratch,size=1m ls -A /scratch | wc -l && echo x > /scratch/f && \\
    df -k /scratch | tail -1 | awk '{print $2}' && grep ' /scratch ' /proc/mounts | cut -d' ' -f3
RUN --mount=type=tmpfs,target=/scratch ls -A /scratch | wc -l
"""
    b = do_build(store, ctx, df, tags=["t"])
    assert b.output == ["0", "1024", "tmpfs", "0"]
    assert ImageFS(store, "t").stat("/scratch") is None


# -- type=bind ------------------------------------------------------------------------------
def test_bind_mount_of_the_context_is_read_only_filtered_and_keyed_by_content(store, ctx):
    df = """\
FROM busybox
RUN --mount=type=bind,target=/src cat /src/f /src/sub/g && ls /src && (touch /src/new 2>/dev/null || echo ro)
RUN --mount=type=bind,source=sub,target=/g,rw echo changed > /g/g && cat /g/g
RUN --mount=target=/src,source=sub/g cat /src
"""
    b = do_build(store, ctx, df, tags=["b"])
    assert b.output == ["context-file", "sub-file", "Dockerfile", "f", "sub", "ro", "changed", "sub-file"]
    assert (ctx / "sub/g").read_text() == "sub-file\n"  # rw writes are thrown away
    assert ImageFS(store, "b").stat("/src") is None and ImageFS(store, "b").stat("/g") is None
    again = do_build(store, ctx, df)
    assert all(s.cached for s in again.steps)
    (ctx / "sub/g").write_text("edited\n")
    third = do_build(store, ctx, df)
    assert [s.cached for s in third.steps] == [True, False, False, False]  # every mount of sub/ misses
    (ctx / "ignored/x").write_text("still hidden\n")
    assert all(s.cached for s in do_build(store, ctx, df).steps)


def test_bind_mount_from_a_stage_and_an_image(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox AS build
RUN mkdir -p /out/bin && echo built > /out/bin/tool && echo top > /out/top
RUN rm /out/top
FROM busybox
RUN --mount=type=bind,from=build,source=/out,target=/mnt ls -R /mnt && cat /mnt/bin/tool
RUN --mount=type=bind,from=build,source=/out/bin/tool,target=/tool cat /tool
RUN --mount=type=bind,from=busybox,source=/bin,target=/b,rw rm /b/sh && ls /b | grep -c '^sh$' || echo gone
RUN --mount=type=bind,from=build,target=/r cat /r/out/bin/tool
""", tags=["s"])
    assert b.output == ["/mnt:", "bin", "", "/mnt/bin:", "tool", "built", "built", "0", "gone", "built"]
    fs = ImageFS(store, "s")
    assert fs.stat("/bin/sh") is not None and fs.stat("/mnt") is None and fs.stat("/tool") is None


# -- type=secret ------------------------------------------------------------------------------
SECRET = "s3cr3t-value-4f8a2c"


def test_secret_mount_file_env_options_and_it_lands_nowhere(store, ctx, tmp_path, monkeypatch):
    (tmp_path / "token").write_text(SECRET)
    monkeypatch.setenv("API_TOKEN", SECRET + "-env")
    df = """\
FROM busybox
RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo && stat -c '%a %u %g' /run/secrets/tok
RUN --mount=type=secret,id=tok,target=/etc/app/key,mode=0440,uid=1000,gid=1001 stat -c '%a %u %g' /etc/app/key
RUN --mount=type=secret,id=api,env=TOKEN test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = $EXPECT && echo env-ok && \\
    test ! -e /run/secrets/api && echo no-file
RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>&1 || echo absent-ok
RUN --mount=type=secret,id=tok,target=/keep cp /keep /copied-on-purpose-not && rm /copied-on-purpose-not && \\
    echo $TOKEN > /no-token-here
"""
    secrets = [SecretSource.parse(f"id=tok,src={tmp_path / 'token'}"), SecretSource.parse("id=api,env=API_TOKEN")]
    b = do_build(store, ctx, df.replace("$EXPECT", hashlib.sha256((SECRET + "-env").encode()).hexdigest()), tags=["sec"], secrets=secrets)
    assert b.output == [SECRET, "400 0 0", "440 1000 1001", "env-ok", "no-file",
                        "cat: can't open '/run/secrets/absent': No such file or directory", "absent-ok"]
    fs = ImageFS(store, "sec")
    assert fs.stat("/run/secrets") is None and fs.stat("/etc/app") is None and fs.stat("/keep") is None
    assert fs.read("/no-token-here") == b"\n"
    # a changed value is not a reason to run again (BuildKit: secrets are not in the key)
    (tmp_path / "token").write_text("another-value")
    again = do_build(store, ctx, df.replace("$EXPECT", hashlib.sha256((SECRET + "-env").encode()).hexdigest()), secrets=secrets)
    assert all(s.cached for s in again.steps)
    # nowhere in the store: layer blobs, configs, history, the SQLite database (and its WAL)
    needles = [SECRET.encode(), b"another-value"]
    for p in Path(store.root).rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if data[:2] == b"\x1f\x8b" or data[:4] == b"\x28\xb5\x2f\xfd":
                with open(p, "rb") as raw:
                    data = compression.open_reader(raw).read()
            for n in needles:
                assert n not in data, f"secret found in {p}"
    history = [h["created_by"] for h in fs.image.config.data["history"]]
    assert all(SECRET not in h for h in history)
    assert not any(SECRET in e.instruction + e.text for e in b.events if e.kind != "output")


def test_a_missing_required_secret_fails_its_step_by_name(store, ctx):
    with pytest.raises(StepError, match=r"Dockerfile:3: secret npmrc is required but was not provided"):
        do_build(store, ctx, "FROM busybox\nRUN true\nRUN --mount=type=secret,id=npmrc,required cat /run/secrets/npmrc\n",
                 tags=["never"])
    with pytest.raises(Exception):
        store.resolve("never")


def test_secret_flag_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_ENV", "v")
    assert SecretSource.parse("id=FROM_ENV") == SecretSource("FROM_ENV", None, "FROM_ENV")
    assert SecretSource.parse("id=file.txt") == SecretSource("file.txt", "file.txt", None)
    assert SecretSource.parse("id=a,env=FROM_ENV") == SecretSource("a", None, "FROM_ENV")
    assert SecretSource.parse("id=a,source=/x") == SecretSource("a", "/x", None)
    assert SecretSource.parse("id=a,type=env") == SecretSource("a", None, "a")
    for bad in ("src=/x", "id=a,colour=red", "id=a,type=socket", "id"):
        with pytest.raises(Exception):
            SecretSource.parse(bad)


# -- type=ssh --------------------------------------------------------------------------------------
@pytest.fixture
def agent(tmp_path):
    """A real ssh-agent holding one fresh key; yields (socket path, the key's fingerprint line)."""
    import shutil
    import subprocess

    for tool in ("ssh-agent", "ssh-add", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: openssh-client is in the Makefile's APT_PACKAGES")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "soko-test-key", "-f", str(key)], check=True)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=env, capture_output=True)
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, check=True).stdout.decode().strip()
        assert "soko-test-key" in listed
        yield sock, listed
    finally:
        proc.terminate()
        proc.wait(10)


def ssh_tools_context(root: Path) -> Path:
    """A context with the host's ssh-add and the libraries it loads, laid out as on the host."""
    import shutil
    import subprocess

    tree = root / "tools"
    out = subprocess.run(["ldd", "/usr/bin/ssh-add"], capture_output=True, check=True).stdout.decode()
    paths = ["/usr/bin/ssh-add"] + re.findall(r"(/\S+\.so[.\d]*)", out)
    for p in paths:
        dest = tree / p.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(p), dest)
    return root


def test_ssh_mount_forwards_the_agent(store, agent, tmp_path):
    from builder.secrets import SshSource

    sock, listed = agent
    ctx = ssh_tools_context(tmp_path / "ctx")
    b = do_build(store, ctx, """\
FROM busybox
COPY tools/ /
RUN --mount=type=ssh ssh-add -l && echo "sock=$SSH_AUTH_SOCK" && stat -c '%a %u %g' $SSH_AUTH_SOCK
RUN --mount=type=ssh,id=deploy,target=/agent,mode=0660,uid=1000,gid=1001 stat -c '%a %u %g' /agent && \\
    SSH_AUTH_SOCK=/agent ssh-add -l
RUN --mount=type=ssh,id=absent ssh-add -l 2>&1 >/dev/null || echo "no agent: ${SSH_AUTH_SOCK:-unset}"
""", tags=["ssh"], ssh=[SshSource("default", str(sock)), SshSource("deploy", str(sock))])
    assert b.output == [listed, "sock=/run/buildkit/ssh_agent.0", "600 0 0", "660 1000 1001", listed,
                        "Could not open a connection to your authentication agent.", "no agent: unset"]
    fs = ImageFS(store, "ssh")
    assert fs.stat("/run/buildkit") is None and fs.stat("/agent") is None


def test_a_missing_required_ssh_agent_fails_its_step(store, tmp_path):
    ctx = write_context(tmp_path / "ctx", {})
    with pytest.raises(StepError, match=r"Dockerfile:2: ssh agent default is required but was not provided"):
        do_build(store, ctx, "FROM busybox\nRUN --mount=type=ssh,required=true true\n")


# -- keys and bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("before, after", [
    ("type=cache,target=/c", "type=cache,target=/c,sharing=locked"),
    ("type=cache,target=/c", "type=cache,target=/c,id=other"),
    ("type=cache,target=/c", "type=cache,target=/c,mode=0700"),
    ("type=tmpfs,target=/t", "type=tmpfs,target=/t,size=1m"),
    ("type=secret,id=a", "type=secret,id=b"),
    ("type=secret,id=a", "type=secret,id=a,env=A"),
    ("type=bind,target=/s", "type=bind,target=/s,source=sub"),
    ("type=bind,target=/s", "type=bind,target=/s,rw"),
    ("type=ssh", "type=ssh,id=other"),
])
def test_mount_options_are_in_the_key(store, ctx, before, after):
    df = "FROM busybox\nRUN --mount={} true\n"
    do_build(store, ctx, df.format(before))
    assert [s.cached for s in do_build(store, ctx, df.format(before)).steps] == [True, True]
    assert [s.cached for s in do_build(store, ctx, df.format(after)).steps] == [True, False]


def test_bad_mounts_fail_before_anything_runs(store, ctx):
    from builder import DockerfileError

    b_events: list = []
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: RUN --mount=type=cache,target=/c,colour=red: "
                                              r"unknown option 'colour'$"):
        from builder import BuildOptions, build

        (ctx / "Dockerfile").write_text("FROM busybox\nRUN touch /ran\nRUN --mount=type=cache,target=/c,colour=red true\n")
        build(store, BuildOptions(context=ctx), b_events.append)
    assert not [e for e in b_events if e.kind == "step"]
    # a value that comes from a variable is checked when its step is reached, still by line
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: RUN --mount=type=cache,target=/c,sharing=\$S: "
                                              r"sharing=maybe: expected shared, private or locked$"):
        do_build(store, ctx, "FROM busybox\nARG S=maybe\nRUN --mount=type=cache,target=/c,sharing=$S true\n")


def test_mount_from_a_stage_builds_it_first_and_a_cycle_is_refused(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox AS tools
RUN echo tool > /tool
FROM busybox AS unused
RUN exit 1
FROM busybox
RUN --mount=from=tools,source=/tool,target=/t cat /t
""")
    assert b.output == ["tool"]
    with pytest.raises(BuildError, match="^circular dependency between stages: later -> stage-0 -> later$"):
        do_build(store, ctx, "FROM busybox\nRUN --mount=from=later,target=/t true\n"
                             "FROM busybox AS later\nCOPY --from=0 /bin/sh /copied\n")
