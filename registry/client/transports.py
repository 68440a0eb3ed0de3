"""Copy endpoints, written as skopeo does: `docker://REF`, `oci-archive:FILE[:REF]`,
`docker-archive:FILE[:REF]`, `soko:REF`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage import references
from storage.errors import InvalidReference

from .errors import UsageError

KINDS = ("docker", "oci-archive", "docker-archive", "soko")


@dataclass(frozen=True)
class Endpoint:
    kind: str                 # one of KINDS
    ref: str | None = None    # image reference (docker, soko; optional inside archives)
    path: Path | None = None  # archive file

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.ref}"
        if self.kind == "soko":
            return f"soko:{self.ref}"
        return f"{self.kind}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_endpoint(text: str) -> Endpoint:
    if text.startswith("docker://"):
        return Endpoint("docker", _ref(text[len("docker://"):], text))
    if text.startswith("soko:"):
        return Endpoint("soko", _ref(text[len("soko:"):], text))
    for kind in ("oci-archive", "docker-archive"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1:]
            if not rest:
                raise UsageError(f"{text!r}: the archive file is missing")
            path, ref = _split_archive(rest)
            return Endpoint(kind, _ref(ref, text) if ref else None, Path(path))
    raise UsageError(f"unknown transport in {text!r} (use docker://REF, oci-archive:FILE, docker-archive:FILE "
                     f"or soko:REF)")


def _split_archive(rest: str) -> tuple[str, str | None]:
    """FILE or FILE:REF. A path that exists as written wins (file names with
    colons work); otherwise the first colon splits, as in skopeo."""
    if os.path.exists(rest) or ":" not in rest:
        return rest, None
    path, ref = rest.split(":", 1)
    return path, ref or None


def _ref(text: str, whole: str) -> str:
    if not text:
        raise UsageError(f"{whole!r}: the image reference is missing")
    try:
        references.parse(text)
    except InvalidReference as e:
        raise UsageError(f"{whole!r}: {e}") from None
    return text
