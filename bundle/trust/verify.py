"""Verify before parse: signature, then structure, then every byte, then content.

The order is the point of this module. Until the signature over the manifest
checks out with a trusted key (or the caller explicitly allowed unsigned
bundles), nothing but the zip directory, ``manifest.json`` and the signature
entries has been read, and none of them has been interpreted beyond JSON.
Then the manifest is parsed against the schema, the archive's entries are
compared with it (exactly the listed files, plus the manifest and signatures),
and every listed entry is hashed. The bytes that were hashed are the bytes
handed on -- the graph and JSON entries, the weights (for in-memory loads) or
their header, the text assets, the header of every other safetensors entry, and
whole entries the caller asks for (the training tensors, to restore): nothing is
read twice.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import FormatError, IntegrityError, LimitError, SignatureError
from ..format.archive import ALIGNMENT, Entry, ZipReader
from ..format.digest import sha256_bytes
from ..format.manifest import (
    GRAPH_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    is_deflated,
)
from ..format.weights import WEIGHTS_NAME
from . import dsse, freshness, signing

if TYPE_CHECKING:
    from . import certs

__all__ = [
    "Signer",
    "VerifiedBundle",
    "VerifyReport",
    "check_signatures",
    "signature_entries",
    "verify_archive",
]

SIGNATURE_PREFIX = "signatures/"
SIGNATURE_NAME = re.compile(r"signatures/[0-9a-f]{64}\.sig")
MAX_SIGNATURE_BYTES = 4 << 20
"""A sharded statement lists every 64 MiB piece (~170 bytes each, base64): 4 MiB of
signature covers bundles of over a terabyte. Entries are read one at a time."""
MAX_GRAPH_BYTES = 1 << 30
"""Largest graph entry accepted: weights live in the safetensors entry, not here."""


@dataclass(frozen=True)
class Signer:
    """A trusted key that signed the bundle.

    ``identity`` is set when the key was trusted through an X.509 chain to a
    trusted root CA (subject, SAN, issuer, root), None for a directly trusted key.
    """

    key_id: str
    key_type: str
    entry: str
    identity: certs.Identity | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        d: dict[str, object] = {
            "key_id": self.key_id,
            "key_type": self.key_type,
            "entry": self.entry,
        }
        if self.identity is not None:
            d["certificate"] = self.identity.to_dict()
        return d


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
            "signers": [s.to_dict() for s in self.signers],
            "untrusted_signatures": list(self.untrusted_signatures),
            "files": [f.to_dict() for f in self.files],
            "model": self.manifest.model.to_dict(),
            "expires": self.manifest.expires,
        }


@dataclass
class VerifiedBundle:
    """A verified archive and the verified bytes of what must be parsed next."""

    reader: ZipReader
    report: VerifyReport
    graph: bytes
    weights: bytes | bytearray | mmap.mmap | None
    weights_head: bytes = field(default=b"")
    inflated: dict[str, bytes] = field(default_factory=dict)
    """Every DEFLATE entry (graph, JSON) by path, as inflated and hashed: what later
    checks parse, so nothing is read twice."""
    stored: dict[str, bytes] = field(default_factory=dict)
    """STORED entries other than the weights, by path, as hashed: text assets whole,
    and of every ``.safetensors`` entry its header (its first 8 + N bytes)."""
    whole: dict[str, mmap.mmap] = field(default_factory=dict)
    """The STORED entries the caller asked for (``in_memory``), whole, as hashed."""
    accept: Callable[[], None] = field(default=lambda: None)
    """Records the bundle in the rollback state; the caller calls it once the graph
    and weights have passed their checks too (a bundle refused later is not 'seen')."""
    manifest_bytes: bytes = b""
    """The manifest exactly as verified (what a countersignature must sign: never a
    second read of the file)."""


def signature_entries(reader: ZipReader) -> list[str]:
    """Names of the signature entries, each checked from the central directory alone.

    Any other name under signatures/ is refused; so is an entry that is not STORED
    (unaligned) or is larger than :data:`MAX_SIGNATURE_BYTES`, before any of them is
    read: a DEFLATE entry could make a few MB of file inflate to GBs of JSON to parse.
    """
    names = []
    for name in reader.entries:
        if name.startswith(SIGNATURE_PREFIX):
            if not SIGNATURE_NAME.fullmatch(name):
                raise FormatError(
                    f"entry {name!r} is not a valid signature entry name "
                    "(signatures/<64 hex key id>.sig)",
                    entry=name,
                )
            _check_encoding(reader, name, deflated=False, aligned=False)
            e = reader.entries[name]
            if e.size > MAX_SIGNATURE_BYTES or e.compressed_size != e.size:
                raise LimitError(
                    f"entry {name!r} is {e.size} bytes; the limit is {MAX_SIGNATURE_BYTES}",
                    entry=name,
                )
            names.append(name)
    return sorted(names)


Statements = list[tuple[str, dsse.Resources]]
"""Each counted signature's entry name and statement, for the checks after the manifest."""


