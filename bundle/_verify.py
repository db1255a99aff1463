"""Verify before parse: signature, then structure, then every byte, then content.

The order is the point of this module. Until the signature over the manifest
checks out with a trusted key (or the caller explicitly allowed unsigned
bundles), nothing but the zip directory, ``manifest.json`` and the signature
entries has been read, and none of them has been interpreted beyond JSON.
Then the manifest is parsed against the schema, the archive's entries are
compared with it (exactly the listed files, plus the manifest and signatures),
and every listed entry is hashed. The bytes that were hashed are the bytes
handed on (graph and, for in-memory loads, weights): nothing is read twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import signing
from .archive import ZipReader
from .digest import sha256_bytes, sha256_chunks
from .errors import FormatError, IntegrityError, LimitError, SignatureError
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, FileEntry, Manifest

__all__ = ["Signer", "VerifiedBundle", "VerifyReport", "verify_archive"]

SIGNATURE_PREFIX = "signatures/"
SIGNATURE_NAME = re.compile(r"signatures/[0-9a-f]{64}\.sig")
MAX_SIGNATURE_BYTES = 256 * 1024
MAX_GRAPH_BYTES = 1 << 30
"""Largest graph entry accepted: weights live in the safetensors entry, not here."""


@dataclass(frozen=True)
class Signer:
    """A trusted key that signed the bundle."""

    key_id: str
    key_type: str
    entry: str


@dataclass(frozen=True)
class VerifyReport:
    """What verification established: who signed, which files, the manifest."""

    path: str
    manifest: Manifest
    signers: tuple[Signer, ...]
    untrusted_signatures: tuple[str, ...]
    files: tuple[FileEntry, ...]
    verified: bool
    """True when signed by enough trusted keys; False when loaded with allow_unsigned."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (for ``--json``)."""
        return {
            "path": self.path,
            "verified": self.verified,
            "signers": [{"key_id": s.key_id, "key_type": s.key_type, "entry": s.entry}
                        for s in self.signers],
            "untrusted_signatures": list(self.untrusted_signatures),
            "files": [f.to_dict() for f in self.files],
            "model": self.manifest.model.to_dict(),
        }


@dataclass
class VerifiedBundle:
    """A verified archive and the verified bytes of what must be parsed next."""

    reader: ZipReader
    report: VerifyReport
    graph: bytes
    weights: bytes | None
    weights_head: bytes = field(default=b"")


def signature_entries(reader: ZipReader) -> list[str]:
    """Names of the signature entries; any other name under signatures/ is refused."""
    names = []
    for name in reader.entries:
        if name.startswith(SIGNATURE_PREFIX):
            if not SIGNATURE_NAME.fullmatch(name):
                raise FormatError(f"entry {name!r} is not a valid signature entry name "
                                  "(signatures/<64 hex key id>.sig)", entry=name)
            names.append(name)
    return sorted(names)


def _check_signatures(reader: ZipReader, manifest_bytes: bytes,
                      trust: signing.TrustStore) -> tuple[tuple[Signer, ...], tuple[str, ...],
                                                          list[tuple[str, str]]]:
    names = signature_entries(reader)
    if not names:
        raise SignatureError("bundle is unsigned; pass allow_unsigned=True to load it anyway "
                             "(its integrity is still checked)")
    signers: dict[str, Signer] = {}
    untrusted: list[str] = []
    resources: list[tuple[str, str]] | None = None
    manifest_digest = sha256_bytes(manifest_bytes)
    for name in names:
        data = reader.read(name, max_size=MAX_SIGNATURE_BYTES)
        env = signing.parse_envelope(data, name)
        if env.hint is not None and name != f"{SIGNATURE_PREFIX}{env.hint}.sig":
            raise SignatureError(f"signature entry {name} holds a signature for key "
                                 f"{env.hint[:16]}", entry=name)
        key = signing.verify_envelope(env, trust, name)
        if key is None:
            untrusted.append(env.hint or name)
            continue
        signed = signing.parse_statement(env.payload, name)
        signed_map = dict(signed)
        if signed_map.get(MANIFEST_NAME) != manifest_digest:
            raise SignatureError(
                f"signature {name} by trusted key {key.key_id[:16]} does not cover this "
                "bundle's manifest.json (a signature taken from another bundle?)", entry=name)
        if resources is not None and resources != signed:
            raise SignatureError(f"signature {name} lists different resources than another "
                                 "trusted signature", entry=name)
        resources = signed
        # Each unique key counts once, however many entries it signed.
        signers.setdefault(key.key_id, Signer(key.key_id, key.key_type, name))
    if len(signers) < trust.threshold:
        have = ", ".join(h[:16] for h in untrusted) or "none"
        raise SignatureError(
            f"bundle is signed by {len(signers)} trusted key(s), {trust.threshold} required; "
            f"untrusted signer key ids: {have}; trusted: "
            f"{', '.join(k[:16] for k in trust.key_ids())}")
    assert resources is not None
    return tuple(signers.values()), tuple(untrusted), resources


