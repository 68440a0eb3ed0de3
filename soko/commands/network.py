"""`soko network create|ls|inspect|rm|prune`: bridge networks, shown as Docker shows its own."""
from __future__ import annotations

import json

import click

from ..cli import SokoGroup

NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}


@click.group("network", cls=SokoGroup)
def network_cmd() -> None:
    """Manage networks."""


def _db(ctx):
    return ctx.obj.image_store().db


def _created(net) -> str:
    from runtime.logfile import rfc3339

    return rfc3339(net.created)


def inspect_doc(net) -> dict:
    """`docker network inspect` of one network."""
    from runtime.network import networks

    containers = {}
    for lease in networks.active(net):
        containers[lease.container] = {"Name": lease.names[0] if lease.names else lease.container[:12],
                                       "EndpointID": lease.endpoint, "MacAddress": lease.mac,
                                       "IPv4Address": f"{lease.address}/{lease.prefix}", "IPv6Address": ""}
    config = [{"Subnet": net.subnet, "Gateway": net.gateway}] if net.driver == "bridge" and net.subnet else []
    options = {"com.docker.network.bridge.name": net.bridge} if net.driver == "bridge" else {}
    return {"Name": net.name, "Id": net.id, "Created": _created(net), "Scope": "local", "Driver": net.driver,
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None if net.predefined else {},
                                          "Config": config},
            "Internal": net.internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": containers, "Options": options, "Labels": net.labels}


@network_cmd.command("create")
@click.option("-d", "--driver", default="bridge", help="Driver (bridge).")
@click.option("--subnet", default=None, help="Subnet in CIDR form, e.g. 172.30.0.0/16 (default: a free one).")
@click.option("--gateway", default=None, help="The bridge's address in the subnet (default: its first).")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Metadata, repeatable.")
@click.argument("name")
@click.pass_context
def create_cmd(ctx, driver, subnet, gateway, labels, name) -> None:
    """Create a network; prints its ID."""
    from runtime.network import networks

    net = networks.create(_db(ctx), name, subnet, gateway, driver,
                          dict(lbl.partition("=")[::2] for lbl in labels))
    click.echo(net.id)


def _matches(net, filters) -> bool:
    from ..errors import SokoError
    from ..image_list import labels_match

    for f in filters:
        key, _, value = f.partition("=")
        if key == "name":
            ok = value in net.name
        elif key == "id":
            ok = net.id.startswith(value)
        elif key == "driver":
            ok = net.driver == value
        elif key == "label":
            ok = labels_match([value], net.labels)
        elif key == "type":
            ok = (value == "builtin") == net.predefined
        elif key == "scope":
            ok = value == "local"
        else:
            raise SokoError(f"Invalid filter '{key}'")
        if not ok:
            return False
    return True


@network_cmd.command("ls")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="name=, id=, driver=, label=K[=V], type=builtin|custom, scope=local.")
@click.option("--format", "fmt", default=None, help="Go template, `table TEMPLATE`, or `json`.")
@click.option("--no-trunc", is_flag=True, help="Full network IDs.")
@click.option("-q", "--quiet", is_flag=True, help="Only network IDs.")
@click.pass_context
def ls_cmd(ctx, filters, fmt, no_trunc, quiet) -> None:
    """List networks."""
    from runtime.network import networks

    from ..formatter import FormatRow, render

    rows = []
    for net in networks.all_networks(_db(ctx)):
        if not _matches(net, filters):
            continue
        rows.append(FormatRow({"ID": net.id if no_trunc else net.id[:12], "Name": net.name, "Driver": net.driver,
                               "Scope": "local", "IPv6": "false", "Internal": str(net.internal).lower(),
                               "Labels": ",".join(f"{k}={v}" for k, v in net.labels.items()),
                               "CreatedAt": _created(net)}, "*formatter.networkContext"))
    if quiet and fmt in (None, "table"):
        fmt = "{{.ID}}"
    click.echo(render(fmt, rows, NETWORK_HEADERS, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"), nl=False)


@network_cmd.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Go template over each network.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx, fmt, names) -> None:
    """Show details of networks as JSON."""
    from runtime.network import networks

    from ..formatter import render_one

    db = _db(ctx)
    docs = [inspect_doc(networks.get(db, n)) for n in names]
    if fmt:
        click.echo("".join(render_one(fmt, d) for d in docs), nl=False)
    else:
        click.echo(json.dumps(docs, indent=4))


@network_cmd.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm_cmd(ctx, names) -> None:
    """Remove networks (none that a running container uses)."""
    from runtime.network import networks

    from ..errors import for_each

    db = _db(ctx)
    for_each(ctx.obj.debug, names, lambda n: networks.remove(db, n) and None)


@network_cmd.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="label=KEY[=VALUE].")
@click.pass_context
def prune_cmd(ctx, force, filters) -> None:
    """Remove all networks no container uses."""
    from ..prune import confirm

    if not confirm("This will remove all custom networks not used by at least one container.", force):
        return
    result = prune_networks(ctx.obj, False, filters)
    if result.lines:
        click.echo(f"{result.title}:\n" + "".join(f"{n}\n" for n in result.lines))


def prune_networks(obj, all_: bool, filters: tuple[str, ...] = ()):
    """The pruner of `network prune` and `system prune`: user networks no container refers to."""
    from runtime import records
    from runtime.network import networks
    from runtime.network.leases import snapshot

    from ..prune import PruneResult

    db = obj.image_store().db
    used = set()
    for rec in records.all_records(db):
        used.add((rec.config.get("HostConfig") or {}).get("NetworkMode", ""))
    result = PruneResult("Deleted Networks")
    leases = snapshot()
    for net in networks.all_networks(db):
        if net.predefined or net.name in used or net.id in used or networks.active(net, leases):
            continue
        if not _matches(net, [f for f in filters if f.startswith("label=")]):
            continue
        networks.remove(db, net.id, leases)
        result.lines.append(net.name)
    return result
