"""Assembling a bundle: split weights, describe, sign, pack -- atomically.

The weights are streamed into the archive from the model one tensor at a time,
and hashing threads read each finished shard back from the file while later
ones are written: export holds no serialized copy of the weights and makes no
temporary copy of the bundle beside the one being written.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..format.archive import EntryData, ZipReader, ZipWriter
from ..format.digest import (
    Digest,
    RangeDigest,
    crc32_combine,
    digest_bytes,
    hash_ranges,
    shard_root,
    shard_spans,
)
from ..format.manifest import GRAPH_NAME, MANIFEST_NAME, FileEntry, Manifest
from ..trust import dsse, signing

__all__ = [
    "GRAPH_NAME",
    "WRITER_REVISION",
    "StreamEntry",
    "atomic_write",
    "min_onnxruntime",
    "pack",
    "resign",
    "statement_for",
]


WRITER_REVISION = 2
"""What this writer puts in a bundle, as a number that changes when its bytes do for the
same model: 1 was model-bundle 0.1.0; 2 stamps the lowest IR version and writes
``requires`` and smoke vectors (FORMAT.md 14). spec/vectors/index.json records the
revision of the committed vectors' writer; they are byte-compared only against the same."""


def min_onnxruntime(ir_version: int, opset: int) -> str:
    """The oldest onnxruntime that loads a graph of this IR version and default-domain
    opset (the measured tables of :mod:`bundle.format.compat`); the newest release
    measured when either is newer than every release measured."""
    from ..format import compat

    return compat.min_onnxruntime(ir_version, {"ai.onnx": opset}) or compat.PROBED_TO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path``; on success fsync and rename it into place."""
    with _atomic(path) as (f, _tmp):
        yield f


@contextlib.contextmanager
def _atomic(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, str]]:
    """:func:`atomic_write`, also giving the temporary file's path."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f, tmp
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


@dataclass(frozen=True)
class StreamEntry:
    """A STORED, aligned entry whose bytes are produced while it is written.

    ``chunks()`` yields exactly ``size`` bytes in bounded pieces (the weights come
    this way, straight from the model: no serialized copy of them is ever made).
    """

    name: str
    size: int
    chunks: Callable[[], Iterable[bytes | memoryview]]


def statement_for(manifest: Manifest, manifest_bytes: bytes) -> bytes:
    """The OMS statement a signer signs: every content file plus manifest.json.

    OMS's ``files`` serialization when no entry is sharded; otherwise its
    ``shards`` serialization, one resource per ``path:start:end`` piece of every
    file, exactly as ``model_signing`` cuts the unzipped bundle (spec/SHARDS.md).
    The resources are :func:`dsse.statement_resources`, the list verification
    demands.
    """
    shard_size = manifest.shard_size
    resources = dsse.statement_resources(manifest, manifest_bytes, shard_size)
    return dsse.build_statement(manifest.model.name, resources, shard_size or None)


def _signature_entries(
    statement: bytes,
    keys: Sequence[signing.PrivateKey],
) -> list[EntryData]:
    sigs = {k.key_id: dsse.sign_statement(statement, k) for k in keys}
    return [EntryData(f"signatures/{kid}.sig", sigs[kid]) for kid in sorted(sigs)]


def _file_entry(name: str, role: str, size: int, digest: Digest, shard_size: int) -> FileEntry:
    return FileEntry(
        name, role, size, digest.sha256, digest.shards, shard_size if digest.shards else 0
    )


