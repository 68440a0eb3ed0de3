"""soko and Docker Engine's BuildKit (dockerd 20.10, its built-in Dockerfile frontend) build the same
Dockerfiles and contexts; file trees and configs must not differ (tests/interop/parity.py says how
they are compared). A difference soko keeps on purpose is listed in the case with its reason, and in
builder/CACHE.md ("Parity with BuildKit"). 20.10's frontend has no heredocs, COPY --link/--parents/
--exclude, ADD --checksum or RUN --network, so those are left to test_build_docker.py.
"""
from __future__ import annotations

import io
import tarfile

import pytest

from tests.conftest import need_root
from tests.interop.parity import Builders, Case, Dir, HardLink, Link, Mode, write_context

pytestmark = [pytest.mark.root, pytest.mark.interop]

USERS = ("RUN echo 'app:x:1000:1000:App:/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group"
         " && echo 'extra:x:2000:app' >> /etc/group && mkdir -p /home/app && chown 1000:1000 /home/app\n")


def tar_bytes(entries: list[tuple[str, str, bytes | None, int, int, int]], gz: bool = True) -> bytes:
    """(type, name, data, mode, uid, gid) with type f(ile) or d(ir), as a (gzipped) tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data, mode, uid, gid in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, 1_500_000_000
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data or b"")
                tf.addfile(ti, io.BytesIO(data or b""))
    return buf.getvalue()


RUNTIME = ("a RUN step's container is set up by runtime/ (run_step), whose owner decides; noted in "
           "builder/CACHE.md's parity section")
STUBS = ("Docker 20.10's BuildKit leaves the empty directories it made as mount points; BuildKit 0.11 "
         "and later take them out again, and so does soko")

def compressed(kind: str) -> bytes:
    import bz2
    import lzma

    raw = tar_bytes([("d", "./c", None, 0o755, 0, 0), ("f", "./c/f.txt", b"f", 0o600, 9, 9)], gz=False)
    return bz2.compress(raw) if kind == "bz2" else lzma.compress(raw)


TAR_BZ2, TAR_XZ = compressed("bz2"), compressed("xz")

APP_TAR = tar_bytes([("d", "./", None, 0o700, 1234, 1234), ("d", "./pkg", None, 0o750, 1234, 1234),
                     ("f", "./pkg/a.txt", b"a", 0o644, 1234, 1234), ("f", "./top.txt", b"top", 0o600, 0, 0)])

CASES = [
    Case("env_forms", "FROM busybox:local\nENV A=1 B=\"two words\" C=$A\nENV D x y z\nENV PATH=/opt/bin:$PATH\n"
                      "ENV E=${B:-none} F=${UNSET:-dflt} G=${A:+set}\nRUN echo \"$A $B $C $D $E $F $G\" > /env.txt\n"),
    Case("labels", 'FROM busybox:local\nLABEL a=1 "b c"="d e" multi="x\\\n  y"\nLABEL a=2\n'),
    Case("args_in_run_history", "FROM busybox:local\nARG NAME=app\nARG EMPTY=\nARG UNSET\nARG OVER=dflt\n"
                                "RUN echo \"$NAME|$EMPTY|$UNSET|$OVER\" > /args && env | sort > /env\n",
         args=("--build-arg", "OVER=given")),
    Case("global_args", "ARG V=1\nARG BASE=busybox:local\nFROM $BASE\nARG V\nRUN echo $V > /v\n",
         args=("--build-arg", "V=2")),
    Case("user_groups", "FROM busybox:local\n" + USERS + "USER app\nRUN id > /tmp/id && touch /tmp/mine\n"
                        "USER root\nRUN cp /tmp/id /id\n"),
    Case("user_uid_gid", "FROM busybox:local\nUSER 1234:5678\nRUN id > /tmp/id; touch /tmp/f\n"),
    Case("workdir_new_and_existing", "FROM busybox:local\nWORKDIR /tmp\nWORKDIR /srv/app\nWORKDIR sub\n"
                                     "RUN pwd > here\n"),
    Case("workdir_owned_by_user", "FROM busybox:local\n" + USERS + "USER app\nWORKDIR /data/app\nRUN touch x\n"),
    Case("from_scratch", "FROM scratch\nCOPY a.txt /\nCOPY d/ /d/\n", {"a.txt": "a", "d/b.txt": "b"}),
    Case("copy_file_rules", "FROM busybox:local\nCOPY a.txt /one\nCOPY a.txt /dir/\nCOPY a.txt b.txt /two/\n"
                            "COPY *.txt /glob/\nCOPY d /dd\nCOPY d/ /dd2/\nCOPY a.txt /tmp\n",
         {"a.txt": "a", "b.txt": "b", "d/x": "x", "d/sub/y": "y", "d/empty": Dir(0o700)}),
    Case("copy_symlinks", "FROM busybox:local\nCOPY link-to-a /dir/\nCOPY link-to-a /file\nCOPY links/ /links/\n"
                          "COPY dirlink /viadirlink/\n",
         {"a": "content of a", "link-to-a": Link("a"), "links/rel": Link("../a"), "links/abs": Link("/etc/passwd"),
          "links/dangling": Link("nowhere"), "realdir/f": "f", "dirlink": Link("realdir")}),
    Case("copy_chown_chmod", "FROM busybox:local\n" + USERS +
         "COPY --chown=1:2 a.txt /c1\nCOPY --chown=app:extra d /c2/\nCOPY --chown=app a.txt /c3\n"
         "COPY --chmod=640 a.txt /c4\nCOPY --chmod=751 d /c5/\n",
         {"a.txt": "a", "d/x": "x", "d/sub/y": "y"}),
    Case("copy_modes_and_special", "FROM busybox:local\nCOPY . /ctx/\n",
         {"suid": Mode("s", 0o4755), "sticky": Dir(0o1777), "ro": Mode("r", 0o400), "exec": Mode("#!/bin/sh", 0o755),
          "x.txt": Mode("x", 0o644, {"user.note": b"kept"}), "h1": "same", "h2": HardLink("h1")}),
    Case("copy_into_symlinked_dir", "FROM busybox:local\nRUN mkdir -p /real && ln -s /real /viasym\n"
                                    "COPY a.txt /viasym/\nCOPY a.txt /viasym/b.txt\n", {"a.txt": "a"}),
    Case("add_tar", "FROM busybox:local\nRUN mkdir /dst && chown 33:33 /dst\nADD app.tar.gz /dst/\nADD app.tar.gz /new/\n"
                    "ADD --chown=7:8 app.tar.gz /owned/\nADD plain.tar /plain/\n",
         {"app.tar.gz": APP_TAR, "plain.tar": tar_bytes([("f", "p.txt", b"p", 0o640, 0, 0)], gz=False)}),
    Case("add_not_archive", "FROM busybox:local\nADD notatar.tar /x/\nADD a.txt /y\n",
         {"notatar.tar": "just text", "a.txt": "a"}),
    Case("copy_from_stages", "FROM busybox:local AS build\nRUN mkdir -p /out && echo built > /out/bin && chmod 755 "
                             "/out/bin\nFROM busybox:local\nCOPY --from=build /out/bin /usr/local/bin/app\n"
                             "COPY --from=0 /out/ /out/\nCOPY --from=busybox:local /bin/busybox /bb\n"),
    Case("target_stage", "FROM busybox:local AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\n"
                         "FROM busybox:local\nRUN exit 1\n", args=("--target", "two")),
    Case("run_forms_and_whiteouts", "FROM busybox:local\nRUN [\"/bin/sh\", \"-c\", \"echo exec > /exec\"]\n"
                                    "RUN rm -rf /home && rm /bin/vi && mkdir -p /etc/newdir\n"
                                    "RUN rm -rf /etc/newdir && mkdir /etc/newdir && echo z > /etc/newdir/z\n"
                                    "RUN true\nRUN chmod 700 /tmp/. ; chown 5:5 /etc/hostname || true\n"),
    Case("shell_instruction", 'FROM busybox:local\nSHELL ["/bin/sh", "-ec"]\nRUN echo $0 > /shell\n'
                              'CMD echo shell form\n'),
    Case("cmd_entrypoint", 'FROM busybox:local\nCMD ["a", "b"]\nENTRYPOINT ["/bin/echo"]\nFROM busybox:local\n'
                           'ENTRYPOINT /bin/echo hi\nCMD ["x"]\nFROM busybox:local\nCMD ["keep"]\n'),
    Case("expose_volume_stopsignal", "FROM busybox:local\nEXPOSE 80 443/tcp 53/udp 8000-8002\nVOLUME /data\n"
                                     'VOLUME ["/a", "/b"]\nSTOPSIGNAL SIGTERM\n'),
    Case("healthcheck", 'FROM busybox:local\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=4 '
                        'CMD wget -q localhost || exit 1\nFROM busybox:local\nHEALTHCHECK CMD ["true"]\n'
                        'HEALTHCHECK NONE\n'),
    Case("onbuild_and_maintainer", "FROM busybox:local\nMAINTAINER someone <s@example.invalid>\n"
                                   "ONBUILD RUN echo triggered > /t\nONBUILD COPY a.txt /from-child\n",
         {"a.txt": "a"}),
    Case("dockerignore", "FROM busybox:local\nCOPY . /app/\n",
         {".dockerignore": "*.log\n!keep.log\nsecret/\n**/*.tmp\n", "a.txt": "a", "x.log": "x", "keep.log": "k",
          "secret/s": "s", "d/e.tmp": "t", "d/f.txt": "f"}),
    Case("env_in_paths", "FROM busybox:local\nENV DIR=/opt/app NAME=file\nWORKDIR $DIR\nCOPY a.txt ${NAME}.txt\n"
                         "COPY a.txt $DIR/second/\n", {"a.txt": "a"}),
    Case("mounts", "FROM busybox:local\nRUN --mount=type=cache,target=/cache echo c > /cache/c && cp /cache/c /c\n"
                   "RUN --mount=type=bind,source=a.txt,target=/mnt/a cp /mnt/a /a\n"
                   "RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /t\n",
         {"a.txt": "a"}, deliberate={p: STUBS for p in ("/cache", "/mnt", "/scratch")}),
    Case("no_path_base", "FROM scratch AS files\nCOPY a.txt /\nFROM busybox:local\nENV PATH=/bin\n"
                         "COPY --from=files /a.txt /\n", {"a.txt": "a"}),
    Case("copy_dir_owner_parents", "FROM busybox:local\nCOPY --chown=5:6 d/ /deep/er/path/\nCOPY d /tmp/\n",
         {"d/x": "x", "d/s/y": "y"}),
    Case("run_environment", "FROM busybox:local\nRUN hostname > /h; cat /etc/hosts > /hosts; env | sort > /env; "
                            "id > /id; umask > /umask; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status > /caps; "
                            "ls /etc/hostname > /hn 2>&1; cat /etc/resolv.conf > /resolv 2>&1; true\n",
         deliberate={"/caps": RUNTIME + " (no_new_privs is set for every container)",
                     "/hn": RUNTIME + " (/etc/hostname is written for every container)",
                     "/hosts": RUNTIME + " (/etc/hosts without the sandbox's name)"}),
    Case("run_hardlinks_devices", "FROM busybox:local\nRUN echo a > /a && ln /a /b && mkfifo /fifo && "
                                  "mknod /null2 c 1 3 && ln -s /a /sym\n"),
    Case("copy_onto_existing", "FROM busybox:local\nRUN mkdir -p /opt/x && chmod 700 /opt/x && echo old > /opt/x/f "
                               "&& chmod 600 /opt/x/f\nCOPY d/ /opt/x/\nCOPY d /fresh\nCOPY d/ /etc/\n",
         {"d": Dir(0o750), "d/f": Mode("new", 0o644), "d/g": "g"}),
    Case("copy_odd_names", "FROM busybox:local\nCOPY . /odd/\n",
         {"with space.txt": "s", "ünïcødé.txt": "u", ("l" * 120) + ".txt": "long", "empty": "",
          "deep/" + "/".join(["n" * 40] * 4) + "/f": "deep", "link-dir": Link("deep"), "fifo-free/x": "x"}),
    Case("chown_numeric_only", "FROM busybox:local\n" + USERS + "COPY --chown=1000 a.txt /num\nCOPY --chown=4242 a.txt "
                               "/unknown\nCOPY --chown=root:root a.txt /root-owned\nCOPY --chown=app: a.txt /app-colon\n",
         {"a.txt": "a"}),
    Case("onbuild_triggers_in_child_stage", "FROM busybox:local AS parent\nONBUILD RUN echo triggered > /t\n"
                                            "ONBUILD ENV FROM_TRIGGER=1\nFROM parent\nRUN echo child > /c\n"),
    Case("volume_then_run", "FROM busybox:local\nVOLUME /data\nRUN mkdir -p /data/sub && echo kept > /data/x\n"),
    Case("run_changes_base", "FROM busybox:local\nRUN chown 1:1 /etc && chmod 711 /home || true; ln /bin/busybox /hardbb"
                             " && rm /etc/group && echo new > /etc/motd\n"),
    Case("platform_args", "ARG TARGETPLATFORM\nFROM busybox:local\nARG TARGETPLATFORM TARGETOS TARGETARCH "
                          "BUILDPLATFORM\nARG TARGETVARIANT\nRUN echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH "
                          "$BUILDPLATFORM [$TARGETVARIANT]\" > /p\n"),
    Case("arg_and_env_expansion", "FROM busybox:local\nARG A=1\nARG B=${A}x\nENV X=1 Y=$X\nENV Z=$X\n"
                                  "ENV Q=\"quote\\\"in\" R='single $NOT' S=a\\ b\n"
                                  "LABEL empty=\"\" sub=\"${B}-${X}\"\nRUN echo \"$A $B $Y $Z $Q $R $S\" > /e\n"),
    Case("escape_directive", "# escape=`\nFROM busybox:local\nRUN echo one `\n  two > /t\nCOPY a.txt C:\\dir\\ \n",
         {"a.txt": "a"}, skip=()),
    Case("continuations_and_case", "FROM busybox:local\nrun echo a \\\n# a comment inside\n  && echo b > /ab\n"
                                   "label a=1\ncopy a.txt /\n", {"a.txt": "a"}),
    Case("relative_paths", "FROM busybox:local\nWORKDIR rel\nCOPY a.txt .\nCOPY a.txt ./sub/\nWORKDIR ..\n"
                           "COPY a.txt ./up.txt\nRUN pwd > /pwd\n", {"a.txt": "a"}),
    Case("user_forms", "FROM busybox:local\n" + USERS + "USER root:root\nRUN id > /id1\nUSER 1000:2000\n"
                       "RUN id > /tmp/id2\nUSER app:extra\nRUN id > /tmp/id3\n"),
    Case("last_wins_and_exec_json", 'FROM busybox:local\nCMD ["first"]\nCMD ["a b", "$HOME", "\\"q\\""]\n'
                                    'ENTRYPOINT ["sh", "-c"]\nENTRYPOINT ["/bin/echo", "x"]\nSTOPSIGNAL 9\n'
                                    'EXPOSE 80 80/tcp 90\nMAINTAINER a\nLABEL maintainer=b\n'),
    Case("stages_by_index_and_name", "ARG V=3\nFROM busybox:local AS a\nRUN echo a > /a\nFROM busybox:local\n"
                                     "RUN echo b > /b\nFROM busybox:local AS c\nARG V\nCOPY --from=0 /a /\n"
                                     "COPY --from=1 /b /\nCOPY --from=a --chown=3:4 /a /a2\nRUN echo $V > /v\n"),
    Case("dockerignore_dockerfile", "FROM busybox:local\nCOPY . /all/\n",
         {".dockerignore": "Dockerfile\n.dockerignore\n**/skip*\n!skip-not\n", "a": "a", "d/skipme": "s",
          "skip-not": "n"}),
    Case("add_compressions", "FROM busybox:local\nADD a.tar.bz2 /bz/\nADD a.tar.xz /xz/\nADD a.tar /plain/\n"
                             "ADD --chown=3:3 a.tar /owned/\n",
         {"a.tar.bz2": TAR_BZ2, "a.tar.xz": TAR_XZ, "a.tar": tar_bytes([("f", "t/in.txt", b"i", 0o640, 5, 6)], gz=False)}),
    Case("add_url", "FROM busybox:local\nADD {url}/remote.txt /r/\nADD {url}/remote.txt /named\n"),
]


@pytest.fixture(scope="module")
def base_archive(docker_engine, tmp_path_factory):
    """Docker's busybox:local, saved: the base both builders start from."""
    path = tmp_path_factory.mktemp("parity-base") / "busybox.tar"
    docker_engine("save", "-o", path, "busybox:local")
    return path


@pytest.fixture
def builders(docker_engine, base_archive, store_root, tmp_path):
    need_root()
    from storage.archives import load
    from storage.images import ImageStore

    store = ImageStore(store_root)
    load(store, base_archive)
    return Builders(docker_engine, store, tmp_path)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A static HTTP server on loopback for ADD <url> (dockerd reaches it too: it runs on the host)."""
    import os

    from tests.builder.servers import HTTPServer

    root = tmp_path_factory.mktemp("parity-web")
    (root / "remote.txt").write_text("remote\n")
    os.utime(root / "remote.txt", (1_500_000_000, 1_500_000_000))
    srv = HTTPServer(root)
    yield srv
    srv.close()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_parity(builders, tmp_path, web, case: Case):
    dockerfile = case.dockerfile.replace("{url}", web.url)
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, **case.files})
    diffs = builders.build_both(case, ctx)
    unexplained = {k: v for k, v in diffs.items() if k not in case.deliberate}
    assert not unexplained, "\n".join(f"{k}: soko {a!r}\n{' ' * len(k)}  docker {b!r}" for k, (a, b) in
                                      unexplained.items())
