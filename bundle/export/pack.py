"""Pack an unpacked bundle directory -- and signatures made over it elsewhere -- into a bundle.

A bundle unzipped is a plain directory (``manifest.json``, ``model.onnx``,
``weights.safetensors``, ...), and OpenSSF Model Signing's ``model_signing sign
key DIR`` signs a directory. This module closes the loop: it re-packs such a
directory with the signatures (``model_signing``'s ``model.sig`` or this
project's ``signatures/<key id>.sig``) into a deterministic bundle that
:func:`bundle.verify` checks like any other. Packing an unzipped bundle without
new signatures gives back the same bytes.

Nothing here trusts the directory: every listed file must match the
manifest's size and SHA-256, unlisted files are refused (except OMS's default
ignored git paths), symlinks are refused, and every signature must be a
well-formed OMS v1.0 signature whose statement lists exactly the manifest's
files and this ``manifest.json``. Whether a *trusted* key made it is for
:func:`bundle.verify` to say.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import FormatError, IntegrityError, SignatureError
from ..format.archive import EntryData, ZipWriter
from ..format.digest import sha256_bytes
from ..format.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, FileEntry, Manifest, is_deflated
from ..trust import dsse, signing
from ..trust.verify import MAX_GRAPH_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, SIGNATURE_PREFIX
from .writer import atomic_write

__all__ = ["OMS_IGNORED", "pack_directory"]

OMS_IGNORED = frozenset({".git", ".gitattributes", ".github", ".gitignore"})
"""Top-level paths ``model_signing`` leaves out of a signature by default; not packed."""
_CHUNK = 1 << 20


def _regular(path: Path, what: str) -> os.stat_result:
    try:
        st = path.lstat()
    except OSError as e:
        raise FormatError(f"cannot read {what} {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{what} {path} is not a regular file (symlinks and devices are refused)")
    return st


def _read(path: Path, what: str, limit: int) -> bytes:
    st = _regular(path, what)
    if st.st_size > limit:
        raise FormatError(f"{what} {path} is {st.st_size} bytes; the limit is {limit}")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _walk(root: Path) -> Iterator[str]:
    """Every non-directory below ``root`` as a POSIX relative path; symlinks included."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                filenames.append(d)
                dirnames.remove(d)
        for name in filenames:
            yield (rel / name).as_posix()


def _key_id(env: dsse.Envelope, source: str) -> str:
    """The key id that names a signature's entry: its hint, else its leaf certificate's key."""
    if env.hint is not None:
        return env.hint
    if env.certificates:
        from ..trust.certs import CertificateRejectedError, leaf_key_type, parse_der_chain

        leaf = parse_der_chain(env.certificates, source)[0]
        try:
            leaf_key_type(leaf)
        except CertificateRejectedError as e:
            raise SignatureError(f"signature {source}: {e}", entry=source) from e
        return signing.PublicKey(leaf.public_key()).key_id  # type: ignore[arg-type]
    raise SignatureError(
        f"signature {source} names no key (no key hint, DSSE keyid or "
        "certificate), so it cannot be stored as signatures/<key id>.sig",
        entry=source,
    )


def _check_signature(data: bytes, source: str, manifest: Manifest, manifest_bytes: bytes) -> str:
    """Early, friendly refusal of a signature over other files; verify() decides for real."""
    env = dsse.parse_envelope(data, source)
    statement = dsse.parse_statement(env.payload, source)
    dsse.check_statement(statement, manifest_bytes, manifest, entry=source)
    return _key_id(env, source)


def _expect(f: FileEntry, digests: list[str]) -> None:
    if digests != (list(f.shards) or [f.sha256]):
        raise IntegrityError(
            f"{f.path}: SHA-256 differs from the manifest (or the file "
            "changed while it was packed)",
            entry=f.path,
        )


def _file_entry(root: Path, f: FileEntry) -> EntryData:
    """The entry for one listed file, hashed against the manifest as it is read."""
    path = root / f.path
    st = _regular(path, "file")
    if st.st_size != f.size:
        raise IntegrityError(
            f"{f.path}: manifest records {f.size} bytes, the directory holds {st.st_size}",
            entry=f.path,
        )
    if is_deflated(f.path, f.role):
        data = _read(path, "file", MAX_GRAPH_BYTES)
        _expect(f, [sha256_bytes(data[a:b]) for a, b in f.spans])
        # the same options bundle.save uses, so an unzipped bundle packs to the same bytes
        return EntryData(f.path, data, compress=True)
    return EntryData(f.path, chunks=_hashed_chunks(path, f), size=f.size, align=True)


