"""`--cache-from` and `--cache-to` as BuildKit spells them (builder/CACHE.md, "Export and import").

    --cache-to   type=registry,ref=REF[,mode=min|max][,ignore-error=true]
    --cache-to   type=local,dest=DIR[,mode=min|max][,ignore-error=true]
    --cache-to   type=inline      (accepted: every image soko builds is usable as a plain --cache-from)
    --cache-from type=registry,ref=REF | type=local,src=DIR | REF (a plain image)
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CacheSpecError

MODES = ("min", "max")




@dataclass(frozen=True)
class CacheSpec:
    """One --cache-from or --cache-to, read."""

    type: str                  # registry | local | image (a plain image ref) | inline
    ref: str | None = None     # registry, image
    path: str | None = None    # local: src= or dest=
    mode: str = "min"
    ignore_error: bool = False

    def __str__(self) -> str:
        return self.ref or self.path or self.type


def _fields(text: str, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or not k:
            raise CacheSpecError(f"{flag} {text!r}: {part!r} is not key=value")
        if k in out:
            raise CacheSpecError(f"{flag} {text!r}: {k} is given twice")
        out[k] = v.strip()
    return out


def _ref(value: str | None, flag: str, text: str) -> str:
    if not value:
        raise CacheSpecError(f"{flag} {text!r}: ref= is required")
    from storage import references
    from storage.errors import InvalidReference

    try:
        references.parse(value)
    except InvalidReference as e:
        raise CacheSpecError(f"{flag} {text!r}: invalid ref {value!r}: {e}") from None
    return value


def _bool(value: str, flag: str, text: str, key: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise CacheSpecError(f"{flag} {text!r}: {key} must be true or false, got {value!r}")


def _leftover(fields: dict[str, str], flag: str, text: str) -> None:
    if fields:
        raise CacheSpecError(f"{flag} {text!r}: unsupported field(s) {', '.join(sorted(fields))}")


def _given(text: str, flag: str) -> str:
    text = text.strip()
    if not text:
        raise CacheSpecError(f"{flag}: empty value")
    return text


def parse_from(text: str) -> CacheSpec:
    flag = "--cache-from"
    text = _given(text, flag)
    if "=" not in text:
        return CacheSpec("image", ref=_ref(text, flag, text))
    fields = _fields(text, flag)
    kind = fields.pop("type", "registry")  # BuildKit: a bare ref=... means the registry
    if kind == "registry":
        spec = CacheSpec("registry", ref=_ref(fields.pop("ref", None), flag, text))
    elif kind == "local":
        src = fields.pop("src", None)
        if not src:
            raise CacheSpecError(f"{flag} {text!r}: type=local needs src=DIR")
        spec = CacheSpec("local", path=src)
    else:
        raise CacheSpecError(f"{flag} {text!r}: type must be registry or local, got {kind!r}")
    _leftover(fields, flag, text)
    return spec


def parse_to(text: str) -> CacheSpec:
    flag = "--cache-to"
    text = _given(text, flag)
    if "=" not in text:
        raise CacheSpecError(f"{flag} {text!r}: expected type=registry,ref=REF or type=local,dest=DIR")
    fields = _fields(text, flag)
    kind = fields.pop("type", None)
    mode = fields.pop("mode", "min")
    if mode not in MODES:
        raise CacheSpecError(f"{flag} {text!r}: mode must be min or max, got {mode!r}")
    ignore = _bool(fields.pop("ignore-error", "false"), flag, text, "ignore-error")
    if kind == "registry":
        spec = CacheSpec("registry", ref=_ref(fields.pop("ref", None), flag, text), mode=mode, ignore_error=ignore)
    elif kind == "local":
        dest = fields.pop("dest", None)
        if not dest:
            raise CacheSpecError(f"{flag} {text!r}: type=local needs dest=DIR")
        spec = CacheSpec("local", path=dest, mode=mode, ignore_error=ignore)
    elif kind == "inline":
        spec = CacheSpec("inline")
    else:
        raise CacheSpecError(f"{flag} {text!r}: type must be registry, local or inline, got {kind!r}")
    _leftover(fields, flag, text)
    return spec