def verify_archive(reader: ZipReader, trust: signing.TrustStore | None, *,
                   allow_unsigned: bool = False, weights_in_memory: bool = True,
                   ) -> VerifiedBundle:
    """Run every check up to, not including, parsing the graph and weights."""
    if MANIFEST_NAME not in reader.entries:
        raise FormatError("bundle has no manifest.json", entry=MANIFEST_NAME)
    manifest_bytes = reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)

    signers: tuple[Signer, ...] = ()
    untrusted: tuple[str, ...] = ()
    resources: list[tuple[str, str]] | None = None
    if trust is not None:
        try:
            signers, untrusted, resources = _check_signatures(reader, manifest_bytes, trust)
        except SignatureError:
            if not allow_unsigned:
                raise
    elif not allow_unsigned:
        raise SignatureError("no trusted keys given: pass trusted_keys (a .pub file, a key, "
                             "or a trust-store directory), or allow_unsigned=True")
    else:
        signature_entries(reader)

    manifest = Manifest.from_bytes(manifest_bytes)

    listed = {f.path: f for f in manifest.files}
    if resources is not None:
        signed = dict(resources)
        signed.pop(MANIFEST_NAME)
        if signed != {p: f.sha256 for p, f in listed.items()}:
            raise SignatureError("the signed resource list and manifest.json's files disagree")
    present = {n for n in reader.entries if not n.startswith(SIGNATURE_PREFIX)}
    present.discard(MANIFEST_NAME)
    extra, missing = present - listed.keys(), listed.keys() - present
    if extra:
        raise IntegrityError(f"entries not listed in the manifest: {sorted(extra)}",
                             entry=sorted(extra)[0])
    if missing:
        raise IntegrityError(f"entries listed in the manifest are missing: {sorted(missing)}",
                             entry=sorted(missing)[0])

    graph = b""
    weights: bytes | None = None
    weights_head = b""
    for f in manifest.files:
        e = reader.entries[f.path]
        if e.size != f.size:
            raise IntegrityError(f"{f.path}: manifest records {f.size} bytes, archive holds "
                                 f"{e.size}", entry=f.path)
        if f.role == "graph":
            data = reader.read(f.path, max_size=MAX_GRAPH_BYTES)
            digest = sha256_bytes(data)
            graph = data
        elif f.role == "weights" and weights_in_memory:
            _check_weights_entry(e, f)
            data = reader.read(f.path, max_size=1 << 40)
            digest = sha256_bytes(data)
            weights = data
        elif f.role == "weights":
            _check_weights_entry(e, f)
            digest, weights_head = _hash_keeping_head(reader, f.path)
        else:
            digest = sha256_chunks(reader.iter_entry(f.path, max_size=MAX_GRAPH_BYTES))
        if digest != f.sha256:
            raise IntegrityError(f"{f.path}: SHA-256 is {digest[:16]}..., the manifest records "
                                 f"{f.sha256[:16]}...", entry=f.path)
    report = VerifyReport(reader.path, manifest, signers, untrusted, manifest.files,
                          verified=bool(signers))
    return VerifiedBundle(reader, report, graph, weights, weights_head)


def _hash_keeping_head(reader: ZipReader, name: str) -> tuple[str, bytes]:
    """Hash a stored weights entry by streaming, keeping its safetensors header bytes.

    The header is taken from the very chunks that were hashed, not read again.
    """
    import hashlib

    from .weights import header_size

    h = hashlib.sha256()
    head = bytearray()
    want = 8
    for chunk in reader.iter_entry(name, max_size=1 << 40):
        h.update(chunk)
        if len(head) < want:
            head += chunk
            if want == 8 and len(head) >= 8:
                want = header_size(bytes(head[:8]))
    return h.hexdigest(), bytes(head[:want])


def _check_weights_entry(e: object, f: FileEntry) -> None:
    from .archive import ALIGNMENT, Entry

    assert isinstance(e, Entry)
    if not e.stored:
        raise FormatError(f"{f.path} must be STORED (uncompressed)", entry=f.path)
    if e.data_offset % ALIGNMENT:
        raise FormatError(f"{f.path} data is not aligned to {ALIGNMENT} bytes", entry=f.path)
    if e.size > (1 << 40):
        raise LimitError(f"{f.path} is too large", entry=f.path)