def _signer(
    data: bytes,
    name: str,
    trust: signing.TrustStore,
    now: object,
) -> tuple[dsse.Envelope | None, signing.PublicKey | None, certs.Identity | None, str]:
    """Who made the signature in entry ``name`` -- a trusted key, a certified one -- or why
    it does not count.

    Everything before a trusted key is found to have made the signature only decides
    whether the entry counts: a malformed envelope, an entry filed under another key's
    name or a refused certificate is returned as the reason, never raised. What is
    raised comes after (a hint naming another key than the trusted one that signed).
    """
    try:
        env = dsse.parse_envelope(data, name)
        if env.hint is not None and name != f"{SIGNATURE_PREFIX}{env.hint}.sig":
            raise SignatureError(
                f"signature entry {name} holds a signature for key {env.hint[:16]}", entry=name
            )
    except SignatureError as e:
        return None, None, None, str(e)
    key = dsse.verify_envelope(env, trust, name)
    if key is not None:
        return env, key, None, ""
    if env.certificates and trust.roots:
        from .certs import CertificateRejectedError  # X.509 costs start-up time: only here

        try:
            certified = dsse.verify_certified(env, trust, name, now)
        except CertificateRejectedError as e:
            return env, None, None, str(e)
        return env, certified.key, certified.identity, ""
    return env, None, None, "not made by a trusted key"


def check_signatures(
    reader: ZipReader,
    manifest_bytes: bytes,
    trust: signing.TrustStore,
    now: object = None,
    manifest: Manifest | None = None,
) -> tuple[tuple[Signer, ...], tuple[str, ...], Statements]:
    """Who of the trusted signed; each signature, in entry order, is checked thus:

    parse the Sigstore bundle; its key hint must match its entry name; try every
    trusted key on PAE(payload); failing that, if it embeds a certificate chain
    and roots are trusted, the chain must lead to a trusted root at ``now`` and
    the leaf's key must verify. A signature failing any of that does not count, and
    the reason is kept for the error should too few count. A signature that a trusted
    key made must then pass every other check on its own, or the bundle is refused:
    its statement is parsed and must cover this very manifest
    (:func:`dsse.check_statement`; without ``manifest`` -- verify before parse -- the
    caller checks each returned statement again once the manifest is parsed). Each
    distinct key counts once toward the threshold.
    """
    names = signature_entries(reader)
    if not names:
        raise SignatureError(
            "bundle is unsigned; pass allow_unsigned=True to load it anyway "
            "(its integrity is still checked)"
        )
    signers: dict[str, Signer] = {}
    untrusted: list[str] = []
    reasons: list[str] = []
    statements: Statements = []
    for name in names:
        data = reader.read(name, max_size=MAX_SIGNATURE_BYTES)
        env, key, identity, why = _signer(data, name, trust, now)
        if env is None or key is None:
            # Reported by the key id its name carries (its hint, when it has one).
            untrusted.append(name[len(SIGNATURE_PREFIX) : -len(".sig")])
            reasons.append(f"{name}: {why}")
            continue
        statement = dsse.parse_statement(env.payload, name)
        dsse.check_statement(statement, manifest_bytes, manifest, entry=name)
        statements.append((name, statement))
        # Each unique key counts once, however many entries it signed.
        signers.setdefault(key.key_id, Signer(key.key_id, key.key_type, name, identity))
    if len(signers) < trust.threshold:
        have = ", ".join(h[:16] for h in untrusted) or "none"
        roots = (
            f"; trusted roots: {', '.join(r.subject.rfc4514_string() for r in trust.roots)}"
            if trust.roots
            else ""
        )
        shown = reasons[:8] + ([f"... ({len(reasons)} in all)"] if len(reasons) > 8 else [])
        why = f"; not counted: {'; '.join(shown)}" if shown else ""
        raise SignatureError(
            f"bundle is signed by {len(signers)} trusted key(s), {trust.threshold} required; "
            f"untrusted signer key ids: {have}; trusted: "
            f"{', '.join(k[:16] for k in trust.key_ids()) or 'none'}{roots}{why}"
        )
    return tuple(signers.values()), tuple(untrusted), statements


