"""The token signer's key and certificates: loaded and checked at startup
(config errors name the key), or made once under the registry root."""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from storage.private import private_dir

from .configfile import ConfigProblem, Key
from .jws import PrivateKey, algorithm

if TYPE_CHECKING:
    from .config import TokenOptions

MIN_RSA_BITS = 2048


class KeyFileError(ValueError):
    pass


def load_private_key(path: str | os.PathLike) -> PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({e})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{path}: an RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})")
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: {type(key).__name__} keys cannot sign tokens (RSA or EC P-256)")
    try:
        algorithm(key)
    except ValueError as e:
        raise KeyFileError(f"{path}: {e}") from None
    return key


def load_certificates(path: str | os.PathLike) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a bundle may hold several)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise KeyFileError(f"{path} holds no PEM certificate ({e})") from None
    return certs


def check_token_files(opts: "TokenOptions", key: Key) -> None:
    """Config check: the files [token] names exist, parse and fit together."""
    def loaded(name: str, load):
        try:
            return load(getattr(opts, name))
        except KeyFileError as e:
            raise ConfigProblem((*key, name), str(e)) from None

    if opts.key:
        private = loaded("key", load_private_key)
        if opts.cert:
            cert = loaded("cert", load_certificates)[0]
            if _public_der(cert.public_key()) != _public_der(private.public_key()):
                raise ConfigProblem((*key, "cert"), f"{opts.cert} does not certify the key in {opts.key}")
    if opts.rootcertbundle:
        loaded("rootcertbundle", load_certificates)


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_signer(directory: Path, common_name: str = "soko token signer", ec_key: bool = True,
                days: int = 3650) -> tuple[Path, Path]:
    """`directory/token.{key,crt}`: an EC P-256 (or RSA 2048) key and its self-signed
    CA certificate, made once and kept (other registries trust the certificate)."""
    key_path, cert_path = directory / "token.key", directory / "token.crt"
    if key_path.is_file() and cert_path.is_file():
        return key_path, cert_path
    private_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1()) if ec_key else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    save_pair(key, cert, key_path, cert_path)
    return key_path, cert_path


def save_pair(key, cert: x509.Certificate, key_path: Path, cert_path: Path) -> None:
    """Write a private key (0600) and its certificate, each whole or not at all."""
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp, key_path)
    tmp = cert_path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)
