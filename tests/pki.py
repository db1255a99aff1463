"""A throwaway PKI for the X.509 tests: root CA -> intermediate CA -> signing leaves.

Everything is generated with ``cryptography`` at test time; nothing is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def key_usage(**flags: bool) -> x509.KeyUsage:
    base = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    base.update(flags)
    return x509.KeyUsage(**base)


def issue(
    subject: str,
    key: Any,
    issuer: x509.Certificate | None,
    issuer_key: Any,
    *,
    ca: bool,
    usage: x509.KeyUsage | None,
    path_length: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    san: list[x509.GeneralName] | None = None,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """One certificate; ``issuer`` None means self-signed; ``extra``: (extension, critical)."""
    public = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if usage is not None:
        b = b.add_extension(usage, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    algo = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class PKI:
    """Root (P-256) -> intermediate (P-384) and helpers to issue leaves under it."""

    root_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    inter_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    root: x509.Certificate = field(init=False)
    inter: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        ca_usage = key_usage(key_cert_sign=True, crl_sign=True)
        since = NOW - dt.timedelta(days=365)
        self.root = issue(
            "Example Root CA",
            self.root_key,
            None,
            self.root_key,
            ca=True,
            usage=ca_usage,
            path_length=1,
            not_before=since,
        )
        self.inter = issue(
            "Example Signing CA",
            self.inter_key,
            self.root,
            self.root_key,
            ca=True,
            usage=ca_usage,
            path_length=0,
            not_before=since,
        )

    def leaf(
        self,
        key: Any,
        *,
        subject: str = "ML release signer",
        usage: x509.KeyUsage | None = None,
        san: list[x509.GeneralName] | None = None,
        **kw: Any,
    ) -> x509.Certificate:
        """A leaf under the intermediate (digitalSignature, an e-mail SAN by default)."""
        return issue(
            subject,
            key,
            self.inter,
            self.inter_key,
            ca=False,
            usage=usage if usage is not None else key_usage(digital_signature=True),
            san=san if san is not None else [x509.RFC822Name("releases@example.org")],
            **kw,
        )

    def write(self, directory: Path, leaf: x509.Certificate) -> dict[str, Path]:
        """root.pem, chain.pem (leaf + intermediate) and leaf.pem / inter.pem files."""
        paths = {
            "root": directory / "root.pem",
            "chain": directory / "chain.pem",
            "leaf": directory / "leaf.pem",
            "inter": directory / "inter.pem",
        }
        paths["root"].write_bytes(pem(self.root))
        paths["chain"].write_bytes(pem(leaf, self.inter))
        paths["leaf"].write_bytes(pem(leaf))
        paths["inter"].write_bytes(pem(self.inter))
        return paths


CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
