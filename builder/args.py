"""Build arguments: the global scope before the first FROM, and each stage's own.

Rules (Dockerfile reference, "ARG"):
- ARGs before the first FROM are global: usable in FROM lines only, unless a
  stage re-declares them (`ARG NAME` without a value takes the global value).
- Inside a stage an ARG is in scope from its line on; `--build-arg` overrides
  its default. A stage built FROM another stage inherits that stage's ARGs.
- ENV always wins over an ARG of the same name.
- Predefined: the proxy variables (given with --build-arg, in RUN's
  environment without a declaration, but kept out of the cache key and the
  history unless declared) and the platform ARGs (TARGETPLATFORM, BUILDOS...)
  in the global scope, set for this machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from storage.model import Platform

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


def platform_args(target: Platform | None = None, build: Platform | None = None) -> dict[str, str]:
    """TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and the BUILD* ones."""
    build = build or Platform.host()
    target = target or build
    out: dict[str, str] = {}
    for prefix, p in (("BUILD", build), ("TARGET", target)):
        out[f"{prefix}PLATFORM"] = str(p)
        out[f"{prefix}OS"] = p.os
        out[f"{prefix}ARCH"] = p.architecture
        out[f"{prefix}VARIANT"] = p.variant or ""
    return out


@dataclass
class BuildArgs:
    """The values given with --build-arg, remembering which ones were used."""
    values: dict[str, str] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)

    def get(self, name: str) -> str | None:
        if name in self.values:
            self.consumed.add(name)
            return self.values[name]
        return None

    def proxies(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k in PROXY_ARGS}

    def unused(self) -> list[str]:
        return sorted(k for k in self.values if k not in self.consumed and k not in PROXY_ARGS)


@dataclass
class GlobalScope:
    """ARGs before the first FROM, plus the predefined platform ARGs."""
    build_args: BuildArgs
    values: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def new(cls, build_args: BuildArgs, target: Platform | None = None) -> "GlobalScope":
        scope = cls(build_args)
        for k, v in platform_args(target).items():
            given = build_args.get(k) if k in build_args.values else None
            scope.values[k] = given if given is not None else v
        return scope

    def declare(self, name: str, default: str | None) -> None:
        given = self.build_args.get(name)
        self.values[name] = given if given is not None else default

    def env(self) -> dict[str, str]:
        """What FROM lines (and --platform) expand against."""
        return {k: v for k, v in self.values.items() if v is not None}


@dataclass
class StageArgs:
    """The ARGs declared in one stage so far, in declaration order (None: declared, unset)."""
    global_scope: GlobalScope
    values: dict[str, str | None] = field(default_factory=dict)

    def copy(self) -> "StageArgs":
        return StageArgs(self.global_scope, dict(self.values))

    def declare(self, name: str, default: str | None) -> str | None:
        given = self.global_scope.build_args.get(name)
        if given is not None:
            value: str | None = given
        elif default is not None:
            value = default
        else:
            value = self.global_scope.values.get(name)
        self.values.pop(name, None)
        self.values[name] = value
        return value

    def set_values(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if v is not None}

    def expansion_env(self, env: Iterable[str]) -> dict[str, str]:
        """Variables for expanding an instruction: declared ARGs, then ENV over them."""
        out = self.set_values()
        out.update(env_dict(env))
        return out

    def run_env(self, env: Iterable[str]) -> list[str]:
        """RUN's environment: the image's ENV, declared ARGs not shadowed by ENV,
        then proxy build args that no ENV or ARG sets."""
        envd = env_dict(env)
        out = list(env)
        for k, v in self.set_values().items():
            if k not in envd:
                out.append(f"{k}={v}")
        for k, v in self.global_scope.build_args.proxies().items():
            if k not in envd and k not in self.values:
                out.append(f"{k}={v}")
        return out

    def run_args(self, env: Iterable[str]) -> list[tuple[str, str]]:
        """Every ARG declared in the stage with the value a RUN sees (ENV wins; one declared
        without a value, and not given, counts as empty, as BuildKit writes it), for the
        cache key and the `|N K=V` history prefix."""
        envd = env_dict(env)
        return [(k, envd.get(k, v if v is not None else "")) for k, v in self.values.items()]


def env_dict(env: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env or ():
        k, _, v = item.partition("=")
        out[k] = v
    return out


def set_env(env: list[str], key: str, value: str) -> list[str]:
    """Replace or append `key=value`, keeping the order Docker keeps."""
    out = []
    found = False
    for item in env:
        if item.partition("=")[0] == key:
            if not found:
                out.append(f"{key}={value}")
                found = True
        else:
            out.append(item)
    if not found:
        out.append(f"{key}={value}")
    return out
