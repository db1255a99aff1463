"""Assembling a bundle: split weights, describe, sign, pack -- atomically.

The weights are streamed into the archive from the model one tensor at a time,
and hashing threads read each finished shard back from the file while later
ones are written: export holds no serialized copy of the weights and makes no
temporary copy of the bundle beside the one being written.

Entry order is fixed (spec/FORMAT.md): content entries by path, then
``manifest.json``, then ``signatures/<key id>.sig`` by key id. A new bundle is
written to a temporary file in the target's directory, fsynced, and renamed over
the target only when complete, so a crash or an exception leaves either the old
file or the new one, never a partial bundle. Adding signatures (:func:`resign`)
rewrites only the file's tail, after the manifest, in place behind an undo
journal (:func:`roll_back` undoes an interrupted one), or like a new bundle with
``in_place=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import FormatError, IntegrityError
from ..format.archive import EntryData, ZipReader, ZipWriter, journal_path
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
from ..trust.verify import MAX_SIGNATURE_BYTES

__all__ = [
    "GRAPH_NAME",
    "WRITER_REVISION",
    "StreamEntry",
    "atomic_write",
    "journal_path",
    "min_onnxruntime",
    "pack",
    "resign",
    "roll_back",
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
    *,
    in_place: bool = True,
) -> list[str]:
    """Give ``path`` signatures by ``keys`` added to the ``existing`` ones.

    The result is the same bytes either way: the content entries and the manifest
    where they were (so the weights stay aligned), then every signature in key-id
    order (a key that already signed is re-signed in place), then the central
    directory. ``in_place`` (the default) rewrites only that tail of the file,
    from the first signature entry (or the central directory), behind an undo
    journal (:func:`journal_path`, :func:`roll_back`): KBs written whatever the
    size of the bundle. ``in_place=False`` writes a whole new file (the content
    copied in the kernel) and renames it over ``path``. ``check()`` runs just
    before the file is changed (the caller makes sure it is still the file it
    verified). Returns the signature entry names of the new file.
    """
    statement = statement_for(manifest, manifest_bytes)
    new = {e.name: e for e in _signature_entries(statement, keys)}
    names = sorted(set(existing) | new.keys())
    # Copied instead: without positional writes (Windows), or a file this user may
    # not write (a read-only bundle in a writable directory was re-signed by rename).
    if in_place and hasattr(os, "pwrite") and os.access(path, os.W_OK):
        _resign_in_place(path, reader, new, names, check)
        return names
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


# --------------------------------------------------------------------------- in place

JOURNAL_MAGIC = b"model-bundle sign journal 1\n"
_GUARD = 4096
"""Bytes just before the rewritten tail whose digest the journal records: a journal
is applied only to the file (same device and inode, same bytes there) it was made for."""


class _Tail(io.BytesIO):
    """An in-memory file that reports positions as if it began at ``base`` in the bundle."""

    def __init__(self, base: int) -> None:
        super().__init__()
        self.base = base

    def tell(self) -> int:
        return super().tell() + self.base

    def seek(self, pos: int, whence: int = 0) -> int:
        return super().seek(pos - self.base if whence == 0 else pos, whence) + self.base


def _new_tail(
    reader: ZipReader, new: dict[str, EntryData], names: Sequence[str]
) -> tuple[int, bytes]:
    """Where the signatures begin in ``reader``'s file, and the bytes that go from there."""
    ordered = sorted(reader.entries.values(), key=lambda e: e.header_offset)
    kept = [e for e in ordered if not e.name.startswith("signatures/")]
    if any(e.name.startswith("signatures/") for e in ordered[: len(kept)]):
        raise FormatError("signature entries are not the last entries of the bundle")
    start = kept[-1].data_offset + kept[-1].compressed_size if kept else 0
    tail = _Tail(start)
    w = ZipWriter.resume(tail, kept)
    for name in names:
        w.write(
            new[name]
            if name in new
            else EntryData(name, reader.read(name, max_size=MAX_SIGNATURE_BYTES))
        )
    w.close()
    return start, tail.getvalue()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every system can open a directory
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _lock(fd: int, path: str | os.PathLike[str]) -> None:
    """Hold the file's exclusive advisory lock (released when ``fd`` closes), or refuse.

    The lock is on the inode: two in-place signs (or a sign and a repair) of one
    file never interleave, even through two names of it (hard links), whose
    journals are two files. Where the system has no ``flock``, the journal
    created exclusively is the only guard, as before.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise IntegrityError(
            f"{os.fspath(path)} is being signed or repaired by another process (it is "
            "locked); not changed"
        ) from None


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _guard(fd: int, start: int) -> str:
    lo = max(0, start - _GUARD)
    return hashlib.sha256(os.pread(fd, start - lo, lo)).hexdigest()


def _write_journal(jpath: Path, header: dict[str, object], old_tail: bytes) -> None:
    """Create the journal (never over another one), fsync it and its directory."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(jpath, flags, 0o600)
    except FileExistsError:
        raise IntegrityError(
            f"{jpath} exists: another sign of this bundle is running, or one was "
            "interrupted (bundle.repair / model-bundle repair rolls it back); not signed"
        ) from None
    try:
        _write_at(fd, JOURNAL_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n", 0)
        _write_at(fd, old_tail, os.fstat(fd).st_size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(jpath)
        raise
    os.close(fd)
    _fsync_dir(jpath.parent)


_MAX_JOURNAL_BYTES = 1 << 30
"""Signatures (4 MiB each at most) and a central directory: far less than this."""


def _journal_bytes(jpath: Path) -> bytes:
    """The journal file's bytes, if it is one this user could have written and no one else.

    Opened without following a link and without blocking (a FIFO), it must be a
    regular file with one link, owned by this user, writable by no one else, and of
    a sane size: a journal is applied to the bundle, so one planted by whoever
    else may write the directory must never be (:class:`IntegrityError`).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(jpath, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise IntegrityError(f"{jpath}: not a journal this package wrote ({e.strerror})") from e
    try:
        st = os.fstat(fd)
        owner = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
        refused = (
            (not stat.S_ISREG(st.st_mode), "not a regular file"),
            (st.st_nlink != 1, "it has other links"),
            (st.st_uid != owner, "another user owns it"),
            (bool(st.st_mode & 0o022), "others may write it"),
            (st.st_size > _MAX_JOURNAL_BYTES, "it is too large"),
        )
        why = next((reason for bad, reason in refused if bad), "")
        if why:
            raise IntegrityError(
                f"{jpath} is not a journal this package wrote ({why}); not applied, "
                "left in place: remove it once you know where it came from"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_journal(jpath: Path) -> tuple[dict[str, Any], bytes] | None:
    """The journal's header and old tail; None when it is incomplete (so never applied).

    The journal is fsynced before the bundle's first byte is written: one that is
    cut short or fails its digest was interrupted before the bundle was touched. A
    complete one whose fields are not what this package writes is refused.
    """
    raw = _journal_bytes(jpath)
    if not raw.startswith(JOURNAL_MAGIC) or b"\n" not in raw[len(JOURNAL_MAGIC) :]:
        return None
    line, _, old = raw[len(JOURNAL_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line)
        digest = str(header["old_tail_sha256"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(header, dict) or hashlib.sha256(old).hexdigest() != digest:
        return None
    ints = ("dev", "ino", "start", "old_size", "new_size")
    hexes = ("old_tail_sha256", "new_tail_sha256", "guard_sha256")
    if (
        any(type(header.get(k)) is not int or header[k] < 0 for k in ints)
        or any(not isinstance(header.get(k), str) or len(header[k]) != 64 for k in hexes)
        or header["start"] < 1
        or header["start"] > min(header["old_size"], header["new_size"])
        or len(old) != header["old_size"] - header["start"]
    ):
        raise IntegrityError(f"{jpath} is not a journal this package wrote; not applied")
    return header, old


def refuse_journal(path: str | os.PathLike[str]) -> None:
    """Raise :class:`IntegrityError` if an interrupted in-place sign left its journal.

    :func:`sign` never rolls one back by itself: whoever left it (a crash, or a
    process that could write the directory) is for the user to judge, with
    :func:`bundle.repair`.
    """
    jpath = journal_path(path)
    if os.path.lexists(jpath):
        raise IntegrityError(
            f"{jpath} exists: a sign of {os.fspath(path)} was interrupted (or is running); "
            "`model-bundle repair` / bundle.repair() rolls it back; not signed"
        )


def roll_back(
    path: str | os.PathLike[str], *, keep_complete: bool = True, locked: bool = False
) -> bool:
    """Undo an interrupted in-place sign of ``path`` from its journal; True if one was undone.

    Writes the journal's old tail back where it was and truncates the file to its
    old length, fsyncs, then removes the journal: afterwards the file is byte for
    byte what it was before that sign began. Idempotent (a crash while rolling back
    is rolled back again). With ``keep_complete``, a file whose whole new tail is
    there (the sign was interrupted after its fsync, before the journal was gone)
    is kept as signed and only the journal removed. A journal cut short is
    removed unused (the bundle was not yet touched), and so is one made for a file
    no longer at ``path`` (another device or inode: it was replaced by rename
    since). One whose file was written before the tail since (the 4 KB there
    differ) is refused with :class:`IntegrityError` and left in place.
    """
    jpath = journal_path(path)
    try:
        found = _read_journal(jpath)
    except FileNotFoundError:
        return False
    if found is None:
        os.unlink(jpath)
        _fsync_dir(jpath.parent)
        return False
    header, old = found
    start, old_size = int(header["start"]), int(header["old_size"])
    try:  # the bundle itself, never what a link at its name points to
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise IntegrityError(
            f"cannot roll back {os.fspath(path)}: {e.strerror} (a link is not followed)"
        ) from e
    try:
        if not locked:  # (the failing sign that calls this holds the lock itself)
            _lock(fd, path)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"cannot roll back {os.fspath(path)}: not a regular file")
        if [st.st_dev, st.st_ino] != [header["dev"], header["ino"]]:
            # The file it was made for is no longer at this path (a save or a
            # copying sign renamed another over it): there is nothing here to undo.
            os.unlink(jpath)
            _fsync_dir(jpath.parent)
            return False
        if st.st_size < start or _guard(fd, start) != header["guard_sha256"]:
            raise IntegrityError(
                f"{jpath} does not match {os.fspath(path)}: the bytes before the "
                "signatures were changed since the interrupted sign; not applied"
            )
        new_size = int(header["new_size"])
        done = (
            keep_complete
            and st.st_size == new_size
            and hashlib.sha256(os.pread(fd, new_size - start, start)).hexdigest()
            == header["new_tail_sha256"]
        )
        if not done:
            _write_at(fd, old, start)
            os.ftruncate(fd, old_size)
            os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(jpath)
    _fsync_dir(jpath.parent)
    return not done


def _resign_in_place(
    path: str | os.PathLike[str],
    reader: ZipReader,
    new: dict[str, EntryData],
    names: Sequence[str],
    check: Callable[[], None] | None,
) -> None:
    """Rewrite the tail of ``path`` from its first signature entry, behind an undo journal.

    Order (spec/FORMAT.md 2.7, "Adding a signature"): the journal -- the old
    bytes from the first rewritten offset to the end, the old length, their
    digest -- is written and fsynced with its directory; the new tail is written
    in place, the file truncated to its new length and fsynced; the journal is
    removed (a crash that loses the removal leaves the new file, which
    :func:`roll_back` recognises and keeps). A crash leaves the old file, the new
    one, or a torn tail (which fails verification: no end record where one must
    be, or a central directory that does not match) with a complete journal that
    :func:`roll_back` applies. The
    content entries and the manifest are never written.
    """
    start, tail = _new_tail(reader, new, names)
    rfd = reader.fileno()
    before = os.fstat(rfd)
    old = b"".join(reader.iter_range(start, before.st_size))
    if old == tail:
        return  # the same signatures again (signing is deterministic): nothing to write
    jpath = journal_path(path)
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        _lock(fd, path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise IntegrityError(f"{os.fspath(path)} was replaced while it was being signed")
        if check is not None:
            check()
        header = {
            "dev": st.st_dev,
            "ino": st.st_ino,
            "start": start,
            "old_size": st.st_size,
            "old_tail_sha256": hashlib.sha256(old).hexdigest(),
            "new_size": start + len(tail),
            "new_tail_sha256": hashlib.sha256(tail).hexdigest(),
            "guard_sha256": _guard(fd, start),
        }
        _write_journal(jpath, header, old)
        try:
            _write_at(fd, tail, start)
            os.ftruncate(fd, start + len(tail))
            os.fsync(fd)
        except BaseException:
            _undo(path)
            raise
    finally:
        os.close(fd)
    # No directory fsync: a removal lost in a crash leaves a journal whose new tail
    # is all there, which roll_back keeps (one fsync fewer on every sign).
    os.unlink(jpath)


def _undo(path: str | os.PathLike[str]) -> None:
    """After a failed in-place write: roll back now (the journal stays if that fails too)."""
    with contextlib.suppress(Exception):
        roll_back(path, keep_complete=False, locked=True)