def _write_stream(
    w: ZipWriter, f: BinaryIO, entry: StreamEntry, shard_size: int, pool: ThreadPoolExecutor
) -> tuple[Digest, int]:
    """Write one streamed entry while hashing threads read back each finished shard.

    The shard digests and CRC-32 are of the bytes as they lie in the file, read
    with ``pread`` through small buffers; returns the digest and the data offset.
    """
    data_offset = w.begin_stored(entry.name, entry.size, align=True)
    spans = shard_spans(entry.size, shard_size) if entry.size > shard_size else [(0, entry.size)]
    futures: list[Future[list[RangeDigest]]] = []
    fd = f.fileno()

    def submit_ready(done: int) -> None:
        if len(futures) < len(spans) and spans[len(futures)][1] <= done:
            f.flush()
            while len(futures) < len(spans) and spans[len(futures)][1] <= done:
                a, b = spans[len(futures)]
                futures.append(
                    pool.submit(hash_ranges, fd, [(data_offset + a, data_offset + b)], workers=1)
                )

    try:
        written = 0
        for chunk in entry.chunks():
            written = w.write_data(chunk)
            submit_ready(written)
        submit_ready(written)
        if written != entry.size:
            raise ValueError(f"{entry.name}: streamed {written} bytes, declared {entry.size}")
        results = [r for fut in futures for r in fut.result()]
    finally:
        for fut in futures:
            fut.cancel()
    crc = results[0].crc32
    for r in results[1:]:
        crc = crc32_combine(crc, r.crc32, r.end - r.start)
    w.end_stored(crc)
    if len(results) == 1:
        return Digest(results[0].hexdigest), data_offset
    shards = tuple(r.hexdigest for r in results)
    return Digest(shard_root(shards), shards), data_offset


def pack(
    path: str | os.PathLike[str],
    contents: Sequence[EntryData],
    make_manifest: Callable[[list[FileEntry]], Manifest],
    keys: Sequence[signing.PrivateKey],
    roles: dict[str, str],
    *,
    streams: Sequence[StreamEntry] = (),
    shard_size: int | None = None,
    before_manifest: Callable[[str, dict[str, int]], None] | None = None,
) -> Manifest:
    """Write content entries, then the manifest built from their digests, then signatures.

    Entries go in path order; ``streams`` are written as their chunks arrive,
    hashed in parallel from the file as each shard is finished. Entries larger
    than ``shard_size`` (default :data:`bundle.digest.SHARD_SIZE`) are recorded in
    shards. ``before_manifest(temp_path, data_offsets)`` runs once the content is
    in the (flushed) temporary file -- the export's parity check runs the very
    graph and weights written there.
    """
    from ..format import digest

    size = shard_size or digest.SHARD_SIZE
    items: list[EntryData | StreamEntry] = sorted([*contents, *streams], key=lambda c: c.name)
    files: list[FileEntry] = []
    offsets: dict[str, int] = {}
    with (
        _atomic(path) as (f, tmp),
        ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="bundle-export"
        ) as pool,
    ):
        w = ZipWriter(f)
        for c in items:
            if isinstance(c, StreamEntry):
                dig, offsets[c.name] = _write_stream(w, f, c, size, pool)
                files.append(_file_entry(c.name, roles[c.name], c.size, dig, size))
            else:
                data = c.data or b""
                offsets[c.name] = w.write(c)
                files.append(
                    _file_entry(c.name, roles[c.name], len(data), digest_bytes(data, size), size)
                )
        if before_manifest is not None:
            f.flush()
            before_manifest(tmp, offsets)
        manifest = make_manifest(files)
        manifest_bytes = manifest.to_bytes()
        statement = statement_for(manifest, manifest_bytes)
        w.write(EntryData(MANIFEST_NAME, manifest_bytes))
        for sig in _signature_entries(statement, keys):
            w.write(sig)
        w.close()
    return manifest


def resign(
    path: str | os.PathLike[str],
    reader: ZipReader,
    manifest: Manifest,
    manifest_bytes: bytes,
    keys: Sequence[signing.PrivateKey],
    existing: Sequence[str],
    check: Callable[[], None] | None = None,
) -> list[str]:
    """Rewrite ``path`` with signatures by ``keys`` added to the ``existing`` ones.

    Content entries and the manifest are copied byte for byte at their original
    offsets (so the weights stay aligned), in one in-kernel copy where the system
    has one; a key that already signed is re-signed in place. ``check()`` runs
    once everything is copied, before the new file replaces the old (the caller
    makes sure the source did not change since it was verified). Returns the
    signature entry names of the new file.
    """
    statement = statement_for(manifest, manifest_bytes)
    new = {e.name: e for e in _signature_entries(statement, keys)}
    names = sorted(set(existing) | new.keys())
    with atomic_write(path) as f:
        w = ZipWriter(f)
        w.copy_entries(
            reader,
            [
                e
                for e in sorted(reader.entries.values(), key=lambda e: e.header_offset)
                if not e.name.startswith("signatures/")
            ],
        )
        for name in names:
            if name in new:
                w.write(new[name])
            else:
                w.copy_entry(reader, reader.entries[name])
        w.close()
        if check is not None:
            check()
    return names
