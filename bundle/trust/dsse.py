"""OpenSSF Model Signing (OMS v1.0) signatures: DSSE envelope and in-toto statement.

A signature entry is a Sigstore bundle (JSON) holding one DSSE envelope whose
payload is an in-toto Statement v1 with predicate type
``https://model_signing/signature/v1.0``: the predicate lists every bundle
entry except the signatures (``manifest.json`` among them) with its SHA-256.
DSSE signs PAE(payloadType, payload), never the payload alone. The rule for
what a statement over a bundle must list is written once, here
(:func:`statement_resources`, :func:`check_statement`), and used by the writer,
the verifier and ``pack``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import SignatureError
from ..format import canonical_json as _json
from .signing import PrivateKey, PublicKey, TrustStore

if TYPE_CHECKING:
    from ..format.manifest import Manifest
    from . import certs

_HEX64 = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "CertifiedSigner",
    "Envelope",
    "Resources",
    "build_statement",
    "check_statement",
    "pae",
    "parse_envelope",
    "parse_statement",
    "resources_digest",
    "sign_statement",
    "statement_resources",
    "verify_certified",
    "verify_envelope",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def resources_digest(resources: Sequence[tuple[str, str]]) -> str:
    """The Statement subject digest: SHA-256 over the resource digests in order."""
    h = hashlib.sha256()
    for _name, digest in resources:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def _path_key(name: str) -> list[str]:
    """OMS orders files as paths, component by component ("a/b" before "a-b")."""
    return name.split("/")


def _shard_key(name: str) -> tuple[list[str], int, int]:
    """Sort key of a ``path:start:end`` resource: OMS orders shards as (path, start, end)."""
    path, start, end = name.rsplit(":", 2)
    return path.split("/"), int(start), int(end)


def build_statement(
    model_name: str, resources: Sequence[tuple[str, str]], shard_size: int | None = None
) -> bytes:
    """The canonical in-toto Statement (OMS v1.0 predicate) over ``resources``.

    Without ``shard_size`` the resources are whole files (OMS ``files``
    serialization); with it they are ``path:start:end`` pieces of at most
    ``shard_size`` bytes, as OMS's ``shards`` serialization names them.
    """
    serialization: dict[str, Any] = {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": ["signatures"],
    }
    algorithm = "sha256"
    if shard_size is None:
        ordered = sorted(resources, key=lambda r: _path_key(r[0]))
    else:
        ordered = sorted(resources, key=lambda r: _shard_key(r[0]))
        serialization.update(method="shards", shard_size=shard_size)
        algorithm = _shard_algorithm(shard_size)
    return _json.dumps(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": model_name, "digest": {"sha256": resources_digest(ordered)}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": serialization,
                "resources": [{"name": n, "algorithm": algorithm, "digest": d} for n, d in ordered],
            },
        }
    )


def _shard_algorithm(shard_size: int) -> str:
    """What OMS's reference implementation calls a shard's SHA-256 (its digests compare by it)."""
    return f"sha256-sharded-{shard_size}"


def sign_statement(statement: bytes, key: PrivateKey) -> bytes:
    """A Sigstore bundle (canonical JSON) with one DSSE signature over ``statement``."""
    sig = key.sign(pae(PAYLOAD_TYPE, statement))
    return _json.dumps(
        {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": _verification_material(key),
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode("ascii"),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(sig).decode("ascii")}],
            },
        }
    )


def _verification_material(key: PrivateKey) -> dict[str, Any]:
    """A key hint, or (for a certified key) its chain as DER, leaf first, as OMS writes it."""
    if not key.certificates:
        return {"publicKey": {"hint": key.key_id}, "tlogEntries": []}
    chain = [
        {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")}
        for c in key.certificates
    ]
    return {"x509CertificateChain": {"certificates": chain}, "tlogEntries": []}


@dataclass(frozen=True)
class Envelope:
    """A parsed (not yet verified) signature entry."""

    hint: str | None
    payload_type: str
    payload: bytes
    signature: bytes
    certificates: tuple[bytes, ...] = ()
    """DER certificates from ``verificationMaterial`` (leaf first); empty for key hints."""


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"{what} is not valid base64") from e


def parse_envelope(data: bytes, entry: str) -> Envelope:
    """Parse a Sigstore bundle signature entry; no cryptography yet."""
    try:
        doc = _json.loads(data, what=entry)
    except Exception as e:  # FormatError from the JSON layer: a bad signature, here
        raise SignatureError(f"signature {entry} is not valid JSON", entry=entry) from e
    if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SignatureError(
            f"signature {entry} is not a Sigstore bundle of media type {BUNDLE_MEDIA_TYPE}",
            entry=entry,
        )
    env = doc.get("dsseEnvelope")
    material = doc.get("verificationMaterial")
    if not isinstance(env, dict) or not isinstance(material, dict):
        raise SignatureError(f"signature {entry} has no DSSE envelope", entry=entry)
    public = material.get("publicKey")
    hint = public.get("hint") if isinstance(public, dict) else None
    if hint is not None and (not isinstance(hint, str) or not _HEX64.fullmatch(hint)):
        raise SignatureError(f"signature {entry}: key hint is not a hex SHA-256", entry=entry)
    chain = _material_certificates(material, entry)
    if chain and public is not None:
        raise SignatureError(
            f"signature {entry} holds both a public key hint and certificates", entry=entry
        )
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise SignatureError(f"signature {entry} must hold exactly one DSSE signature", entry=entry)
    keyid = sigs[0].get("keyid")
    if keyid is not None and not isinstance(keyid, str):
        raise SignatureError(f"signature {entry}: DSSE keyid is not a string", entry=entry)
    if keyid and hint and keyid != hint:
        raise SignatureError(f"signature {entry}: DSSE keyid and key hint disagree", entry=entry)
    payload_type = env.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(
            f"signature {entry}: DSSE payload type is {payload_type!r}, expected {PAYLOAD_TYPE!r}",
            entry=entry,
        )
    return Envelope(
        hint or (keyid or None),
        payload_type,
        _b64(env.get("payload"), f"{entry} payload"),
        _b64(sigs[0].get("sig"), f"{entry} signature"),
        chain,
    )


def _material_certificates(material: dict[str, Any], entry: str) -> tuple[bytes, ...]:
    """DER certificates of ``x509CertificateChain`` (OMS) or ``certificate`` (bundle v0.3)."""
    chain = material.get("x509CertificateChain")
    single = material.get("certificate")
    if chain is None and single is None:
        return ()
    if chain is not None and single is not None:
        raise SignatureError(
            f"signature {entry} holds two kinds of certificate material", entry=entry
        )
    if chain is not None:
        items = chain.get("certificates") if isinstance(chain, dict) else None
        from .certs import MAX_CHAIN_LENGTH

        if not isinstance(items, list) or not 1 <= len(items) <= MAX_CHAIN_LENGTH:
            raise SignatureError(
                f"signature {entry}: x509CertificateChain needs 1..{MAX_CHAIN_LENGTH} certificates",
                entry=entry,
            )
    else:
        items = [single]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SignatureError(
                f"signature {entry}: certificate {i} is not an object", entry=entry
            )
        out.append(_b64(item.get("rawBytes"), f"{entry} certificate {i}"))
    return tuple(out)


def verify_envelope(env: Envelope, trust: TrustStore, entry: str) -> PublicKey | None:
    """Return the trusted key that made ``env``'s signature, or None if none did."""
    message = pae(env.payload_type, env.payload)
    for key in trust.keys:
        if key.verify(env.signature, message):
            if env.hint is not None and env.hint != key.key_id:
                raise SignatureError(
                    f"signature {entry} names key {env.hint[:16]} but was made by trusted key "
                    f"{key.key_id[:16]}: a mismatched key id is refused",
                    entry=entry,
                )
            return key
    return None


