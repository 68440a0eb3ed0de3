"""`--change` for `soko import`: the Dockerfile instructions that only edit
the image config (CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME,
STOPSIGNAL), as `docker import --change` accepts them."""
from __future__ import annotations

import json
import shlex

from .errors import SokoError


def _command(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, what: str) -> dict[str, str]:
    out = {}
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV key value`
        return {words[0]: value.split(None, 1)[1]}
    for w in words:
        if "=" not in w:
            raise SokoError(f"--change {what}: expected KEY=VALUE, got {w!r}")
        k, v = w.split("=", 1)
        out[k] = v
    return out


def apply_changes(changes: tuple[str, ...] | list[str]) -> dict:
    """The config fields that the `--change` lines set."""
    cfg: dict = {}
    for line in changes:
        word, _, value = line.strip().partition(" ")
        word = word.upper()
        if word == "CMD":
            cfg["Cmd"] = _command(value)
        elif word == "ENTRYPOINT":
            cfg["Entrypoint"] = _command(value)
        elif word == "ENV":
            env = dict(e.split("=", 1) for e in cfg.get("Env", []))
            env.update(_pairs(value, "ENV"))
            cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
        elif word == "LABEL":
            cfg.setdefault("Labels", {}).update(_pairs(value, "LABEL"))
        elif word == "USER":
            cfg["User"] = value.strip()
        elif word == "WORKDIR":
            cfg["WorkingDir"] = value.strip()
        elif word == "STOPSIGNAL":
            cfg["StopSignal"] = value.strip()
        elif word == "EXPOSE":
            for p in value.split():
                cfg.setdefault("ExposedPorts", {})[p if "/" in p else f"{p}/tcp"] = {}
        elif word == "VOLUME":
            vols = _command(value) if value.strip().startswith("[") else value.split()
            for v in vols:
                cfg.setdefault("Volumes", {})[v] = {}
        else:
            raise SokoError(f"--change: {word or line!r} is not supported "
                            "(CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL)")
    return cfg