def _hashed_chunks(path: Path, f: FileEntry) -> Iterator[bytes]:
    """Stream a file into the bundle, refusing it at the end if a digest differs."""
    digests: list[str] = []
    with open(path, "rb") as fh:
        for a, b in f.spans:
            h = hashlib.sha256()
            pos = a
            while pos < b and (chunk := fh.read(min(_CHUNK, b - pos))):
                h.update(chunk)
                pos += len(chunk)
                yield chunk
            if pos != b:
                raise IntegrityError(f"{f.path}: the file shrank while it was packed", entry=f.path)
            digests.append(h.hexdigest())
    _expect(f, digests)


def pack_directory(
    directory: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    signatures: Sequence[str | os.PathLike[str]] = (),
) -> Manifest:
    """Pack ``directory`` (an unzipped bundle) into a bundle at ``path``; return its manifest.

    ``signatures`` are extra signature files (Sigstore bundle JSON, e.g. written
    by ``model_signing sign key DIR --signature model.sig``), stored as
    ``signatures/<key id>.sig``; files already under ``DIR/signatures/`` are kept.
    Signature files inside ``directory`` are not packed as content. The write is
    atomic: on any error no file is left at ``path``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FormatError(f"{root} is not a directory")
    manifest_bytes = _read(root / MANIFEST_NAME, "manifest", MAX_MANIFEST_BYTES)
    manifest = Manifest.from_bytes(manifest_bytes)

    sig_entries: dict[str, bytes] = {}
    skip: set[str] = set()
    for rel in _walk(root):
        if rel.startswith(SIGNATURE_PREFIX):
            if not SIGNATURE_NAME.fullmatch(rel):
                raise FormatError(
                    f"{rel} is not a valid signature file name (signatures/<64 hex key id>.sig)",
                    entry=rel,
                )
            data = _read(root / rel, "signature", MAX_SIGNATURE_BYTES)
            kid = _check_signature(data, rel, manifest, manifest_bytes)
            if rel != f"{SIGNATURE_PREFIX}{kid}.sig":
                raise SignatureError(f"{rel} holds a signature for key {kid[:16]}", entry=rel)
            sig_entries[rel] = data
            skip.add(rel)
    for s in signatures:
        sp = Path(s)
        data = _read(sp, "signature", MAX_SIGNATURE_BYTES)
        kid = _check_signature(data, str(sp), manifest, manifest_bytes)
        name = f"{SIGNATURE_PREFIX}{kid}.sig"
        if name in sig_entries and sig_entries[name] != data:
            raise SignatureError(
                f"two different signatures by key {kid[:16]}: keep one", entry=name
            )
        sig_entries[name] = data
        with contextlib.suppress(ValueError):  # a file outside the directory: nothing to skip
            skip.add(sp.resolve().relative_to(root.resolve()).as_posix())

    listed = {f.path for f in manifest.files}
    present = set(_walk(root)) - skip - {MANIFEST_NAME}
    present = {p for p in present if p.split("/", 1)[0] not in OMS_IGNORED}
    if present - listed:
        extra = sorted(present - listed)
        hint = (
            "; a signature file must be given with signatures=[...] (--signature)"
            if any(n.endswith(".sig") for n in extra)
            else ""
        )
        raise IntegrityError(f"files not listed in the manifest: {extra}{hint}")
    if listed - present:
        raise IntegrityError(
            f"files listed in the manifest are missing: {sorted(listed - present)}"
        )

    with atomic_write(path) as out:
        w = ZipWriter(out)
        for f in manifest.files:  # sorted by path, as the manifest requires
            w.write(_file_entry(root, f))
        w.write(EntryData(MANIFEST_NAME, manifest_bytes))
        for name in sorted(sig_entries):
            w.write(EntryData(name, sig_entries[name]))
        w.close()
    return manifest
