"""X.509 signers: a certificate chain inside a signature, checked against trusted roots.

An organisation that already runs a PKI should not have to hand raw public
keys to every verifier. A signer can embed its certificate chain (leaf first,
then intermediates) in the Sigstore bundle's ``verificationMaterial`` as
``x509CertificateChain``, exactly as OpenSSF Model Signing's certificate
signer does; a verifier configured with trusted root CAs then:

1. parses the DER certificates (bounded count and size);
2. requires the leaf's public key to be ECDSA P-256, P-384 or Ed25519;
3. builds a path from the leaf through the given intermediates to one of the
   trusted roots with :mod:`cryptography.x509.verification`, at the
   verification time (no trusted timestamp exists to prove an earlier signing
   time, so an expired certificate is refused, unlike ``model_signing`` which
   checks validity at the leaf's ``notBefore``); CA certificates must meet the
   Web PKI CA profile (basic constraints, keyCertSign); the leaf must carry
   key usage ``digitalSignature``, must not be a CA, and if it has an extended
   key usage it must include ``codeSigning`` (or ``anyExtendedKeyUsage``); a
   certificate with a critical extension the verifier does not know is refused
   (RFC 5280 4.2; cryptography's path validation does so under any policy);
4. and only then is the DSSE signature checked with the leaf's key
   (:mod:`bundle.signing`).

Revocation (CRL, OCSP) is not checked: see SECURITY.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import KeyFileError, SignatureError

__all__ = [
    "LEAF_KEY_TYPES",
    "MAX_CHAIN_LENGTH",
    "CertificateRejectedError",
    "Identity",
    "claimed_identity",
    "load_certificates",
    "verify_chain",
]

MAX_CHAIN_LENGTH = 8
"""Most certificates one signature may carry (leaf plus intermediates)."""

LEAF_KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ed25519")
"""Leaf key types a certificate signer may use (the Web PKI curves, and Ed25519)."""
MAX_CERTIFICATE_BYTES = 16 * 1024
MAX_CERTIFICATE_FILE = 1024 * 1024

CertificateSource = Union[x509.Certificate, bytes, str, "os.PathLike[str]"]


class CertificateRejectedError(Exception):
    """Internal: why a certified signature does not count (reported, not raised to callers)."""


@dataclass(frozen=True)
class Identity:
    """Who a certificate says the signer is, and which trusted root vouched for it."""

    subject: str
    san: tuple[str, ...]
    issuer: str
    root: str
    not_after: str
    fingerprint: str
    """Hex SHA-256 of the leaf certificate's DER bytes."""

    def describe(self) -> str:
        """One line for a terminal: subject, then alternative names."""
        return self.subject + (f" ({', '.join(self.san)})" if self.san else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "subject": self.subject,
            "san": list(self.san),
            "issuer": self.issuer,
            "root": self.root,
            "not_after": self.not_after,
            "fingerprint_sha256": self.fingerprint,
        }


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


