"""`--secret` and `--ssh`: what a build may lend to `RUN --mount=type=secret|ssh`, as buildx spells them.

`--secret id=ID,src=FILE`, `--secret id=ID,env=VAR`, `--secret id=ID` (the
environment variable ID if set, else the file ID, as buildx does), with an
optional `type=file|env`. `--ssh default` forwards $SSH_AUTH_SOCK;
`--ssh ID=SOCKET` another agent socket. Values are read when a step needs
them and go nowhere else: not into keys, history, layers or messages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BuildError


@dataclass
class SecretSource:
    """Where a --secret's value comes from (a file or a variable), never the value."""

    id: str
    file: str | None = None
    env: str | None = None

    @classmethod
    def parse(cls, text: str) -> "SecretSource":
        fields: dict[str, str] = {}
        for part in text.split(","):
            k, eq, v = part.partition("=")
            k = k.strip().lower()
            if not eq or not k:
                raise BuildError(f"--secret {text!r}: {part!r} is not key=value")
            fields["src" if k == "source" else k] = v
        ident = fields.pop("id", "")
        if not ident:
            raise BuildError(f"--secret {text!r}: needs id=ID")
        kind = fields.pop("type", None)
        if kind not in (None, "file", "env"):
            raise BuildError(f"--secret {text!r}: type must be file or env")
        src, env = fields.pop("src", None), fields.pop("env", None)
        if fields:
            raise BuildError(f"--secret {text!r}: unknown field(s) {', '.join(sorted(fields))}")
        if src is None and env is None:
            if kind == "env" or (kind is None and ident in os.environ):
                env = ident
            else:
                src = ident
        elif kind == "env" and src is not None:
            env, src = src, None
        return cls(ident, src, env)

    def check(self) -> None:
        if self.file is not None and not os.path.isfile(self.file):
            raise BuildError(f"--secret id={self.id}: cannot read {self.file}: no such file")

    def read(self) -> bytes | None:
        """The value, or None when its variable is unset."""
        if self.env is not None:
            value = os.environ.get(self.env)
            return value.encode() if value is not None else None
        try:
            with open(self.file, "rb") as f:  # type: ignore[arg-type]
                return f.read()
        except OSError as e:
            raise BuildError(f"--secret id={self.id}: cannot read {self.file}: {e.strerror}") from None


@dataclass
class SshSource:
    """An --ssh agent: its id and the socket it answers on."""

    id: str
    socket: str

    @classmethod
    def parse(cls, text: str) -> "SshSource":
        ident, eq, path = text.partition("=")
        ident = ident.strip()
        if not ident:
            raise BuildError(f"--ssh {text!r}: expected default or ID=SOCKET")
        if not eq:
            if ident != "default":
                raise BuildError(f"--ssh {text!r}: expected default or ID=SOCKET")
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise BuildError("--ssh default: SSH_AUTH_SOCK is not set (start an ssh-agent, or give ID=SOCKET)")
        if "," in path:
            raise BuildError(f"--ssh {text!r}: one agent socket per id (key files are not supported)")
        return cls(ident, path)

    def check(self) -> None:
        import stat

        try:
            ok = stat.S_ISSOCK(os.stat(self.socket).st_mode)
        except OSError:
            ok = False
        if not ok:
            raise BuildError(f"--ssh {self.id}={self.socket}: not an agent socket")