@dataclass(frozen=True)
class CertifiedSigner:
    """A signer whose key a trusted root CA certified (see :mod:`bundle.certs`)."""

    key: PublicKey
    identity: certs.Identity


def verify_certified(env: Envelope, trust: TrustStore, entry: str, now: Any) -> CertifiedSigner:
    """Check ``env``'s embedded chain against the trusted roots, then its signature.

    Order: parse the certificates, check the chain to a trusted root at ``now``
    (validity, key usage), then the DSSE signature with the leaf's key. Raises
    :class:`certs.CertificateRejectedError` with the reason when the signature does
    not count (a malformed chain among them); a key hint naming another key than
    the certified one that made the signature is a SignatureError.
    """
    from . import certs

    if not env.certificates:
        raise certs.CertificateRejectedError("signature carries no certificate")
    try:
        chain = certs.parse_der_chain(env.certificates, entry)
    except SignatureError as e:  # no key made anything yet: the signature just does not count
        raise certs.CertificateRejectedError(str(e)) from e
    identity = certs.verify_chain(chain, trust.roots, now)
    leaf_key = chain[0].public_key()
    assert isinstance(leaf_key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey))
    key = PublicKey(leaf_key)
    if not key.verify(env.signature, pae(env.payload_type, env.payload)):
        raise certs.CertificateRejectedError(
            f"signature does not verify with the key of certificate {identity.subject}"
        )
    # Only now is the certified key known to have made it: a hint naming another key is
    # then refused outright, as for a directly trusted key (before, it is just junk).
    if env.hint is not None and env.hint != key.key_id:
        raise SignatureError(
            f"signature {entry} names key {env.hint[:16]} but its certificate "
            f"is for key {key.key_id[:16]}: a mismatched key id is refused",
            entry=entry,
        )
    return CertifiedSigner(key, identity)