def verify_archive(
    reader: ZipReader,
    trust: signing.TrustStore | None,
    *,
    allow_unsigned: bool = False,
    weights_in_memory: bool = True,
    policy: freshness.Policy | None = None,
    progress: ProgressCallback | None = None,
    in_memory: Collection[str] = (),
) -> VerifiedBundle:
    """Run every check up to, not including, parsing the graph and weights.

    ``policy`` adds the verification time, a minimum version and a rollback
    record (:mod:`bundle.freshness`); expiry is always enforced. ``in_memory``
    names STORED entries to keep whole, as hashed (:attr:`VerifiedBundle.whole`).
    """
    policy = policy or freshness.Policy()
    if MANIFEST_NAME not in reader.entries:
        raise FormatError("bundle has no manifest.json", entry=MANIFEST_NAME)
    manifest_bytes = reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)

    signers: tuple[Signer, ...] = ()
    untrusted: tuple[str, ...] = ()
    statements: Statements = []
    if trust is not None:
        try:
            signers, untrusted, statements = check_signatures(
                reader, manifest_bytes, trust, policy.time()
            )
        except SignatureError:
            if not allow_unsigned:
                raise
    elif not allow_unsigned:
        raise SignatureError(
            "no trusted keys given: pass trusted_keys (a .pub file, a key, "
            "or a trust-store directory), or allow_unsigned=True"
        )
    else:
        signature_entries(reader)

    manifest = Manifest.from_bytes(manifest_bytes)
    signer_ids = [s.key_id for s in signers]
    policy.check(manifest.model.name, manifest.model.version, manifest.expires, signer_ids)

    listed = {f.path: f for f in manifest.files}
    for name, statement in statements:  # every one that counted, each on its own
        dsse.check_statement(statement, manifest_bytes, manifest, entry=name)
    present = {n for n in reader.entries if not n.startswith(SIGNATURE_PREFIX)}
    present.discard(MANIFEST_NAME)
    extra, missing = present - listed.keys(), listed.keys() - present
    if extra:
        raise IntegrityError(
            f"entries not listed in the manifest: {sorted(extra)}", entry=sorted(extra)[0]
        )
    if missing:
        raise IntegrityError(
            f"entries listed in the manifest are missing: {sorted(missing)}",
            entry=sorted(missing)[0],
        )

    _check_container_layout(reader, manifest)
    inflated, weights, weights_head, stored, whole = _hash_files(
        reader, manifest, weights_in_memory, progress, in_memory
    )
    report = VerifyReport(
        reader.path, manifest, signers, untrusted, manifest.files, verified=bool(signers)
    )
    return VerifiedBundle(
        reader,
        report,
        inflated[manifest.file("graph").path],
        weights,
        weights_head,
        inflated,
        stored,
        whole,
        lambda: policy.record(manifest.model.name, manifest.model.version, signer_ids),
        manifest_bytes,
    )


_NAME_BY_ROLE = {"graph": GRAPH_NAME, "weights": WEIGHTS_NAME}


def _check_container_layout(reader: ZipReader, manifest: Manifest) -> None:
    """The zip bytes no hash covers are the writer's, so a bundle has one encoding.

    Entry order (FORMAT.md 2.7), each entry's method and alignment record (2.5,
    2.6) and the names of the graph and weights follow from the manifest; any other
    choice would let a third party re-encode a signed bundle while it still
    verifies. (A deflated entry's compressed bytes remain open: DEFLATE has many
    encodings of the same content, and only the content is hashed.)
    """
    sigs = sorted(n for n in reader.entries if n.startswith(SIGNATURE_PREFIX))
    order = [*sorted(f.path for f in manifest.files), MANIFEST_NAME, *sigs]
    if list(reader.entries) != order:
        raise FormatError(
            "entries are not in the canonical order (content entries by "
            "name, manifest.json, signatures by key id)"
        )
    for f in manifest.files:
        want = _NAME_BY_ROLE.get(f.role)
        if want is not None and f.path != want:
            raise FormatError(
                f"the {f.role} entry must be named {want!r}, not {f.path!r}", entry=f.path
            )
        deflated = is_deflated(f.path, f.role)
        _check_encoding(reader, f.path, deflated=deflated, aligned=not deflated)
    for name in (MANIFEST_NAME, *sigs):
        _check_encoding(reader, name, deflated=False, aligned=False)


