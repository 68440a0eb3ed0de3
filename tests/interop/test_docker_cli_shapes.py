"""soko's inspect, images, history, rmi and templates beside Docker Engine's, for the same image.

Docker builds an image (layers with files, a symlink, a hard link, a whiteout), saves it, and both
load that archive: both hold the same config and layers, so everything Docker derives from them
(IDs, dates, sizes, config keys, history) must come out the same from soko, in the same format.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import need_root

pytestmark = [pytest.mark.root, pytest.mark.interop]

DOCKERFILE = """FROM busybox:local
LABEL maintainer=me org.example.x="1"
ENV A=1 B="two words"
RUN mkdir -p /data && dd if=/dev/zero of=/data/blob bs=1k count=300 2>/dev/null \\
 && echo hello > /data/hello && ln /data/hello /data/hard && ln -s /data/hello /data/soft && rm /bin/ed
WORKDIR /app
COPY Dockerfile /app/
EXPOSE 8080
HEALTHCHECK --interval=5s CMD true
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "echo 'a very long command line that docker truncates in history output'"]
"""

TEMPLATES = [
    "{{.Id}}",
    "{{json .Config}}",
    "{{range .RepoTags}}{{.}} {{end}}",
    "{{json .RootFS}} {{.Size}} {{.VirtualSize}}",
    "{{.Created}} {{.Os}}/{{.Architecture}} {{.Author}} {{.Comment}} {{.Parent}}",
    '{{index .Config.Labels "org.example.x"}} {{join .Config.Env ","}} {{len .RootFS.Layers}}',
    "{{if .Config.Healthcheck}}{{json .Config.Healthcheck}}{{else}}none{{end}}",
    '{{printf "%s-%d" .Os .Size}} {{upper .Os}} {{lower "ABC"}}',
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
    "{{.Config.Cmd}} {{.Config.Entrypoint}} {{.Config.Volumes}} {{.ContainerConfig.Env}}",
    "{{json .RepoDigests}} {{json .Config.ExposedPorts}} {{.Config.StopSignal}}",
    "{{with .Config}}{{.WorkingDir}}{{end}} {{println .Os}}",
    "{{.Config.Shell}} {{.Config.StopTimeout}} {{.Variant}}|{{.Config.MacAddress}}|{{.Config.ArgsEscaped}}",
]


@pytest.fixture(scope="module")
def same_image(docker_engine, tmp_path_factory):
    """(image ref, soko CLI) with one Docker-built image held by Docker and by a soko store."""
    need_root()
    from tests.conftest import SokoCLI

    tmp = tmp_path_factory.mktemp("shapes")
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    docker_engine("build", "--network", "none", "-t", "shapes:1", ctx)
    archive = tmp / "shapes.tar"
    docker_engine("save", "-o", archive, "shapes:1", "busybox:local")
    # Docker's layer sizes depend on how a layer arrived (a BuildKit build does not count symlink
    # targets; applying a tar does): reload, so Docker has the image as soko has it, from the tar.
    docker_engine("rmi", "shapes:1")
    docker_engine("builder", "prune", "-af")  # BuildKit's cache would hand the built layers back
    docker_engine("load", "-i", archive)
    (tmp / "store").mkdir()
    soko = SokoCLI(tmp / "store")
    soko("load", "-i", archive)
    yield "shapes:1", soko, archive
    docker_engine("rmi", "-f", "shapes:1", check=False)


def test_inspect_has_dockers_keys_in_dockers_order_and_values(same_image, docker_engine):
    ref, soko, _ = same_image
    theirs = json.loads(docker_engine.out("image", "inspect", ref))[0]
    ours = json.loads(soko("inspect", ref).stdout)[0]
    assert [k for k in ours if k != "Soko"] == list(theirs)  # every key, in Docker's order
    assert list(ours)[-1] == "Soko"  # soko's own fields, under one key at the end
    assert list(ours["Config"]) == list(theirs["Config"])
    assert list(ours["ContainerConfig"]) == list(theirs["ContainerConfig"])
    for key in ("Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Container", "ContainerConfig",
                "DockerVersion", "Author", "Config", "Architecture", "Os", "Size", "VirtualSize", "RootFS"):
        assert ours[key] == theirs[key], key
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z", ours["Created"])
    assert set(ours["GraphDriver"]) == {"Data", "Name"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", ours["Metadata"]["LastTagTime"])


@pytest.mark.parametrize("template", TEMPLATES)
def test_inspect_templates_print_what_docker_prints(same_image, docker_engine, template):
    ref, soko, _ = same_image
    assert soko("inspect", "-f", template, ref).stdout == docker_engine.out("image", "inspect", "-f", template, ref)


def _images(tool_out: str) -> list[dict]:
    return [json.loads(line) for line in tool_out.splitlines()]


def test_images_rows_and_formats_match_docker(same_image, docker_engine):
    ref, soko, _ = same_image
    theirs = _images(docker_engine.out("images", "--format", "{{json .}}", "shapes"))
    ours = _images(soko("images", "--format", "{{json .}}", "shapes").stdout)
    assert len(ours) == len(theirs) == 1
    assert list(ours[0]) == list(theirs[0])  # same fields, sorted as Docker marshals them
    for key in ("Containers", "CreatedAt", "Digest", "ID", "Repository", "SharedSize", "Size", "Tag",
                "UniqueSize", "VirtualSize"):
        assert ours[0][key] == theirs[0][key], key
    for fmt in ("table {{.Repository}}\t{{.Tag}}", "table", "{{.ID}} {{.Size}} {{.CreatedAt}}",
                "table {{.Repository}}\\t{{.ID}}\\t{{.VirtualSize}}"):
        d = docker_engine.out("images", "--format", fmt, "shapes")
        s = soko("images", "--format", fmt, "shapes").stdout
        if "CreatedSince" in fmt or fmt == "table":  # "2 seconds ago" may tick between the two
            d, s = re.sub(r"\d+ seconds? ago|About a minute ago", "AGO", d), re.sub(r"\d+ seconds? ago|About a minute ago", "AGO", s)
        assert s == d, fmt
    assert soko("images", "-q", "--no-trunc", "shapes").stdout == docker_engine.out("images", "-q", "--no-trunc", "shapes")
    header = docker_engine.out("images", "--digests", "shapes").splitlines()[0]
    assert soko("images", "--digests", "shapes").stdout.splitlines()[0] == header


def test_history_rows_and_sizes_match_docker(same_image, docker_engine):
    ref, soko, _ = same_image
    for args in (["--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}|{{.CreatedAt}}"],
                 ["--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}"],
                 ["-H=false", "--format", "{{.CreatedSince}}|{{.Size}}"],
                 ["-q"], ["-q", "--no-trunc"], ["--format", "{{json .}}"]):
        d = docker_engine.out("history", *args, ref)
        s = soko("history", *args, ref).stdout
        if args[-1] == "{{json .}}":
            d = re.sub(r'"CreatedSince":"[^"]*"', "", d)
            s = re.sub(r'"CreatedSince":"[^"]*"', "", s)
        assert s == d, args
    d = docker_engine.out("history", "-H=false", ref)
    assert soko("history", "-H=false", ref).stdout == d  # the whole table, raw sizes and RFC 3339 dates
    assert soko("history", ref).stdout.splitlines()[0] == docker_engine.out("history", ref).splitlines()[0]


def test_rmi_lines_match_docker(same_image, docker_engine):
    ref, soko, archive = same_image
    for tool in ("docker", "soko"):
        run = (lambda *a: docker_engine.out(*a)) if tool == "docker" else (lambda *a: soko(*a).stdout)
        run("tag", ref, "shapes:extra")
        first = run("rmi", "shapes:extra").splitlines()
        assert first == ["Untagged: shapes:extra"], (tool, first)
    image_id = json.loads(soko("inspect", ref).stdout)[0]["Id"]
    ours = soko("rmi", ref).stdout.splitlines()
    assert ours == ["Untagged: shapes:1", f"Deleted: {image_id}"]
    theirs = docker_engine.out("rmi", ref).splitlines()
    assert theirs[:2] == ours  # Docker goes on with a Deleted line per freed layer
    docker_engine("load", "-i", archive)  # back, for the module's other tests
    soko("load", "-i", archive)


def test_bad_templates_fail_as_docker_fails(same_image, docker_engine):
    ref, soko, _ = same_image
    for template in ("{{.Nope", "{{.Repository}}{{end}}"):
        d = docker_engine("images", "--format", template, check=False)
        s = soko("images", "--format", template, check=False)
        assert d.returncode != 0 and s.returncode == 1
        assert d.stderr.decode().strip() in s.stderr.strip()
    d = docker_engine("images", "--format", "{{.Foo}}", check=False).stderr.decode().strip()
    assert soko("images", "--format", "{{.Foo}}", check=False).stderr.strip() == f"soko: {d}"
    d = docker_engine("inspect", "-f", "{{.Config.Foo}}", ref, check=False).stderr.decode().strip()
    assert soko("inspect", "-f", "{{.Config.Foo}}", ref, check=False).stderr.strip() == f"soko: {d}"


def test_filters_pick_the_rows_docker_picks(same_image, docker_engine):
    ref, soko, _ = same_image
    for filt in ("reference=shapes", "reference=shap*:1", "reference=busybox", "dangling=false",
                 "label=maintainer=me", "label=org.example.x", "label=nope", "since=busybox:local"):
        fmt = "{{.Repository}}:{{.Tag}}"
        theirs = set(docker_engine.out("images", "--format", fmt, "--filter", filt).split())
        ours = set(soko("images", "--format", fmt, "--filter", filt).stdout.split())
        assert ours == theirs, filt