class Resources(list[tuple[str, str]]):
    """A statement's (file, digest) pairs, one per file, with how the files were cut.

    Under the ``shards`` method each file's pieces are joined back: one piece gives
    its digest, several give their shard root -- the value the manifest records --
    and ``sizes`` holds each file's length as its pieces declare it.
    """

    method: str = "files"
    shard_size: int = 0
    sizes: dict[str, int]
    pieces: tuple[tuple[str, str], ...]
    """The resources exactly as the statement lists them (``path:start:end`` under shards)."""

    def __init__(
        self,
        items: Iterable[tuple[str, str]] = (),
        method: str = "files",
        shard_size: int = 0,
        sizes: dict[str, int] | None = None,
        pieces: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(items)
        self.method, self.shard_size, self.sizes = method, shard_size, dict(sizes or {})
        self.pieces = tuple(self) if pieces is None else tuple(pieces)


_SHARD_NAME = re.compile(r"(.+):(0|[1-9][0-9]{0,18}):([1-9][0-9]{0,18})")


def _statement_serialization(pred: dict[str, Any], entry: str) -> tuple[str, int]:
    ser = pred.get("serialization")
    if (
        not isinstance(ser, dict)
        or ser.get("hash_type") != "sha256"
        or ser.get("method") not in ("files", "shards")
    ):
        raise SignatureError(
            f"{entry}: serialization must be OMS 'files' or 'shards' with hash_type sha256",
            entry=entry,
        )
    if ser["method"] == "files":
        return "files", 0
    from ..format.digest import MAX_SHARD_SIZE, MIN_SHARD_SIZE

    size = ser.get("shard_size")
    if isinstance(size, float) and size.is_integer():  # model_signing writes 4194304.0
        size = int(size)
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size & (size - 1)
        or not MIN_SHARD_SIZE <= size <= MAX_SHARD_SIZE
    ):
        raise SignatureError(
            f"{entry}: shard_size must be a power of two between "
            f"{MIN_SHARD_SIZE} and {MAX_SHARD_SIZE}",
            entry=entry,
        )
    return "shards", size