def _san(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    out: list[str] = []
    for gn in ext:
        if isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"uri:{gn.value}")
        elif isinstance(gn, x509.DNSName):
            out.append(f"dns:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"ip:{gn.value}")
        else:
            out.append(f"{type(gn).__name__}:{gn.value}")
    return tuple(out)


def leaf_key_type(cert: x509.Certificate) -> str:
    """The leaf's key type, or :class:`CertificateRejectedError` if not allowed for signing."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:  # a curve or key type no backend knows
        raise CertificateRejectedError(
            f"leaf certificate key cannot be loaded ({e}); use ECDSA P-256/P-384 or Ed25519"
        ) from e
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name)
        if kind:
            return kind
        raise CertificateRejectedError(
            f"leaf certificate key is on curve {key.curve.name}; use P-256, P-384 or Ed25519"
        )
    raise CertificateRejectedError(
        f"leaf certificate key is {type(key).__name__}; use ECDSA P-256/P-384 or Ed25519"
    )


def load_certificates(
    sources: CertificateSource | Sequence[CertificateSource], what: str = "certificate"
) -> tuple[x509.Certificate, ...]:
    """Certificates from objects, PEM/DER bytes or files (a PEM file may hold several).

    The order is kept: for a signer's chain, the leaf first.
    """
    items: Iterable[Any] = (
        [sources] if isinstance(sources, (x509.Certificate, bytes, str, os.PathLike)) else sources
    )
    out: list[x509.Certificate] = []
    for item in items:
        if isinstance(item, x509.Certificate):
            out.append(item)
            continue
        if isinstance(item, bytes):
            data, name = item, what
        else:
            path = Path(item)
            try:
                if path.stat().st_size > MAX_CERTIFICATE_FILE:
                    raise KeyFileError(f"{path} is too large to be a {what} file")
                data, name = path.read_bytes(), str(path)
            except OSError as e:
                raise KeyFileError(f"cannot read {what} {path}: {e.strerror}") from e
        try:
            out.extend(
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        except ValueError as e:
            raise KeyFileError(f"{name} is not a PEM or DER X.509 certificate ({e})") from e
    if not out:
        raise KeyFileError(f"no {what} given")
    return tuple(out)


def check_signing_chain(chain: Sequence[x509.Certificate], public_pem: bytes) -> None:
    """Refuse a signer's chain whose leaf does not certify the signing key."""
    leaf = chain[0]
    try:
        leaf_key_type(leaf)
    except CertificateRejectedError as e:
        raise KeyFileError(str(e)) from e
    leaf_pem = leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_pem != public_pem:
        raise KeyFileError(
            f"the first certificate ({_name(leaf.subject)}) does not certify "
            "the signing key: give the leaf certificate first, then intermediates"
        )
    if len(chain) > MAX_CHAIN_LENGTH:
        raise KeyFileError(f"certificate chain of {len(chain)} exceeds {MAX_CHAIN_LENGTH}")


def parse_der_chain(ders: Sequence[bytes], entry: str) -> tuple[x509.Certificate, ...]:
    """Parse a signature's embedded certificates; malformed ones are a SignatureError."""
    if not 1 <= len(ders) <= MAX_CHAIN_LENGTH:
        raise SignatureError(
            f"signature {entry} carries {len(ders)} certificates; 1..{MAX_CHAIN_LENGTH} allowed",
            entry=entry,
        )
    out = []
    for i, der in enumerate(ders):
        if len(der) > MAX_CERTIFICATE_BYTES:
            raise SignatureError(
                f"signature {entry}: certificate {i} is larger than {MAX_CERTIFICATE_BYTES} bytes",
                entry=entry,
            )
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError as e:
            raise SignatureError(
                f"signature {entry}: certificate {i} is not valid DER X.509", entry=entry
            ) from e
    return tuple(out)


def _require_digital_signature(_policy: Any, _cert: x509.Certificate, ku: x509.KeyUsage) -> None:
    if not ku.digital_signature:
        raise ValueError("leaf key usage lacks digitalSignature")


def _code_signing_if_restricted(
    _policy: Any, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if (
        eku is not None
        and ExtendedKeyUsageOID.CODE_SIGNING not in eku
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
    ):
        raise ValueError("leaf extended key usage does not include codeSigning")


def _not_a_ca(_policy: Any, _cert: x509.Certificate, bc: x509.BasicConstraints | None) -> None:
    if bc is not None and bc.ca:
        raise ValueError("leaf is a CA certificate")


def _leaf_policy() -> verification.ExtensionPolicy:
    crit = verification.Criticality.AGNOSTIC
    return (
        verification.ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, crit, _require_digital_signature)
        .may_be_present(x509.ExtendedKeyUsage, crit, _code_signing_if_restricted)
        .may_be_present(x509.BasicConstraints, crit, _not_a_ca)
    )


def _explain(e: verification.VerificationError, leaf: x509.Certificate, now: dt.datetime) -> str:
    text = str(e)
    if "not valid at validation time" in text:
        return (
            f"certificate {_name(leaf.subject)} (or one of its issuers) is not valid at "
            f"{now.isoformat(timespec='seconds')}: leaf valid "
            f"{leaf.not_valid_before_utc.isoformat()} .. "
            f"{leaf.not_valid_after_utc.isoformat()}"
        )
    if "candidates exhausted" in text:
        return (
            f"certificate chain of {_name(leaf.subject)} (issuer {_name(leaf.issuer)}) "
            "does not lead to a trusted root CA"
        )
    if "validator failed" in text:
        return text.split("ValueError: ", 1)[-1].split(" (encountered", 1)[0]
    if "missing required extension" in text and "2.5.29.15" in text:
        return "leaf certificate has no key usage extension; digitalSignature is required"
    return text.removeprefix("validation failed: ").split(" (encountered", 1)[0]


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], now: dt.datetime
) -> Identity:
    """Check ``chain`` (leaf first) against ``roots`` at ``now``; the leaf's identity.

    Raises :class:`CertificateRejectedError` saying why the chain is not trusted.
    """
    if not roots:
        raise CertificateRejectedError("no trusted root certificates configured")
    leaf, intermediates = chain[0], list(chain[1:])
    leaf_key_type(leaf)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_LENGTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=_leaf_policy()
        )
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
        root = verified.chain[-1]
        return Identity(
            _name(leaf.subject),
            _san(leaf),
            _name(leaf.issuer),
            _name(root.subject),
            leaf.not_valid_after_utc.isoformat(),
            hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        )
    except verification.VerificationError as e:
        raise CertificateRejectedError(_explain(e, leaf, now)) from e
    except (ValueError, UnsupportedAlgorithm) as e:  # attacker's DER: lazily parsed fields
        raise CertificateRejectedError(f"certificate chain cannot be processed: {e}") from e


def claimed_identity(cert: x509.Certificate) -> str:
    """The leaf's subject and SAN as claimed, for unverified display (``inspect``)."""
    san = _san(cert)
    return _name(cert.subject) + (f" ({', '.join(san)})" if san else "")