def _check_encoding(reader: ZipReader, name: str, *, deflated: bool, aligned: bool) -> None:
    e = reader.entries[name]
    if e.stored == deflated:
        how = "DEFLATE-compressed" if deflated else "STORED"
        raise FormatError(f"entry {name!r} must be {how} (FORMAT.md 2.5)", entry=name)
    if e.aligned != aligned:
        raise FormatError(
            f"entry {name!r} is not aligned to {ALIGNMENT} bytes (FORMAT.md 2.6)"
            if aligned
            else f"entry {name!r} carries an alignment record; only "
            "STORED content entries do (FORMAT.md 2.6)",
            entry=name,
        )


ProgressCallback = Callable[[int, int], None]
"""``progress(advance, total)``: bytes just hashed, and the bytes the whole check hashes."""


def _text_asset(f: FileEntry) -> bool:
    """A STORED entry :mod:`bundle.assets` checks whole (it refuses larger ones unread)."""
    from ..format.assets import MAX_TEXT_ASSET_BYTES, TEXT_EXTENSIONS

    return (
        f.role == "asset"
        and f.size <= MAX_TEXT_ASSET_BYTES
        and f.path.lower().endswith(TEXT_EXTENSIONS)
    )


def _hash_files(
    reader: ZipReader,
    manifest: Manifest,
    weights_in_memory: bool,
    progress: ProgressCallback | None,
    in_memory: Collection[str] = (),
) -> tuple[dict[str, bytes], mmap.mmap | None, bytes, dict[str, bytes], dict[str, mmap.mmap]]:
    """Hash every listed entry, shard by shard, comparing each with the manifest.

    Returns the bytes of every DEFLATE entry (the graph among them) by path, the
    weights read into memory (when asked), the weights' safetensors header, and
    what is kept of the other STORED entries (:attr:`VerifiedBundle.stored` and
    ``whole``), all taken from the very bytes that were hashed.
    STORED entries are read by hashing threads with ``pread`` -- through small
    buffers, or straight into the in-memory weights buffer -- all shards of all
    entries in one pool; DEFLATE entries are inflated (bounded) and hashed in memory.
    The zip CRC-32 of every entry is checked too: no hash covers the CRC field.
    """
    from ..format.digest import ShortReadError, crc32_combine, hash_ranges
    from ..format.weights import header_size

    total = sum(f.size for f in manifest.files)

    def advance(n: int) -> None:
        if progress is not None:
            progress(n, total)

    inflated: dict[str, bytes] = {}
    weights: mmap.mmap | None = None
    kept: dict[str, bytes] = {}
    whole: dict[str, mmap.mmap] = {}
    text: dict[str, bytearray] = {}
    spans: list[tuple[int, int]] = []
    into: list[memoryview | None] = []
    source: list[memoryview | None] = []
    keep: list[int] = []
    owners: list[FileEntry] = []
    head_want: dict[str, int] = {}
    for f in manifest.files:
        e = reader.entries[f.path]
        if e.size != f.size:
            raise IntegrityError(
                f"{f.path}: manifest records {f.size} bytes, archive holds {e.size}", entry=f.path
            )
        if f.role == "weights":
            _check_weights_entry(e, f)
        if f.role == "graph" or not e.stored:
            data = reader.read(f.path, max_size=MAX_GRAPH_BYTES)
            _compare(f, [sha256_bytes(memoryview(data)[a:b]) for a, b in f.spans])
            inflated[f.path] = data
            advance(len(data))
            continue
        buf: memoryview | None = None
        src: memoryview | None = None
        if f.role == "weights" and weights_in_memory:
            # A private copy, sealed before it is hashed (Linux; cheaper than filling
            # fresh anonymous memory), or else anonymous memory the hashing threads
            # read into. Either is page-aligned as a mapping of the file would be, so
            # the tensors onnxruntime runs on keep the alignment they have on disk.
            weights, src, buf = _private_copy(reader.fileno(), e)
        elif f.role != "weights" and f.path in in_memory:
            _check_weights_entry(e, f)  # the same size limit as for weights read into memory
            # sealed as the weights are, for the same reasons
            whole[f.path], src, buf = _private_copy(reader.fileno(), e)
        elif _text_asset(f):
            text[f.path] = bytearray(e.size)
            buf = memoryview(text[f.path])
        elif f.role == "weights" or f.path.endswith(".safetensors"):
            # A size hint only: what is parsed is checked against the hashed bytes.
            hint = b"".join(reader.iter_range(e.data_offset, e.data_offset + min(8, e.size)))
            head_want[f.path] = min(header_size(hint), e.size) if len(hint) == 8 else e.size
        for a, b in f.spans:
            spans.append((e.data_offset + a, e.data_offset + b))
            into.append(buf[a:b] if buf is not None else None)
            source.append(src[a:b] if src is not None else None)
            keep.append(max(0, min(head_want.get(f.path, 0) - a, b - a)))
            owners.append(f)
    try:
        results = hash_ranges(
            reader.fileno(), spans, into=into, keep=keep, progress=advance, source=source
        )
    except ShortReadError as err:
        raise IntegrityError(
            f"the bundle file changed while it was being verified ({err})"
        ) from err
    head = b""
    pos = 0
    for f in dict.fromkeys(owners):
        got = results[pos : pos + len(f.spans)]
        pos += len(f.spans)
        _compare(f, [r.hexdigest for r in got])
        crc = got[0].crc32
        for r in got[1:]:
            crc = crc32_combine(crc, r.crc32, r.end - r.start)
        if crc != reader.entries[f.path].crc32:
            raise IntegrityError(f"entry {f.path!r} fails its zip CRC-32 check", entry=f.path)
        if f.path in head_want:
            part = b"".join(r.head for r in got)
            if len(part) >= 8 and len(part) != min(header_size(part[:8]), f.size):
                raise IntegrityError(
                    f"{f.path}: its header changed while it was being verified", entry=f.path
                )
            if f.role == "weights":
                head = part
            else:
                kept[f.path] = part
        elif f.role == "weights" and weights is not None:
            head = bytes(weights[: header_size(bytes(weights[:8]))])
        elif f.path in whole:
            got_all = whole[f.path]
            kept[f.path] = bytes(got_all[: min(header_size(bytes(got_all[:8])), f.size)])
        elif f.path in text:
            kept[f.path] = bytes(text.pop(f.path))
    return inflated, weights, head, kept, whole


