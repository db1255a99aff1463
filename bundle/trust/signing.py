"""Signing keys, key ids, and the trust store of keys and root CAs.

The signatures these keys make over a bundle -- DSSE envelopes holding OMS v1.0
statements -- are :mod:`bundle.trust.dsse`.

Key ids are the OMS ``publicKey.hint``: the lowercase hex SHA-256 of the
public key's SubjectPublicKeyInfo in PEM form. The id in a signature is a
hint: verification tries every trusted key and the key that verifies is the
signer; a hint that names another key is refused.

ECDSA signatures use RFC 6979 deterministic nonces, so signing the same bytes
with the same key gives the same signature (and the same bundle bytes).

A key may carry an X.509 certificate chain (leaf first): its signatures then
hold ``verificationMaterial.x509CertificateChain`` instead of a key hint, as
OMS's certificate signer writes them, and a verifier that trusts the chain's
root CA accepts the key without having been given it (:mod:`bundle.certs`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import KeyFileError

if TYPE_CHECKING:  # X.509 is imported when a certificate is at hand (~0.1 s at start-up)
    from cryptography import x509

    from . import certs


__all__ = [
    "KEY_TYPES",
    "PrivateKey",
    "PublicKey",
    "TrustStore",
    "TrustedKeys",
    "generate_key",
    "load_private_key",
    "load_public_key",
]

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519")
_CURVES: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm]] = {
    "secp256r1": (ec.SECP256R1, hashes.SHA256()),
    "secp384r1": (ec.SECP384R1, hashes.SHA384()),
    "secp521r1": (ec.SECP521R1, hashes.SHA512()),
}
_CURVE_BY_TYPE = {"ecdsa-p256": "secp256r1", "ecdsa-p384": "secp384r1", "ecdsa-p521": "secp521r1"}
_TYPE_BY_CURVE = {v: k for k, v in _CURVE_BY_TYPE.items()}
MAX_KEY_FILE = 64 * 1024


def _key_type(key: Any) -> str:
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        curve = key.curve.name
        if curve not in _TYPE_BY_CURVE:
            raise KeyFileError(
                f"unsupported elliptic curve {curve!r}: use P-256 (default), P-384, P-521 "
                "or Ed25519"
            )
        return _TYPE_BY_CURVE[curve]
    raise KeyFileError(f"unsupported key type {type(key).__name__}: use ECDSA P-256 or Ed25519")


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A verification key; equal keys have equal ``key_id``."""

    key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

    def __post_init__(self) -> None:
        _key_type(self.key)

    @property
    def key_type(self) -> str:
        """One of :data:`KEY_TYPES`."""
        return _key_type(self.key)

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo, PEM."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the SPKI PEM (the OMS ``publicKey.hint``)."""
        return hashlib.sha256(self.pem()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` over ``message`` verifies with this key."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            else:
                self.key.verify(signature, message, ec.ECDSA(_CURVES[self.key.curve.name][1]))
        except crypto_exceptions.InvalidSignature:
            return False
        return True


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """A signing key. ECDSA signatures are deterministic (RFC 6979).

    ``certificates``, when given, is the key's X.509 chain (leaf first, then
    intermediates; the root may be left out) that its signatures embed.
    """

    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    certificates: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        _key_type(self.key)
        if self.certificates:
            from . import certs

            certs.check_signing_chain(self.certificates, self.public_key.pem())

    def with_certificates(
        self,
        chain: certs.CertificateSource | Sequence[certs.CertificateSource],
    ) -> PrivateKey:
        """This key with an X.509 chain (leaf first) to embed in its signatures."""
        from . import certs

        return PrivateKey(self.key, certs.load_certificates(chain, "certificate chain"))

    @property
    def public_key(self) -> PublicKey:
        """The matching verification key."""
        return PublicKey(self.key.public_key())

    @property
    def key_id(self) -> str:
        """The key id of the public half."""
        return self.public_key.key_id

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (DER ECDSA signature, or raw 64-byte Ed25519)."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        algorithm = _CURVES[self.key.curve.name][1]
        return self.key.sign(message, ec.ECDSA(algorithm, deterministic_signing=True))

    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    def save(
        self,
        prefix: str | os.PathLike[str],
        *,
        passphrase: bytes | None = None,
        overwrite: bool = False,
    ) -> tuple[Path, Path]:
        """Write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; return both paths."""
        base = os.fspath(prefix)
        key_path, pub_path = Path(base + ".key"), Path(base + ".pub")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        for p in (key_path, pub_path):
            if p.exists() and not overwrite:
                raise KeyFileError(f"{p} already exists; refusing to overwrite a key")
        try:
            fd = os.open(key_path, flags, 0o600)
            with os.fdopen(fd, "wb") as f:
                # before writing: an overwritten file keeps its old (maybe wider) mode
                os.chmod(key_path, stat.S_IRUSR | stat.S_IWUSR)
                f.write(self.private_pem(passphrase))
            pub_path.write_bytes(self.public_key.pem())
        except OSError as e:
            raise KeyFileError(f"cannot write key files at {base}: {e.strerror}") from e
        return key_path, pub_path


def generate_key(key_type: str = "ecdsa-p256") -> PrivateKey:
    """A fresh private key of one of :data:`KEY_TYPES`."""
    if key_type == "ed25519":
        return PrivateKey(ed25519.Ed25519PrivateKey.generate())
    if key_type in _CURVE_BY_TYPE:
        curve_cls = _CURVES[_CURVE_BY_TYPE[key_type]][0]
        return PrivateKey(ec.generate_private_key(curve_cls()))
    raise KeyFileError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def _read_key_bytes(source: str | os.PathLike[str] | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, what
    path = Path(source)
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise KeyFileError(f"{path} is too large to be a {what}")
        return path.read_bytes(), str(path)
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {path}: {e.strerror}") from e


def load_private_key(
    source: str | os.PathLike[str] | bytes | PrivateKey,
    passphrase: bytes | None = None,
    *,
    certificate_chain: Any = None,
) -> PrivateKey:
    """Load a PKCS#8 (or traditional) PEM private key, decrypting it with ``passphrase``.

    ``certificate_chain`` (certificates, PEM/DER bytes or files, leaf first)
    attaches the key's X.509 chain, see :meth:`PrivateKey.with_certificates`.
    """
    if isinstance(source, PrivateKey):
        return source if certificate_chain is None else source.with_certificates(certificate_chain)
    if certificate_chain is not None:
        return load_private_key(source, passphrase).with_certificates(certificate_chain)
    data, name = _read_key_bytes(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as e:
        msg = (
            "is encrypted: give its passphrase"
            if passphrase is None
            else "is not encrypted but a passphrase was given"
        )
        raise KeyFileError(f"private key {name} {msg}") from e
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm) as e:
        raise KeyFileError(
            f"cannot load private key {name}: wrong passphrase or not a PEM private key ({e})"
        ) from e
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyFileError(
            f"private key {name} is {type(key).__name__}; use ECDSA (P-256/384/521) or Ed25519"
        )
    return PrivateKey(key)


def load_public_key(source: str | os.PathLike[str] | bytes | PublicKey) -> PublicKey:
    """Load a SubjectPublicKeyInfo public key (PEM or DER)."""
    if isinstance(source, PublicKey):
        return source
    data, name = _read_key_bytes(source, "public key")
    if data.count(b"-----BEGIN") > 1:
        # The PEM loader reads the first block only: the others would be trusted by
        # nobody, silently. One key per file (or per bytes); a list for several.
        raise KeyFileError(
            f"public key {name} holds {data.count(b'-----BEGIN')} PEM blocks; give one "
            "key per file or bytes (a directory or a list for several keys)"
        )
    try:
        key = (
            serialization.load_pem_public_key(data)
            if b"-----BEGIN" in data
            else serialization.load_der_public_key(data)
        )
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm) as e:
        raise KeyFileError(f"cannot load public key {name}: not a PEM/DER public key") from e
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise KeyFileError(
            f"public key {name} is {type(key).__name__}; use ECDSA (P-256/384/521) or Ed25519"
        )
    return PublicKey(key)


class TrustStore:
    """The public keys and root CAs a deployment trusts, and how many must have signed.

    A signer counts when its key is one of ``keys``, or when its signature
    carries a certificate chain that leads to one of ``roots`` (X.509, see
    :mod:`bundle.certs`). Signers are counted by key id, so each distinct key
    counts once toward ``threshold``, however many entries or certificates it
    signed with. With roots, the threshold is not bounded by ``len(keys)``.
    """

    def __init__(
        self,
        keys: Iterable[PublicKey] = (),
        *,
        threshold: int = 1,
        roots: Iterable[x509.Certificate] = (),
    ) -> None:
        unique: dict[str, PublicKey] = {}
        for k in keys:
            unique.setdefault(k.key_id, k)
        anchors: dict[bytes, x509.Certificate] = {}
        for r in roots:
            anchors.setdefault(r.fingerprint(hashes.SHA256()), r)
        # A caller's wrong argument, not a property of any bundle: ValueError.
        if not unique and not anchors:
            raise ValueError("no trusted keys given")
        if threshold < 1 or (not anchors and threshold > len(unique)):
            raise ValueError(
                f"threshold {threshold} needs between 1 and {len(unique)} distinct trusted keys"
            )
        self.keys: tuple[PublicKey, ...] = tuple(unique.values())
        self.roots: tuple[x509.Certificate, ...] = tuple(anchors.values())
        self.threshold = threshold

    def with_roots(self, roots: Iterable[x509.Certificate]) -> TrustStore:
        """This store with more trusted root CAs."""
        return TrustStore(self.keys, threshold=self.threshold, roots=(*self.roots, *roots))

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        *,
        threshold: int = 1,
        roots: Iterable[str | os.PathLike[str]] = (),
    ) -> TrustStore:
        """Keys from files, or from every ``*.pub`` file of each directory given.

        ``roots`` are PEM/DER files of trusted root CA certificates.
        """
        anchors = load_roots(roots)
        keys: list[PublicKey] = []
        for p in paths:
            path = Path(p)
            if path.is_dir():
                found = sorted(path.glob("*.pub"))
                if not found:
                    raise KeyFileError(f"trust store directory {path} holds no .pub files")
                keys.extend(load_public_key(f) for f in found)
            else:
                keys.append(load_public_key(path))
        return cls(keys, threshold=threshold, roots=anchors)

    def key_ids(self) -> list[str]:
        """The ids of the trusted keys."""
        return [k.key_id for k in self.keys]


def load_roots(sources: Any) -> tuple[x509.Certificate, ...]:
    """Trusted root CA certificates from certificates, bytes or files; () for None/empty."""
    if sources is None or (isinstance(sources, (list, tuple)) and not sources):
        return ()
    from . import certs

    return certs.load_certificates(sources, "trusted root certificate")


TrustedKeys = Union[
    TrustStore,
    PublicKey,
    str,
    bytes,
    "os.PathLike[str]",
    Sequence[Union[PublicKey, str, bytes, "os.PathLike[str]"]],
]


def as_trust_store(trusted: TrustedKeys) -> TrustStore:
    """Accept a store, a key, PEM bytes, a path (file or directory) or a list of those."""
    if isinstance(trusted, TrustStore):
        return trusted
    one = (PublicKey, str, os.PathLike, bytes, bytearray, memoryview)
    items = [trusted] if isinstance(trusted, one) else list(trusted)
    keys: list[PublicKey] = []
    for item in items:
        if isinstance(item, PublicKey):
            keys.append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            keys.append(load_public_key(bytes(item)))  # PEM, as keys travel to workers
        elif not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"trusted keys are PublicKey objects, PEM bytes or paths, not {type(item).__name__}"
            )
        else:
            keys.extend(TrustStore.from_paths([item]).keys)
    return TrustStore(keys)