def _join_shards(out: list[tuple[str, str]], shard_size: int, entry: str) -> Resources:
    """Join ``path:start:end`` resources into one (path, digest) per file, checking
    that each file's pieces are exactly its consecutive ``shard_size`` slices."""
    from ..format.digest import shard_root

    pieces: dict[str, list[tuple[int, int, str]]] = {}
    for name, digest in out:
        m = _SHARD_NAME.fullmatch(name)
        if m is None:
            raise SignatureError(
                f"{entry}: shard resource {name!r} is not path:start:end", entry=entry
            )
        pieces.setdefault(m[1], []).append((int(m[2]), int(m[3]), digest))
    joined, sizes = [], {}
    for path, parts in pieces.items():
        for i, (start, end, _d) in enumerate(parts):
            last = i == len(parts) - 1
            if (
                start != i * shard_size
                or not (0 < end - start <= shard_size)
                or (not last and end - start != shard_size)
            ):
                raise SignatureError(
                    f"{entry}: shards of {path!r} are not its consecutive "
                    f"{shard_size}-byte pieces (found {start}:{end})",
                    entry=entry,
                )
        digests = [d for _s, _e, d in parts]
        joined.append((path, digests[0] if len(digests) == 1 else shard_root(digests)))
        sizes[path] = parts[-1][1]
    return Resources(joined, "shards", shard_size, sizes, out)


def parse_statement(payload: bytes, entry: str) -> Resources:
    """Check an OMS v1.0 Statement and return its (name, sha256) resources, one per file."""
    from ..errors import FormatError
    from ..format.archive import check_entry_name

    try:
        st = _json.loads(payload, what=f"{entry} payload")
    except FormatError as e:
        raise SignatureError(f"signed payload of {entry} is not JSON", entry=entry) from e
    if not isinstance(st, dict) or st.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"{entry}: payload is not an in-toto Statement v1", entry=entry)
    if st.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(
            f"{entry}: predicate type {st.get('predicateType')!r} is not {PREDICATE_TYPE!r}",
            entry=entry,
        )
    pred = st.get("predicate")
    subjects = st.get("subject")
    if not isinstance(pred, dict) or not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError(f"{entry}: statement needs one subject and a predicate", entry=entry)
    method, shard_size = _statement_serialization(pred, entry)
    raw = pred.get("resources")
    if not isinstance(raw, list):
        raise SignatureError(f"{entry}: predicate has no resource list", entry=entry)
    algorithm = "sha256" if method == "files" else _shard_algorithm(shard_size)
    out: list[tuple[str, str]] = []
    for r in raw:
        if not isinstance(r, dict) or r.get("algorithm") != algorithm:
            raise SignatureError(
                f"{entry}: every resource needs algorithm {algorithm}", entry=entry
            )
        name, digest = r.get("name"), r.get("digest")
        if not isinstance(name, str) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise SignatureError(f"{entry}: malformed resource {r!r}", entry=entry)
        m = _SHARD_NAME.fullmatch(name) if method == "shards" else None
        try:
            check_entry_name(m[1] if m is not None else name)
        except FormatError as e:
            raise SignatureError(f"{entry}: resource name not canonical: {e}", entry=entry) from e
        out.append((name, digest))
    names = [n for n, _ in out]
    ordered = (
        sorted(set(names), key=_path_key)
        if method == "files"
        else sorted(
            set(names), key=lambda n: _shard_key(n) if _SHARD_NAME.fullmatch(n) else ([], 0, 0)
        )
    )
    if names != ordered:
        raise SignatureError(f"{entry}: resources must be sorted and unique", entry=entry)
    subject = subjects[0]
    digest = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digest, dict) or digest.get("sha256") != resources_digest(out):
        raise SignatureError(f"{entry}: subject digest does not match the resources", entry=entry)
    return Resources(out) if method == "files" else _join_shards(out, shard_size, entry)


