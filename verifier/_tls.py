"""Throwaway TLS material for tests and the demo: a private CA, a server certificate, a client certificate.

``write_test_pki(dir, now=...)`` writes ``ca.pem``, ``server.pem``/``server.key`` (SANs ``localhost``,
``127.0.0.1``, ``::1``) and ``client.pem``/``client.key`` (for mutual TLS), ECDSA P-256, valid for a few days
from ``now``. It is for loopback tests and demonstrations only: production certificates come from the
operator's own PKI, and this module must never be used to mint them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol import atomic_write

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertKey:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class LoopbackPki:
    """Paths of the files ``write_test_pki`` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str, *, now: dt.datetime, days: int = 7) -> CertKey:
    """A self-signed CA certificate that can sign leaf certificates (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_cert(
    ca: CertKey, common_name: str, *, now: dt.datetime, hosts: Sequence[str] = (), client: bool = False,
    days: int = 7,
) -> CertKey:
    """A leaf certificate signed by ``ca``: for a server (SANs ``hosts``) or, with ``client``, a client."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the CA key must be an EC key made by make_ca")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_test_pki(directory: Path | str, *, now: dt.datetime, hosts: Sequence[str] = DEFAULT_HOSTS) -> LoopbackPki:
    """A fresh CA, server and client certificate in ``directory`` (keys written mode 0600)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = make_ca("pawprint test CA", now=now)
    server = issue_cert(ca, "pawprint verifier", now=now, hosts=hosts)
    client = issue_cert(ca, "pawprint owner", now=now, client=True)
    pki = LoopbackPki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")
    atomic_write(pki.ca, ca.cert_pem)
    atomic_write(pki.server_cert, server.cert_pem)
    atomic_write(pki.server_key, server.key_pem, mode=0o600)
    atomic_write(pki.client_cert, client.cert_pem)
    atomic_write(pki.client_key, client.key_pem, mode=0o600)
    return pki
