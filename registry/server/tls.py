"""TLS for the server: a given cert/key pair, or a self-signed certificate
made once with `cryptography` and kept under the registry root (so clients
that were told to trust it keep trusting it across restarts)."""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from storage.private import private_dir

from ..errors import ConfigError


def self_signed(root: Path, host: str) -> tuple[Path, Path]:
    """`<root>/tls/self-signed.{crt,key}`, created if absent; valid for
    localhost, 127.0.0.1, ::1, this machine's name and `host`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from .keys import save_pair

    tls_dir = root / "tls"
    cert_path, key_path = tls_dir / "self-signed.crt", tls_dir / "self-signed.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    private_dir(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    if host and host not in ("0.0.0.0", "::", "localhost"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soko registry")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    save_pair(key, cert, key_path, cert_path)
    return cert_path, key_path


def server_context(cert: str | os.PathLike, key: str | os.PathLike) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {e}") from None
    return ctx
