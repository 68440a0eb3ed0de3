"""Container commands: ps, logs, start, stop, restart, kill, rm, wait, port, top, diff, container prune.

Each takes containers by name, full ID or unique ID prefix, as Docker does.
Commands that take several go on past one that fails, report it, and exit 1
at the end.
"""
from __future__ import annotations

import re
import sys
from typing import Callable

import click

from ..errors import SokoError, for_each, is_known, one_line


def _store(ctx: click.Context):
    return ctx.obj.image_store()


def get(ctx: click.Context, ref: str):
    from runtime.container import Container

    return Container.get(_store(ctx), ref)


def each(ctx: click.Context, refs: tuple[str, ...], fn: Callable, echo: bool = True) -> None:
    """`fn(container)` for every ref, printing the ref on success (Docker's output); exit 1 if any failed."""
    for_each(ctx.obj.debug, refs, lambda ref: fn(get(ctx, ref)), echo)


# -- ps ------------------------------------------------------------------------------------------------
def parse_filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        key, eq, value = v.partition("=")
        if not eq or key not in ("status", "name", "label", "id", "exited", "ancestor"):
            raise SokoError(f"invalid filter {v!r} (status=, name=, label=, id=, exited=, ancestor=)")
        if key == "status" and value not in ("created", "restarting", "running", "removing", "paused", "exited",
                                             "dead"):
            raise SokoError(f"invalid filter 'status={value}'")
        out.setdefault(key, []).append(value)
    return out


def matches(c, filters: dict[str, list[str]]) -> bool:
    """Docker's rules: values of one key are alternatives, different keys must all hold; labels all hold."""
    from ..containerview import labels

    st = c.state
    if "status" in filters and st.status not in filters["status"]:
        return False
    if "name" in filters and not any(re.search(v, c.name) for v in filters["name"]):
        return False
    if "id" in filters and not any(c.id.startswith(v) for v in filters["id"]):
        return False
    if "exited" in filters and not (st.status == "exited" and str(st.exit_code) in filters["exited"]):
        return False
    if "ancestor" in filters and not any(v in (c.record.image_ref, c.record.image, c.record.image[7:19])
                                         for v in filters["ancestor"]):
        return False
    have = labels(c)
    for want in filters.get("label", []):
        key, eq, value = want.partition("=")
        if key not in have or (eq and have[key] != value):
            return False
    return True


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers (default: running ones).")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs and commands.")
@click.option("-f", "--filter", "filters", multiple=True, help="status=, name=, label=, id=, exited=, ancestor=")
@click.option("--format", "fmt", default=None, help="json, table TEMPLATE or a Go template.")
@click.option("-l", "--latest", is_flag=True, help="Only the latest created container.")
@click.option("-n", "--last", type=int, default=-1, help="The n last created containers.")
@click.pass_context
def ps_cmd(ctx, show_all, quiet, no_trunc, filters, fmt, latest, last) -> None:
    """List containers."""
    from runtime.container import Container

    from ..containerview import PS_DEFAULT, PS_HEADERS, ps_fields
    from ..formatter import FormatRow, render

    f = parse_filters(filters)
    found = Container.all(_store(ctx))
    if latest:
        last = 1
    if last >= 0:
        found = found[:last]
    elif not show_all and "status" not in f:
        found = [c for c in found if c.state.status in ("running", "restarting", "paused")]
    found = [c for c in found if matches(c, f)]
    if quiet:
        for c in found:
            click.echo(c.id if no_trunc else c.id[:12])
        return
    from runtime.network.leases import snapshot

    leases = snapshot() if any(c.state.status == "running" for c in found) else {}
    rows = [FormatRow(ps_fields(c, trunc=not no_trunc, leases=leases), "*formatter.ContainerContext")
            for c in found]
    click.echo(render(fmt, rows, PS_HEADERS, PS_DEFAULT), nl=False)