def _private_copy(fd: int, e: Entry) -> tuple[mmap.mmap, memoryview | None, memoryview | None]:
    """Memory for an entry kept whole: ``(memory, hash from, read into)``.

    The sealed private copy, already filled (hash from it), or where the platform
    has none, anonymous memory the hashing threads read into.
    """
    sealed = _sealed_entry(fd, e.data_offset, e.size)
    if sealed is not None:
        return sealed, memoryview(sealed), None
    memory = mmap.mmap(-1, max(e.size, 1))
    return memory, None, memoryview(memory)[: e.size]


def _sealed_entry(fd: int, offset: int, size: int) -> mmap.mmap | None:
    """An entry's sealed private copy (weights, or training state kept whole), or None
    where the platform has none.

    A file that ends inside the entry is the named error it is on the other path.
    """
    from ..format.digest import ShortReadError, sealed_copy

    if size <= 0:
        return None
    try:
        return sealed_copy(fd, offset, size)
    except ShortReadError as err:
        raise IntegrityError(
            f"the bundle file changed while it was being verified ({err})"
        ) from err
    except OSError:
        return None  # no memfd/sendfile/seals here: read into anonymous memory


def _compare(f: FileEntry, digests: list[str]) -> None:
    """Each shard's digest (or the entry's, unsharded) against the manifest, by name."""
    if not f.shards:
        if digests[0] != f.sha256:
            raise IntegrityError(
                f"{f.path}: SHA-256 is {digests[0][:16]}..., the manifest "
                f"records {f.sha256[:16]}...",
                entry=f.path,
            )
        return
    for i, (got, want, (a, b)) in enumerate(zip(digests, f.shards, f.spans, strict=True)):
        if got != want:
            raise IntegrityError(
                f"{f.path}: shard {i} of {len(f.shards)} (bytes {a}..{b}) has "
                f"SHA-256 {got[:16]}..., the manifest records {want[:16]}...",
                entry=f.path,
            )


def _check_weights_entry(e: object, f: FileEntry) -> None:
    """The size limit; STORED and aligned are checked with the layout (by role)."""
    from ..format.archive import Entry

    assert isinstance(e, Entry)
    if e.size > (1 << 40):
        raise LimitError(f"{f.path} is too large", entry=f.path)
