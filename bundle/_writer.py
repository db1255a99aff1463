"""Assembling a bundle: split weights, describe, sign, pack -- atomically.

Entry order is fixed (spec/FORMAT.md): content entries by path, then
``manifest.json``, then ``signatures/<key id>.sig`` by key id. Every write goes
to a temporary file in the target's directory, is fsynced, and is renamed over
the target only when complete, so a crash or an exception leaves either the old
file or the new one, never a partial bundle.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from . import signing
from .archive import EntryData, ZipReader, ZipWriter
from .digest import sha256_bytes
from .manifest import MANIFEST_NAME, FileEntry, Manifest

__all__ = ["GRAPH_NAME", "atomic_write", "min_onnxruntime", "pack", "resign"]

GRAPH_NAME = "model.onnx"

# Oldest onnxruntime release implementing each default-domain opset / IR version.
_ORT_FOR_OPSET = {13: "1.7", 14: "1.10", 15: "1.11", 16: "1.12", 17: "1.14", 18: "1.16",
                  19: "1.17", 20: "1.19", 21: "1.20", 22: "1.20", 23: "1.22", 24: "1.23",
                  25: "1.24"}
_ORT_FOR_IR = {7: "1.7", 8: "1.10", 9: "1.15", 10: "1.17", 11: "1.20", 12: "1.22",
               13: "1.24"}


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def min_onnxruntime(ir_version: int, opset: int) -> str:
    """The oldest onnxruntime that can run a graph of this IR version and opset."""
    candidates = [_ORT_FOR_IR.get(ir_version, "1.24" if ir_version > 13 else "1.7"),
                  _ORT_FOR_OPSET.get(opset, "1.24" if opset > 25 else "1.7")]
    return max(candidates, key=_ver)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path``; on success fsync and rename it into place."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def statement_for(manifest: Manifest, manifest_bytes: bytes) -> bytes:
    """The OMS statement a signer signs: every content file plus manifest.json."""
    resources = [(f.path, f.sha256) for f in manifest.files]
    resources.append((MANIFEST_NAME, sha256_bytes(manifest_bytes)))
    return signing.build_statement(manifest.model.name, resources)


def _signature_entries(statement: bytes, keys: Sequence[signing.PrivateKey],
                       ) -> list[EntryData]:
    sigs = {k.key_id: signing.sign_statement(statement, k) for k in keys}
    return [EntryData(f"signatures/{kid}.sig", sigs[kid]) for kid in sorted(sigs)]


def pack(path: str | os.PathLike[str], contents: Sequence[EntryData],
         make_manifest: Callable[[list[FileEntry]], Manifest],
         keys: Sequence[signing.PrivateKey], roles: dict[str, str]) -> Manifest:
    """Write content entries, then the manifest built from their digests, then signatures."""
    files = [FileEntry(c.name, roles[c.name], len(c.data or b""), sha256_bytes(c.data or b""))
             for c in sorted(contents, key=lambda c: c.name)]
    manifest = make_manifest(files)
    manifest_bytes = manifest.to_bytes()
    statement = statement_for(manifest, manifest_bytes)
    with atomic_write(path) as f:
        w = ZipWriter(f)
        for c in sorted(contents, key=lambda c: c.name):
            w.write(c)
        w.write(EntryData(MANIFEST_NAME, manifest_bytes))
        for sig in _signature_entries(statement, keys):
            w.write(sig)
        w.close()
    return manifest


def resign(path: str | os.PathLike[str], reader: ZipReader, manifest: Manifest,
           manifest_bytes: bytes, keys: Sequence[signing.PrivateKey],
           existing: Sequence[str]) -> list[str]:
    """Rewrite ``path`` with signatures by ``keys`` added to the ``existing`` ones.

    Content entries and the manifest are copied byte for byte at their original
    offsets (so the weights stay aligned); a key that already signed is re-signed
    in place. Returns the signature entry names of the new file.
    """
    statement = statement_for(manifest, manifest_bytes)
    new = {e.name: e for e in _signature_entries(statement, keys)}
    names = sorted(set(existing) | new.keys())
    with atomic_write(path) as f:
        w = ZipWriter(f)
        for e in sorted(reader.entries.values(), key=lambda e: e.header_offset):
            if not e.name.startswith("signatures/"):
                w.copy_entry(reader, e)
        for name in names:
            if name in new:
                w.write(new[name])
            else:
                w.copy_entry(reader, reader.entries[name])
        w.close()
    return names