# -- logs ----------------------------------------------------------------------------------------------
def parse_since(text: str | None, now_ns: int) -> int | None:
    """Docker's --since/--until: RFC 3339, a Unix timestamp, or a duration back from now (10m)."""
    if not text:
        return None
    from runtime.logfile import parse_rfc3339
    from runtime.service import parse_duration

    if re.fullmatch(r"\d+(\.\d+)?", text):
        return int(float(text) * 1e9)
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:
        return now_ns - parse_duration(text)
    except Exception:
        raise SokoError(f"invalid time {text!r} (RFC 3339, a Unix timestamp or a duration like 10m)") from None


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow the output.")
@click.option("-n", "--tail", default="all", help="Lines from the end (default: all).")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--since", default=None, help="Since a time (RFC 3339, Unix time) or for a duration (10m).")
@click.option("--until", default=None, help="Until a time or a duration ago.")
@click.argument("container")
@click.pass_context
def logs_cmd(ctx, follow, tail, timestamps, since, until, container) -> None:
    """Show a container's logs."""
    import time

    from runtime import logfile
    from runtime.waiting import write_all

    c = get(ctx, container)
    if tail != "all" and not str(tail).lstrip("-").isdigit():
        raise SokoError(f"invalid --tail {tail!r} (a number or all)")
    now = time.time_ns()
    lo, hi = parse_since(since, now), parse_since(until, now)
    records, offset = logfile.read(c.log_path, None if tail == "all" or int(tail) < 0 else int(tail), lo, hi)

    def show(rec) -> None:
        data = rec.data
        if timestamps:
            data = (logfile.rfc3339(rec.ns, fixed=True) + " ").encode() + data
        write_all(2 if rec.stream == "stderr" else 1, data)

    sys.stdout.flush()
    for rec in records:
        show(rec)
    if follow and (hi is None or hi > now):
        for rec in logfile.follow(c.log_path, offset, lambda: not c.running, until=hi):
            if lo is None or rec.ns >= lo:
                show(rec)


