"""Steps that only edit the image config: ENV, LABEL, ARG, USER, EXPOSE,
VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD,
MAINTAINER, and the config half of WORKDIR.

Each handler expands its arguments against the stage's variables, edits the
config the way Docker does, and returns the history `created_by` text.
"""
from __future__ import annotations

import posixpath
import re
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.model import Descriptor, ImageConfig

from . import history
from .args import StageArgs, set_env
from .errors import DockerfileError, ExpansionError
from .expand import Lexer
from .instructions import (Arg, Cmd, CmdLike, Command, Entrypoint, Env, Expose, Healthcheck, Label,
                           Maintainer, Onbuild, Shell, StopSignal, User, Volume, Workdir)

if TYPE_CHECKING:
    from . import layerio

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


@dataclass
class StageState:
    """Where a stage stands after its latest step."""
    config: ImageConfig
    layers: list[Descriptor]          # parallel to config.diff_ids
    key: str                          # cache key of the latest step
    args: StageArgs
    cmd_set: bool = False             # CMD given in this stage (ENTRYPOINT then keeps it)
    filename: str = "Dockerfile"
    lexer: Lexer = field(default_factory=Lexer)
    ran: bool = False                 # a step of this stage (or of the one it is FROM) ran in this build
    partial: bool = False             # the dry pass past a miss: only `key` (and the config's metadata) hold
    follow: list = field(default_factory=list)  # cacheimport.Cursor: plain --cache-from images matched so far
    # the latest step's layer while it is still being written (layerio.Pending): not yet in `config`
    # nor `layers`; the executor records it before anything reads them, or a RUN starts on its tree
    pending: layerio.Pending | None = None
    pending_step: tuple | None = None  # and what recording it needs (the executor's: its step, job, key...)

    @property
    def cfg(self) -> dict:
        return self.config.config

    def env(self) -> list[str]:
        return list(self.cfg.get("Env") or [])

    def vars(self) -> dict[str, str]:
        return self.args.expansion_env(self.env())

    def shell(self) -> list[str]:
        return list(self.cfg.get("Shell") or DEFAULT_SHELL)

    def workdir(self) -> str:
        return self.cfg.get("WorkingDir") or "/"

    def word(self, text: str, cmd: Command) -> str:
        try:
            return self.lexer.word(text, self.vars())
        except ExpansionError as e:
            raise DockerfileError(str(e), cmd.line, self.filename) from None

    def copy(self) -> "StageState":
        assert self.pending is None, "a stage is copied once its layers are settled"
        return StageState(self.config.changed(), list(self.layers), self.key, self.args.copy(),
                          self.cmd_set, self.filename, self.lexer, self.ran, self.partial, list(self.follow))


def _pairs(state: StageState, cmd: Command, pairs) -> list[tuple[str, str]]:
    env = state.vars()  # one value per variable for the whole instruction
    out = []
    for k, v in pairs:
        try:
            key = state.lexer.word(k, env)
            value = state.lexer.word(v, env) if v is not None else None
        except ExpansionError as e:
            raise DockerfileError(str(e), cmd.line, state.filename) from None
        if not key:
            raise DockerfileError(f"{cmd.cmd} names can not be blank", cmd.line, state.filename)
        out.append((key, value))
    return out


def do_env(state: StageState, cmd: Env) -> str:
    env = state.env()
    parts = []
    for k, v in _pairs(state, cmd, cmd.pairs):
        env = set_env(env, k, v or "")
        parts.append(f"{k}={v}")
    state.cfg["Env"] = env
    return "ENV " + " ".join(parts)


def do_label(state: StageState, cmd: Label) -> str:
    labels = dict(state.cfg.get("Labels") or {})
    parts = []
    for k, v in _pairs(state, cmd, cmd.pairs):
        labels[k] = v or ""
        parts.append(f"{k}={v}")
    state.cfg["Labels"] = labels
    return "LABEL " + " ".join(parts)


def do_arg(state: StageState, cmd: Arg) -> str:
    parts = []
    for k, v in _pairs(state, cmd, cmd.pairs):
        state.args.declare(k, v)
        parts.append(f"{k}={v}" if v is not None else k)
    return "ARG " + " ".join(parts)


def do_workdir(state: StageState, cmd: Workdir) -> str:
    path = state.word(cmd.text, cmd)
    if not path:
        raise DockerfileError("WORKDIR requires exactly one argument", cmd.line, state.filename)
    if not path.startswith("/"):
        path = posixpath.join(state.workdir(), path)
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    state.cfg["WorkingDir"] = path
    return f"WORKDIR {path}"


def do_user(state: StageState, cmd: User) -> str:
    user = state.word(cmd.text, cmd)
    if not user:
        raise DockerfileError("USER requires exactly one argument", cmd.line, state.filename)
    state.cfg["User"] = user
    return f"USER {user}"


