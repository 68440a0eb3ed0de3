"""JSON Web Signatures in compact form (RFC 7515), the few algorithms
Docker's token auth uses: RS256/384/512 (PKCS#1 v1.5) and ES256/384/512 (the
signature is r||s, fixed width). Signing and verifying go through
`cryptography`; the rest is base64url and JSON, small enough to keep here.

The signing key is named by `kid` in libtrust's fingerprint form (what
distribution 2.x looks up in the keys of its rootcertbundle). Verification
accepts, as distribution does, an `x5c` chain that ends at a trusted
certificate, a `jwk` that is one of the trusted keys, or a `kid` of one.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"secp256r1": ("ES256", 32), "secp384r1": ("ES384", 48), "secp521r1": ("ES512", 66)}
MAX_TOKEN = 64 * 1024  # bytes; a token is a header value


class JWSError(ValueError):
    """Malformed, unsigned by a trusted key, or a bad signature."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JWSError("bad base64url") from None


def key_id(key: PublicKey) -> str:
    """libtrust's key ID: SHA-256 of the DER public key, first 240 bits, base32,
    in 12 groups of 4 joined by ':'."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


def algorithm(key: PrivateKey | PublicKey) -> str:
    """The JWS alg a key signs with: RS256 for RSA, ES256/384/512 by EC curve."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name][0]
    raise JWSError(f"unsupported key type {type(key).__name__} (RSA or EC P-256/384/521)")


def sign(claims: dict[str, Any], key: PrivateKey, header: dict[str, Any] | None = None) -> str:
    alg = algorithm(key)
    head = {"typ": "JWT", "alg": alg, "kid": key_id(key.public_key()), **(header or {})}
    signing_input = f"{b64url(_json(head))}.{b64url(_json(claims))}".encode()
    digest = _HASHES[alg[2:]]()
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(signing_input, padding.PKCS1v15(), digest)
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
        width = _CURVES[key.curve.name][1]
        sig = r.to_bytes(width, "big") + s.to_bytes(width, "big")
    return f"{signing_input.decode()}.{b64url(sig)}"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Trust:
    """What verification trusts: public keys by libtrust ID, and root certificates for x5c chains."""
    keys: dict[str, PublicKey]
    roots: tuple[x509.Certificate, ...] = ()

    @classmethod
    def of(cls, keys: list[PublicKey], roots: list[x509.Certificate] = ()) -> "Trust":
        all_keys = [*keys, *(c.public_key() for c in roots)]
        return cls({key_id(k): k for k in all_keys}, tuple(roots))


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS, unverified."""
    if len(token) > MAX_TOKEN:
        raise JWSError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWSError("not a compact JWS (want three parts)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise JWSError("header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWSError("header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2])


def verify(token: str, trust: Trust, now: datetime.datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token whose signature a trusted key made; JWSError otherwise."""
    header, claims, signing_input, sig = decode(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg[:2] not in ("RS", "ES") or alg[2:] not in _HASHES:
        raise JWSError(f"unsupported algorithm {alg!r}")
    key = _signing_key(header, trust, now)
    if algorithm(key)[:2] != alg[:2]:
        raise JWSError(f"algorithm {alg} does not fit the signing key")
    digest = _HASHES[alg[2:]]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signing_input, padding.PKCS1v15(), digest)
        else:
            width = _CURVES[key.curve.name][1]
            if alg != _CURVES[key.curve.name][0] or len(sig) != 2 * width:
                raise JWSError("bad signature")
            r, s = int.from_bytes(sig[:width], "big"), int.from_bytes(sig[width:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise JWSError("bad signature") from None
    return header, claims


def _signing_key(header: dict[str, Any], trust: Trust, now: datetime.datetime | None) -> PublicKey:
    """As distribution: an x5c chain first, then a jwk, then a kid."""
    x5c = header.get("x5c")
    if x5c:
        return _verify_chain(x5c, trust.roots, now)
    jwk = header.get("jwk")
    if jwk is not None:
        key = _jwk_key(jwk)
        kid = key_id(key)
        if kid not in trust.keys:
            raise JWSError("untrusted jwk")
        return trust.keys[kid]
    kid = header.get("kid")
    if isinstance(kid, str) and kid in trust.keys:
        return trust.keys[kid]
    raise JWSError(f"signed by an untrusted key (kid {kid!r})" if kid else "no key named (x5c, jwk or kid)")


def _verify_chain(x5c: Any, roots: tuple[x509.Certificate, ...], now: datetime.datetime | None) -> PublicKey:
    """The leaf's key when leaf -> intermediates -> a trusted root holds (signatures and validity)."""
    if not isinstance(x5c, list) or not all(isinstance(c, str) for c in x5c) or len(x5c) > 8:
        raise JWSError("malformed x5c")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except (ValueError, binascii.Error):
        raise JWSError("x5c holds something that is not a certificate") from None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for cert in chain:
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise JWSError("a certificate of the x5c chain is not valid now")
    roots_der = {r.public_bytes(serialization.Encoding.DER) for r in roots}
    current, intermediates = chain[0], chain[1:]
    for _ in range(len(chain)):
        if current.public_bytes(serialization.Encoding.DER) in roots_der:
            return chain[0].public_key()
        root = next((r for r in roots if _issued(current, r)), None)
        if root is not None:
            if not (root.not_valid_before_utc <= now <= root.not_valid_after_utc):
                raise JWSError("the trusted certificate of the x5c chain is not valid now")
            return chain[0].public_key()
        nxt = next((c for c in intermediates if _issued(current, c)), None)
        if nxt is None:
            break
        current = nxt
    raise JWSError("the x5c chain does not end at a trusted certificate")


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer` is a CA certificate that signed `cert`."""
    try:
        if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
        cert.verify_directly_issued_by(issuer)
        return True
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False


def _jwk_key(jwk: Any) -> PublicKey:
    if not isinstance(jwk, dict):
        raise JWSError("malformed jwk")
    try:
        if jwk.get("kty") == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if jwk.get("kty") == "EC":
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk["crv"]]
            x = int.from_bytes(b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(b64url_decode(jwk["y"]), "big")
            return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except (KeyError, ValueError, TypeError):
        raise JWSError("malformed jwk") from None
    raise JWSError("unsupported jwk key type")
