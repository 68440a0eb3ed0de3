"""`soko search` and `soko registry ...`: a registry's search, and the
secrets and keys a `soko serve` config needs."""
from __future__ import annotations

import json

import click


@click.command("search")
@click.option("--limit", type=click.IntRange(1, 100), default=25, show_default=True, help="Results at most.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="A table (NAME, DESCRIPTION, STARS, OFFICIAL, AUTOMATED) or the results as JSON.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.argument("term")
def search_cmd(limit: int, fmt: str, insecure: bool, term: str) -> None:
    """Search the repositories of a registry: HOST/TERM (Docker Hub is not searched)."""
    from registry.client import ClientOptions, search

    from ..render import table, truncate

    results = search(term, limit, ClientOptions(insecure=insecure))
    if fmt == "json":
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
        return
    rows = [[r.name, truncate(r.description, 45), str(r.star_count), "[OK]" if r.is_official else "",
             "[OK]" if r.is_automated else ""] for r in results]
    click.echo(table(["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"], rows))


@click.group("registry")
def registry_group() -> None:
    """Secrets and keys for a `soko serve` config."""


@registry_group.command("robot-secret")
@click.argument("name")
@click.option("--namespace", "namespaces", multiple=True, required=True, help="A namespace it may act in (repeat).")
@click.option("--expires", default=None, help="Expiry: 2027-01-01 or 2027-01-01T00:00:00Z.")
def robot_secret_cmd(name: str, namespaces: tuple[str, ...], expires: str | None) -> None:
    """Make a robot account: prints its secret (once: it is stored nowhere) and the
    [robots] table for the config, which holds only the secret's bcrypt hash."""
    import datetime
    import secrets

    from registry.server.config import ROBOT_PREFIX, check_namespace
    from registry.server.configfile import ConfigProblem
    from registry.server.passwords import hash_secret

    full = name if name.startswith(ROBOT_PREFIX) else ROBOT_PREFIX + name
    try:
        check_namespace(full[len(ROBOT_PREFIX):], (), what="robot name")
        for ns in namespaces:
            check_namespace(ns, ())
    except ConfigProblem as e:
        raise click.UsageError(e.message) from None
    when = None
    if expires:
        try:
            when = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            raise click.UsageError(f"--expires: not a date or date-time: {expires!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
    secret = secrets.token_urlsafe(32)
    click.echo(f"secret of {full} (shown once, keep it): {secret}")
    click.echo("")
    click.echo(f"[robots.{json.dumps(full)}]")
    click.echo(f"secret = {json.dumps(hash_secret(secret))}")
    click.echo(f"namespaces = {json.dumps(list(namespaces))}")
    if when is not None:
        click.echo(f"expires = {when.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}")


@registry_group.command("token-key")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--rsa", is_flag=True, help="RSA 2048 (RS256) instead of EC P-256 (ES256).")
def token_key_cmd(directory: str, rsa: bool) -> None:
    """Make the key the built-in token endpoint signs with and its certificate
    (what another registry's rootcertbundle trusts); prints the [token] table."""
    from pathlib import Path

    from registry.server.keys import make_signer

    key, cert = make_signer(Path(directory), ec_key=not rsa)
    click.echo("[token]")
    click.echo(f"key = {json.dumps(str(key.resolve()))}")
    click.echo(f"cert = {json.dumps(str(cert.resolve()))}")