def _manifest_resource(manifest_bytes: bytes, shard_size: int) -> tuple[str, str]:
    """``manifest.json``'s resource: always one piece (MAX_MANIFEST_BYTES <= MIN_SHARD_SIZE)."""
    from ..format.digest import sha256_bytes
    from ..format.manifest import MANIFEST_NAME

    name = f"{MANIFEST_NAME}:0:{len(manifest_bytes)}" if shard_size else MANIFEST_NAME
    return name, sha256_bytes(manifest_bytes)


def statement_resources(
    manifest: Manifest, manifest_bytes: bytes, shard_size: int = 0
) -> list[tuple[str, str]]:
    """The resources a statement over this bundle lists: what the writer signs and what
    :func:`check_statement` demands, so that the two cannot drift apart.

    ``shard_size`` 0: OMS's ``files`` serialization, every file of the manifest and
    ``manifest.json`` with its SHA-256. Otherwise OMS's ``shards``: each non-empty file
    (``manifest.json`` too) as its consecutive ``shard_size``-byte pieces
    ``path:start:end`` with their SHA-256, as ``model_signing`` cuts the unzipped
    bundle (it lists no piece of an empty file). A manifest that cannot be cut that
    way -- it records other shards, or no shard digests for an entry larger than a
    piece -- is a SignatureError.
    """
    manifest_piece = _manifest_resource(manifest_bytes, shard_size)
    if not shard_size:
        if manifest.shard_size:
            raise SignatureError(
                "the signature lists whole files but the manifest records "
                "sharded entries: it must use OMS's shards serialization"
            )
        return [*((f.path, f.sha256) for f in manifest.files), manifest_piece]
    if manifest.shard_size and manifest.shard_size != shard_size:
        raise SignatureError(
            f"the signature and manifest.json disagree on the shard size "
            f"({shard_size} and {manifest.shard_size})"
        )
    pieces: list[tuple[str, str]] = []
    for f in manifest.files:
        if f.size > shard_size and not f.shards:
            raise SignatureError(
                f"the signed resource list and manifest.json's files disagree: "
                f"the signature cuts {f.path!r} into {shard_size}-byte pieces, "
                "the manifest records one digest for it"
            )
        digests = f.shards or ((f.sha256,) if f.size else ())
        pieces += [(f"{f.path}:{a}:{b}", d) for (a, b), d in zip(f.spans, digests, strict=False)]
    pieces.append(manifest_piece)
    return pieces


def _few(names: list[str]) -> str:
    return repr(names) if len(names) <= 5 else f"{names[:5]!r} ... ({len(names)} in all)"


def check_statement(
    statement: Resources, manifest_bytes: bytes, manifest: Manifest | None = None, *, entry: str
) -> None:
    """Refuse a statement unless it lists exactly :func:`statement_resources` of this bundle.

    The one rule every signature that counts must pass on its own (and that ``pack``
    applies to the signatures it stores). Without ``manifest`` -- not parsed yet:
    verify before parse -- only ``manifest.json``'s resource is checked, so that the
    manifest about to be parsed is the one signed; with it, the whole list.
    """
    signed = dict(statement.pieces)
    name, digest = _manifest_resource(manifest_bytes, statement.shard_size)
    if signed.get(name) != digest:
        raise SignatureError(
            f"signature {entry} does not cover this bundle's manifest.json "
            "(a signature taken from another bundle?)",
            entry=entry,
        )
    if manifest is None:
        return
    try:
        want = dict(statement_resources(manifest, manifest_bytes, statement.shard_size))
    except SignatureError as e:
        raise SignatureError(f"signature {entry}: {e}", entry=entry) from e
    extra = sorted(signed.keys() - want.keys())
    missing = sorted(want.keys() - signed.keys())
    changed = sorted(n for n in signed.keys() & want.keys() if signed[n] != want[n])
    if extra or missing or changed:
        raise SignatureError(
            f"signature {entry}: the signed resource list and manifest.json's files disagree: "
            f"signed but not in the bundle {_few(extra)}, in the bundle but not signed "
            f"{_few(missing)}, different digests {_few(changed)}",
            entry=entry,
        )
