"""`soko serve`: the registry, on embedded defaults (127.0.0.1:5000, data under <store root>/registry)."""
from __future__ import annotations

import click


@click.command("serve")
@click.option("--addr", default=None, help="HOST:PORT (default 127.0.0.1:5000).")
@click.option("--root", "reg_root", default=None, type=click.Path(file_okay=False),
              help="Registry data (default: <store root>/registry).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="JSON config file; flags override it.")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Serve HTTPS with this certificate (PEM), with --tls-key.")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The private key of --tls-cert (PEM).")
@click.option("--tls-self-signed", is_flag=True, help="Generate and serve a self-signed certificate.")
@click.option("--htpasswd", default=None, type=click.Path(dir_okay=False, exists=True),
              help="bcrypt htpasswd file: require Basic auth.")
@click.option("--read-only", is_flag=True, help="Refuse pushes and deletes.")
@click.pass_context
def serve_cmd(ctx: click.Context, addr, reg_root, config_file, tls_cert, tls_key, tls_self_signed, htpasswd,
              read_only) -> None:
    """Serve an OCI distribution registry."""
    from registry.server import ServerConfig, run

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    overrides = {"addr": addr, "root": reg_root, "htpasswd": htpasswd, "read_only": True if read_only else None}
    if tls_cert or tls_self_signed:
        overrides["tls"] = {"cert": tls_cert, "key": tls_key, "self_signed": tls_self_signed}
    if overrides["root"] is None and not (config_file and _config_sets_root(config_file)):
        overrides["root"] = str(ctx.obj.root / "registry")
    if config_file:
        cfg = ServerConfig.from_file(config_file, **overrides)
    else:
        cfg = ServerConfig.from_dict({k: v for k, v in overrides.items() if v is not None})

    def ready(info) -> None:
        click.echo(f"soko registry listening on {info.url} (data in {cfg.root})", err=True)

    run(cfg, on_ready=ready)


def _config_sets_root(path: str) -> bool:
    import json

    try:
        data = json.loads(open(path).read())
    except (OSError, ValueError):
        return False  # ServerConfig.from_file reports it properly
    return isinstance(data, dict) and "root" in data