# -- lifecycle -----------------------------------------------------------------------------------------
@click.command("start")
@click.option("-a", "--attach", is_flag=True, help="Attach stdout/stderr and forward signals.")
@click.option("-i", "--interactive", is_flag=True, help="Attach stdin.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def start_cmd(ctx, attach, interactive, containers) -> None:
    """Start stopped containers."""
    if attach or interactive:
        if len(containers) > 1:
            raise SokoError("you cannot start and attach multiple containers at once")
        from runtime.attach import attach as attach_to

        c = get(ctx, containers[0])
        try:
            sys.exit(attach_to(c, 0 if interactive else None, 1, 2, start=True))
        except Exception as exc:
            if ctx.obj.debug or not is_known(exc):
                raise
            click.echo(f"soko: {one_line(exc)}", err=True)
            sys.exit(getattr(exc, "status", 1))
    each(ctx, containers, lambda c: c.start() and None)


@click.command("stop")
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds before SIGKILL (default 10).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop_cmd(ctx, timeout, containers) -> None:
    """Stop running containers: the stop signal, then SIGKILL after the timeout."""
    each(ctx, containers, lambda c: c.stop(timeout))


@click.command("restart")
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds before SIGKILL (default 10).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def restart_cmd(ctx, timeout, containers) -> None:
    """Stop, then start containers."""
    def restart(c) -> None:
        c.stop(timeout)
        c.start()
    each(ctx, containers, restart)


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send (default KILL).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def kill_cmd(ctx, sig, containers) -> None:
    """Send a signal to containers' main process."""
    from runtime.service import parse_signal

    number = parse_signal(sig)
    each(ctx, containers, lambda c: c.kill(number))


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Anonymous volumes too (soko makes none).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm_cmd(ctx, force, volumes, containers) -> None:
    """Remove containers."""
    each(ctx, containers, lambda c: c.delete(force))


@click.command("wait")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def wait_cmd(ctx, containers) -> None:
    """Wait until containers stop; print their exit codes."""
    each(ctx, containers, lambda c: str(c.wait()))


@click.command("port")
@click.argument("container")
@click.argument("private", required=False)
@click.pass_context
def port_cmd(ctx, container, private) -> None:
    """Published ports of a container: `80/tcp -> 0.0.0.0:8080`, or one port's host addresses."""
    from ..containerview import port_bindings

    c = get(ctx, container)
    bindings = port_bindings(c, c.endpoint())
    if private:
        port, _, proto = private.partition("/")
        key = f"{port}/{proto or 'tcp'}"
        if not bindings.get(key):
            raise SokoError(f"No public port '{key}' published for {c.name}")
        for b in bindings[key]:
            click.echo(f"{b['HostIp']}:{b['HostPort']}")
        return
    for key, binds in bindings.items():
        for b in binds or []:
            click.echo(f"{key} -> {b['HostIp']}:{b['HostPort']}")


@click.command("top", context_settings={"ignore_unknown_options": True})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def top_cmd(ctx, container, ps_args) -> None:
    """The processes of a container (host `ps`, filtered to them)."""
    import subprocess

    from ..render import table

    c = get(ctx, container)
    pids = set(c.pids())
    args = list(ps_args) or ["-ef"]
    out = subprocess.run(["ps", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SokoError(f"ps {' '.join(args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise SokoError(f"ps {' '.join(args)}: no PID column")
    col = header.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(header) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            rows.append(fields)
    click.echo(table(header, rows, minwidth=20))


@click.command("diff")
@click.argument("container")
@click.pass_context
def diff_cmd(ctx, container) -> None:
    """Files a container added (A), changed (C) or deleted (D)."""
    from runtime.changes import changes

    c = get(ctx, container)
    with c.changes() as (upper, lowers):
        for kind, path in changes(upper, lowers):
            click.echo(f"{kind} {path}")


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="label=K[=V] or until=TIME.")
@click.pass_context
def prune_cmd(ctx, force, filters) -> None:
    """Remove all stopped containers."""
    import time

    from runtime.container import Container

    if not force:
        click.echo("WARNING! This will remove all stopped containers.")
        if not click.confirm("Are you sure you want to continue?", default=False):
            return
    until = None
    label_filters = []
    for f in filters:
        key, _, value = f.partition("=")
        if key == "until":
            until = parse_since(value, time.time_ns())
        elif key == "label":
            label_filters.append(value)
        else:
            raise SokoError(f"invalid filter {f!r} (label=, until=)")
    removed = []
    for c in Container.all(_store(ctx)):
        if c.state.status not in ("created", "exited", "dead") or c.cdir.locked_by_other():
            continue
        if until is not None and c.record.created > until:
            continue
        if not matches(c, {"label": label_filters}):
            continue
        c.delete()
        removed.append(c.id)
    if removed:
        click.echo("Deleted Containers:")
        for cid in removed:
            click.echo(cid)
        click.echo("")
    click.echo("Total reclaimed space: 0B")


class ContainerGroup(click.Group):
    """`soko container VERB`: the container commands under Docker's management-command names."""

    VERBS = {"ls": "containers:ps_cmd", "ps": "containers:ps_cmd", "list": "containers:ps_cmd",
             "logs": "containers:logs_cmd", "start": "containers:start_cmd", "stop": "containers:stop_cmd",
             "restart": "containers:restart_cmd", "kill": "containers:kill_cmd", "rm": "containers:rm_cmd",
             "remove": "containers:rm_cmd", "wait": "containers:wait_cmd", "port": "containers:port_cmd",
             "top": "containers:top_cmd", "diff": "containers:diff_cmd", "prune": "containers:prune_cmd",
             "run": "run:run_cmd", "create": "run:create_cmd", "exec": "exec:exec_cmd", "cp": "cp:cp_cmd",
             "commit": "commit:commit_cmd", "inspect": "inspect:container_inspect_cmd"}

    def list_commands(self, ctx):
        return sorted(self.VERBS)

    def get_command(self, ctx, name):
        import importlib

        target = self.VERBS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"soko.commands.{module}"), attr)


@click.group("container", cls=ContainerGroup)
def container_cmd() -> None:
    """Manage containers."""
