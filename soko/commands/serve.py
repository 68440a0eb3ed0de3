"""`soko serve`: the registry, on embedded defaults (127.0.0.1:5000, data under <store root>/registry)."""
from __future__ import annotations

import click


@click.command("serve")
@click.option("--addr", default=None, help="HOST:PORT (default 127.0.0.1:5000).")
@click.option("--root", "reg_root", default=None, type=click.Path(file_okay=False),
              help="Registry data (default: <store root>/registry).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (registry/CONFIG.md); flags override it.")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Serve HTTPS with this certificate (PEM), with --tls-key.")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The private key of --tls-cert (PEM).")
@click.option("--tls-self-signed", is_flag=True, help="Generate and serve a self-signed certificate.")
@click.option("--htpasswd", default=None, type=click.Path(dir_okay=False, exists=True),
              help="bcrypt htpasswd file: users who may sign in.")
@click.option("--read-only", is_flag=True, help="Refuse pushes and deletes.")
@click.option("--audit-log", default=None, type=click.Path(dir_okay=False),
              help="Append JSON lines of pushes, pulls, deletes, logins and refusals to this file.")
@click.option("--token", "token", is_flag=True, help="Docker token auth with the built-in /token endpoint.")
@click.option("--token-key", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Private key the built-in token endpoint signs with (default: made under the root).")
@click.option("--token-realm", default=None, help="Token endpoint URL (an external issuer's).")
@click.option("--token-issuer", default=None, help="Issuer name the tokens carry.")
@click.option("--token-service", default=None, help="Service name (the tokens' audience).")
@click.option("--token-cert", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Certificate bundle of an external token issuer (as distribution's rootcertbundle).")
@click.option("--proxy", default=None, metavar="URL",
              help="Be a pull-through cache of the registry at URL (read-only; [proxy] in the config).")
@click.option("--no-ui", is_flag=True, help="Do not serve the web UI under /ui/.")
@click.option("--storage", default=None, metavar="URL",
              help="Keep blobs in S3: s3://BUCKET/PREFIX?endpoint=URL&region=R (default: the directory under "
                   "--root). Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or [storage] in the config.")
@click.option("--redirect", is_flag=True, help="Answer blob GETs with 307 to a presigned S3 URL.")
@click.option("--metadata", default=None, metavar="URL",
              help="Keep the metadata in PostgreSQL (postgresql://USER@HOST:PORT/DB; [metadata] in the config), "
                   "so replicas can share it. Default: SQLite in the root.")
@click.pass_context
def serve_cmd(ctx: click.Context, addr, reg_root, config_file, tls_cert, tls_key, tls_self_signed, htpasswd,
              read_only, audit_log, token, token_key, token_realm, token_issuer, token_service, token_cert,
              proxy, no_ui, storage, redirect, metadata) -> None:
    """Serve an OCI distribution registry."""
    from registry.server import ServerConfig, run
    from registry.server.config import flag_overrides

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    overrides = flag_overrides(addr=addr, root=reg_root, htpasswd=htpasswd, read_only=read_only, tls_cert=tls_cert,
                               tls_key=tls_key, tls_self_signed=tls_self_signed, token=token, token_key=token_key,
                               token_realm=token_realm, token_issuer=token_issuer, token_service=token_service,
                               token_cert=token_cert, audit_log=audit_log, proxy=proxy, no_ui=no_ui,
                               storage=storage, redirect=redirect, metadata=metadata)
    cfg = ServerConfig.load(config_file, overrides, defaults={"root": str(ctx.obj.root / "registry")})

    def ready(info) -> None:
        click.echo(f"soko registry listening on {info.url} (data in {cfg.root})", err=True)
        if cfg.ui.enabled:
            click.echo(f"web UI: {info.url}/ui/", err=True)

    run(cfg, on_ready=ready)
