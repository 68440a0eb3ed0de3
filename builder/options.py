"""What a build is asked to do, what it reports while it runs, and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.progress import ProgressEvent

from .cachespec import CacheSpec
from .errors import BuildError
from .secrets import SecretSource, SshSource

COMPRESSIONS = ("gzip", "zstd", "uncompressed")
NETWORKS = ("default", "none", "host")
PROGRESS = ("auto", "plain", "quiet", "tty")


@dataclass
class Output:
    """`--output type=oci|docker,dest=FILE`."""
    type: str
    dest: str

    @classmethod
    def parse(cls, text: str) -> "Output":
        fields: dict[str, str] = {}
        for part in text.split(","):
            k, eq, v = part.partition("=")
            if not eq:
                if "," not in text and k:
                    # a bare path, as `docker build -o DIR` allows; soko writes archives only
                    raise BuildError(f"--output {text!r}: use type=oci|docker,dest=FILE")
                raise BuildError(f"--output {text!r}: {part!r} is not key=value")
            fields[k.strip()] = v.strip()
        kind = fields.pop("type", None)
        dest = fields.pop("dest", None)
        if kind not in ("oci", "docker"):
            raise BuildError(f"--output type must be oci or docker, got {kind!r}")
        if not dest:
            raise BuildError("--output needs dest=FILE")
        if fields:
            raise BuildError(f"--output: unsupported field(s) {', '.join(sorted(fields))}")
        return cls(kind, dest)


@dataclass
class BuildOptions:
    """Everything `soko build` passes down (see CLI.md)."""
    context: str | Path = "."
    dockerfile: str | Path | None = None      # default: <context>/Dockerfile
    dockerfile_text: str | bytes | None = None  # the Dockerfile itself (`-f -`), wins over `dockerfile`
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"                  # default (= host for now) | none | host
    compression: str = "uncompressed"         # how new layers are stored: uncompressed | gzip | zstd
    #   (uncompressed by default, as Docker's image store keeps them: `push` compresses)
    output: list[Output] = field(default_factory=list)
    progress: str = "auto"                    # the CLI's choice; the builder only reports events
    quiet: bool = False
    source_date_epoch: int | None = None      # default: --build-arg or $SOURCE_DATE_EPOCH
    secrets: list[SecretSource] = field(default_factory=list)  # --secret, for RUN --mount=type=secret
    ssh: list[SshSource] = field(default_factory=list)         # --ssh, for RUN --mount=type=ssh
    jobs: int | None = None                   # stages built at once (default: the CPU count)
    cache_from: list[CacheSpec] = field(default_factory=list)  # --cache-from (cachespec.py)
    cache_to: list[CacheSpec] = field(default_factory=list)    # --cache-to

    def validate(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise BuildError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.network not in NETWORKS:
            raise BuildError(f"--network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        if self.progress not in PROGRESS:
            raise BuildError(f"--progress must be one of auto, plain, quiet, got {self.progress!r}")
        if self.jobs is not None and self.jobs < 1:
            raise BuildError(f"--jobs must be at least 1, got {self.jobs}")
        for k in self.build_args:
            if not k or "=" in k:
                raise BuildError(f"invalid --build-arg name {k!r}")
        for k in self.labels:
            if not k:
                raise BuildError("--label needs a non-empty key")
        for what, given in (("--secret", self.secrets), ("--ssh", self.ssh)):
            ids = [g.id for g in given]
            if len(set(ids)) != len(ids):
                raise BuildError(f"{what}: an id is given twice")
            for g in given:
                g.check()

    def dockerfile_path(self) -> Path | None:
        """The Dockerfile's file (None when its text was given)."""
        if self.dockerfile_text is not None:
            return None
        return Path(self.dockerfile) if self.dockerfile else Path(self.context) / "Dockerfile"

    @property
    def storage_compression(self) -> str:
        """storage's name for it (`none` for uncompressed)."""
        return "none" if self.compression == "uncompressed" else self.compression


@dataclass
class BuildEvent(ProgressEvent):
    """One thing to show, in storage.progress's one event type: a step starting
    (`action="step"`, CACHED or not), a line of RUN output (`"output"`), a step
    finishing (`"done"`), or a message (`"notice"`, `"warning"`, `"runtime"` for
    what the runtime reports while a RUN step starts). `current`/`total` are the
    instruction's place in its stage (FROM is 1) and the stage's length; `id` is `#N`."""
    step: int = 0                 # #N: steps numbered in the order they run, across stages
    stage: str | None = None      # stage name, or stage-<i> when unnamed; None for one-stage builds
    instruction: str = ""         # as written, variables not expanded
    cached: bool = False
    metadata: bool = False        # config-only step (BuildKit shows none of these)
    elapsed: float = 0.0          # seconds, for "done"

    @property
    def kind(self) -> str:
        return self.action

    @property
    def index(self) -> int:
        return self.current

    def header(self) -> str:
        """`#N [stage k/n] INSTRUCTION` as soko build prints it."""
        where = f"{self.stage} {self.current}/{self.total}" if self.stage else f"{self.current}/{self.total}"
        return f"#{self.step} [{where}] {self.instruction}"


@dataclass
class BuildResult:
    """What a finished build made."""

    image_id: str                 # config digest, as Docker's image ID
    manifest_digest: str
    tags: list[str]
    steps: int
    cached: int
    warnings: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)   # blobs a --cache-from hit had to download