def do_expose(state: StageState, cmd: Expose) -> str:
    ports = dict(state.cfg.get("ExposedPorts") or {})
    new = []
    for w in cmd.words:
        spec = state.word(w, cmd)
        m = _PORT.match(spec)
        if not m:
            raise DockerfileError(f"invalid port {spec!r} (want PORT[-END][/PROTO])", cmd.line, state.filename)
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        proto = (m.group(3) or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid protocol {m.group(3)!r} in {spec!r}", cmd.line, state.filename)
        if not (0 < lo <= 65535 and lo <= hi <= 65535):
            raise DockerfileError(f"invalid port range {spec!r}", cmd.line, state.filename)
        for p in range(lo, hi + 1):
            ports[f"{p}/{proto}"] = {}
            new.append(f"{p}/{proto}")
    state.cfg["ExposedPorts"] = ports
    return history.expose_text(new)


def do_volume(state: StageState, cmd: Volume) -> str:
    vols = dict(state.cfg.get("Volumes") or {})
    new = []
    for w in cmd.words:
        v = state.word(w, cmd)
        if not v.strip():
            raise DockerfileError("VOLUME specified can not be an empty string", cmd.line, state.filename)
        vols[v] = {}
        new.append(v)
    state.cfg["Volumes"] = vols
    return "VOLUME " + history.go_list(new)


def command_argv(state: StageState, cmd: CmdLike) -> list[str]:
    """Exec form as written; shell form wrapped in the stage's SHELL."""
    if cmd.exec_form is not None:
        return list(cmd.exec_form)
    return [*state.shell(), cmd.shell]


def do_cmd(state: StageState, cmd: Cmd) -> str:
    argv = command_argv(state, cmd)
    state.cfg["Cmd"] = argv
    state.cmd_set = True
    return "CMD " + history.go_quoted_list(argv)


def do_entrypoint(state: StageState, cmd: Entrypoint) -> str:
    argv = command_argv(state, cmd)
    state.cfg["Entrypoint"] = argv
    if not state.cmd_set:
        state.cfg.pop("Cmd", None)  # a CMD from the base image no longer fits
    return "ENTRYPOINT " + history.go_quoted_list(argv)


def do_shell(state: StageState, cmd: Shell) -> str:
    state.cfg["Shell"] = list(cmd.argv)
    return "SHELL " + history.go_list(cmd.argv)


def do_stopsignal(state: StageState, cmd: StopSignal) -> str:
    sig = state.word(cmd.text, cmd)
    if not _valid_signal(sig):
        raise DockerfileError(f"invalid signal: {sig}", cmd.line, state.filename)
    state.cfg["StopSignal"] = sig
    return f"STOPSIGNAL {sig}"


def _valid_signal(sig: str) -> bool:
    if sig.isdigit():
        return 0 < int(sig) < 65
    name = sig.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if re.fullmatch(r"SIGRTMIN(\+\d+)?|SIGRTMAX(-\d+)?", name):
        return True
    return hasattr(signal.Signals, name) or name in ("SIGCLD", "SIGPOLL", "SIGIOT")


def do_healthcheck(state: StageState, cmd: Healthcheck) -> str:
    if cmd.test == ["NONE"]:
        hc: dict = {"Test": ["NONE"]}
    else:
        hc = {"Test": list(cmd.test)}
        for k, v in (("Interval", cmd.interval), ("Timeout", cmd.timeout), ("StartPeriod", cmd.start_period),
                     ("StartInterval", cmd.start_interval), ("Retries", cmd.retries)):
            if v:
                hc[k] = v
    state.cfg["Healthcheck"] = hc
    return history.healthcheck_text(hc)


def do_onbuild(state: StageState, cmd: Onbuild) -> str:
    triggers = list(state.cfg.get("OnBuild") or [])
    triggers.append(cmd.expression)
    state.cfg["OnBuild"] = triggers
    return f"ONBUILD {cmd.expression}"


def do_maintainer(state: StageState, cmd: Maintainer) -> str:
    author = state.word(cmd.text, cmd)
    state.config.data["author"] = author
    return f"MAINTAINER {author}"


NO_HISTORY = {Onbuild}  # BuildKit records the trigger in the config only

HANDLERS = {
    Env: do_env, Label: do_label, Arg: do_arg, Workdir: do_workdir, User: do_user, Expose: do_expose,
    Volume: do_volume, Cmd: do_cmd, Entrypoint: do_entrypoint, Shell: do_shell, StopSignal: do_stopsignal,
    Healthcheck: do_healthcheck, Onbuild: do_onbuild, Maintainer: do_maintainer,
}
