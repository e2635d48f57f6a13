"""Test material for the security tests: secrets, keys, tokens, certificates, refused handshakes.

Everything is generated in the test (PyJWT, cryptography); nothing is read
from the repository, so no key or certificate is ever committed.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = [
    "ADMIN_TOKEN",
    "SECRET",
    "Refused",
    "RsaKeys",
    "TlsFiles",
    "hs256",
    "make_tls",
    "read_until_closed",
    "refused_handshake",
    "rsa_keys",
    "tls_client_context",
]

# 32+ bytes, as the config requires for HS256.
SECRET = "test-secret-0123456789-abcdefghijklmnop"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def hs256(
    *,
    secret: str = SECRET,
    sub: str = "alice",
    ttl: float = 3600.0,
    subscribe: list[str] | None = None,
    publish: list[str] | None = None,
    **claims: Any,
) -> str:
    """An HS256 JWT expiring `ttl` seconds from now (negative: already expired)."""
    # RFC 7519 allows a fractional NumericDate; the server honours it exactly.
    payload: dict[str, Any] = {"sub": sub, "exp": time.time() + ttl}
    if subscribe is not None:
        payload["subscribe"] = subscribe
    if publish is not None:
        payload["publish"] = publish
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass(frozen=True)
class RsaKeys:
    """An RSA key pair: the private key signs test tokens, the public PEM file goes in config."""

    private: rsa.RSAPrivateKey
    public_file: Path

    def sign(self, *, ttl: float = 3600.0, **claims: Any) -> str:
        payload: dict[str, Any] = {"sub": "bob", "exp": time.time() + ttl, **claims}
        return jwt.encode(payload, self.private, algorithm="RS256")


def rsa_keys(directory: Path) -> RsaKeys:
    """A new RSA key pair; the public key is written to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = directory / "jwt-public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return RsaKeys(private, public_file)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 (EC P-256, valid for a day) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broadcaster test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def tls_client_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts exactly the test certificate (and checks the host)."""
    return ssl.create_default_context(cafile=str(files.cert))


@dataclass(frozen=True)
class Refused:
    """A handshake the server answered with an HTTP error."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


async def refused_handshake(url: str, **options: Any) -> Refused:
    """Open a WebSocket that the server must refuse; its status, headers and JSON body."""
    try:
        async with connect(url, open_timeout=10, **options):
            pass
    except InvalidStatus as exc:
        response = exc.response
        headers = dict(response.headers.raw_items())
        return Refused(response.status_code, headers, orjson.loads(response.body or b"{}"))
    raise AssertionError(f"the handshake to {url} was accepted")


async def read_until_closed(
    ws: ClientConnection, *, limit: int = 100, timeout: float = 10.0
) -> tuple[list[dict[str, Any]], int, str]:
    """Every event up to the server's close frame, then its code and reason.

    Fails if the server sends more than `limit` events, stays silent for
    `timeout` seconds, or ends the connection without a close frame.
    """
    got: list[dict[str, Any]] = []
    for _ in range(limit):
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except ConnectionClosed as exc:
            close = exc.rcvd
            break
        got.append(orjson.loads(raw))
    else:
        raise AssertionError(f"the server did not close after {limit} events")
    if close is None:
        raise AssertionError(f"the connection ended without a close frame; events: {got}")
    return got, close.code, close.reason
