"""SHA-256 of bundle entries: whole, or in shards hashed in parallel from the file.

A large entry is split into consecutive pieces of ``shard_size`` bytes (the
last one shorter), each hashed on its own, so that several cores can verify
one entry at once (``hashlib`` releases the GIL while it hashes). The entry's
recorded digest is then the *shard root*: SHA-256 over the concatenated raw
32-byte shard digests, in order -- not the plain SHA-256 of the entry. Entries
of at most ``shard_size`` bytes keep their plain SHA-256 (spec/SHARDS.md).

Files are read with ``os.preadv`` into a small per-thread buffer rather than
through a memory map, so hashing a large entry does not add its pages to the
process's resident set, and each range also gets its zip CRC-32 so the CRC
check costs no second pass. The weights a loader keeps in memory are first copied
into a private, sealed memory file (:func:`sealed_copy`, Linux) and hashed from it.
The CRC-32 is zlib-ng's (SIMD, ~30 GB/s a core, so it
adds ~6% to SHA-256's time where the standard library's zlib (~7 GB/s) added ~30%);
without the ``zlib-ng`` package the standard library's gives the same values.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

try:  # a core dependency; the standard library's zlib computes the same CRC, slower
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - a platform without a zlib-ng wheel
    from zlib import crc32

__all__ = [
    "BUFFER_SIZE",
    "MAX_SHARD_SIZE",
    "MIN_SHARD_SIZE",
    "SHARD_SIZE",
    "Digest",
    "RangeDigest",
    "crc32",
    "crc32_combine",
    "digest_bytes",
    "hash_ranges",
    "sealed_copy",
    "sha256_bytes",
    "sha256_chunks",
    "shard_root",
    "shard_spans",
]

SHARD_SIZE = 64 << 20
"""Shard size new bundles record (benchmarks/hash_throughput.py shows why)."""
MIN_SHARD_SIZE = 4 << 20
"""Smallest shard size accepted: at least the largest manifest.json, which stays one shard."""
MAX_SHARD_SIZE = 1 << 30
BUFFER_SIZE = 1 << 20
"""Bytes each hashing thread reads at a time."""

Progress = Callable[[int], None]
"""Called with a number of bytes just hashed (from any thread)."""


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenation of ``chunks``."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def shard_spans(size: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) of each shard of an entry of ``size`` bytes (none for an empty one)."""
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def shard_root(digests: Iterable[str | bytes]) -> str:
    """SHA-256 over the raw 32-byte shard digests in order (hex or raw given)."""
    h = hashlib.sha256()
    for d in digests:
        h.update(bytes.fromhex(d) if isinstance(d, str) else d)
    return h.hexdigest()


@dataclass(frozen=True)
class Digest:
    """An entry's recorded digest: plain SHA-256, or a shard root with its shards."""

    sha256: str
    shards: tuple[str, ...] = ()


def digest_bytes(data: bytes | memoryview, shard_size: int) -> Digest:
    """The recorded digest of in-memory entry bytes for ``shard_size``."""
    view = memoryview(data)
    if len(view) <= shard_size:
        return Digest(sha256_bytes(view))
    shards = tuple(sha256_bytes(view[a:b]) for a, b in shard_spans(len(view), shard_size))
    return Digest(shard_root(shards), shards)


# --------------------------------------------------------------------------- CRC-32


def _gf2_times(mat: Sequence[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_compose(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(_gf2_times(a, b[n]) for n in range(32))


@functools.lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC-32 register over ``nbytes`` zero bytes."""
    op: tuple[int, ...] = (0xEDB88320, *(1 << n for n in range(31)))  # one zero bit
    for _ in range(3):
        op = _gf2_compose(op, op)  # ... one zero byte
    result: tuple[int, ...] = tuple(1 << n for n in range(32))  # identity
    while nbytes:
        if nbytes & 1:
            result = _gf2_compose(op, result)
        nbytes >>= 1
        if nbytes:
            op = _gf2_compose(op, op)
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc32(A), crc32(B) and len(B) (zlib's crc32_combine).

    Python's zlib does not expose it; hashing threads use it to join the CRCs of
    the ranges they read into the entry's CRC without a second pass. The operator
    for a length is cached, so joining equal-sized shards costs one 32-step product.
    """
    if len2 <= 0:
        return crc1
    return _gf2_times(_zeros_operator(len2), crc1) ^ crc2


# --------------------------------------------------------------------------- file ranges


@dataclass(frozen=True)
class RangeDigest:
    """SHA-256 (raw) and CRC-32 of one byte range of a file."""

    start: int
    end: int
    sha256: bytes
    crc32: int
    head: bytes = b""
    """The range's first bytes, when asked to keep them (taken from the hashed buffer)."""

    @property
    def hexdigest(self) -> str:
        """The SHA-256 in hex."""
        return self.sha256.hex()


class ShortReadError(OSError):
    """The file ended before a range did (truncated while being read)."""


def _reader(fd: int) -> Callable[[memoryview, int], int]:
    """A positional read into a buffer that does not move a shared file offset."""
    if hasattr(os, "preadv"):
        return lambda view, offset: os.preadv(fd, [view], offset)
    if hasattr(os, "pread"):

        def pread(view: memoryview, offset: int) -> int:
            data = os.pread(fd, len(view), offset)
            view[: len(data)] = data
            return len(data)

        return pread
    lock = threading.Lock()  # no positional reads (Windows): one reader at a time

    def seek_read(view: memoryview, offset: int) -> int:
        with lock:
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, len(view))
        view[: len(data)] = data
        return len(data)

    return seek_read


def _hash_range(
    read: Callable[[memoryview, int], int],
    start: int,
    end: int,
    into: memoryview | None,
    buffer_size: int,
    progress: Progress | None,
    keep: int = 0,
    source: memoryview | None = None,
) -> RangeDigest:
    h = hashlib.sha256()
    crc = 0
    head = bytearray()
    scratch = (
        memoryview(bytearray(min(buffer_size, end - start)))
        if into is None and source is None
        else None
    )
    pos = start
    while pos < end:
        n = min(buffer_size, end - pos)
        if source is not None:
            view = source[pos - start : pos - start + n]
        else:
            view = into[pos - start : pos - start + n] if into is not None else scratch[:n]  # type: ignore[index]
        got = n if source is not None else 0  # the bytes are already in memory
        while got < n:
            k = read(view[got:], pos + got)
            if k <= 0:
                raise ShortReadError(f"file ends at byte {pos + got}, inside [{start}, {end})")
            got += k
        h.update(view)
        crc = crc32(view, crc)
        if len(head) < keep:
            head += view[: keep - len(head)]
        pos += n
        if progress is not None:
            progress(n)
    return RangeDigest(start, end, h.digest(), crc, bytes(head))


def hash_ranges(
    fd: int,
    spans: Sequence[tuple[int, int]],
    *,
    workers: int | None = None,
    into: Sequence[memoryview | None] | None = None,
    keep: Sequence[int] | None = None,
    buffer_size: int = BUFFER_SIZE,
    progress: Progress | None = None,
    source: Sequence[memoryview | None] | None = None,
) -> list[RangeDigest]:
    """SHA-256 and CRC-32 of each [start, end) of the open file ``fd``, in parallel.

    ``into``, when given, holds for each span a writable buffer of its length that
    receives the bytes as they are hashed (reading the entry into memory and
    hashing it is then one pass, and what is hashed is what is kept); otherwise
    each thread reads through its own ``buffer_size`` scratch buffer. ``keep[i]``
    leading bytes of span i are returned in its ``head``, copied from the very
    buffer that was hashed. Results come in the order of ``spans``. A file shorter
    than a span raises :class:`ShortReadError`. ``source[i]``, when not None, holds
    span i's bytes already (a :func:`sealed_copy` of them): they are hashed from
    there and the file is not read for that span.
    """
    targets: Sequence[memoryview | None] = into if into is not None else [None] * len(spans)
    keeps: Sequence[int] = keep if keep is not None else [0] * len(spans)
    sources: Sequence[memoryview | None] = source if source is not None else [None] * len(spans)
    if not len(targets) == len(keeps) == len(sources) == len(spans):
        raise ValueError("one buffer, one keep count and one source per span")
    for (a, b), t, src in zip(spans, targets, sources, strict=True):
        if not 0 <= a <= b or any(x is not None and len(x) != b - a for x in (t, src)):
            raise ValueError(f"bad span [{a}, {b})")
        if t is not None and src is not None:
            raise ValueError(f"span [{a}, {b}) has both a buffer and a source")
    read = _reader(fd)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(spans)))
    lock = threading.Lock()

    def report(n: int) -> None:
        if progress is not None:
            with lock:
                progress(n)

    jobs = [
        (a, b, t, k, src) for (a, b), t, k, src in zip(spans, targets, keeps, sources, strict=True)
    ]
    if workers == 1:
        return [_hash_range(read, a, b, t, buffer_size, report, k, src) for a, b, t, k, src in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bundle-sha256") as pool:
        futures = [
            pool.submit(_hash_range, read, a, b, t, buffer_size, report, k, src)
            for a, b, t, k, src in jobs
        ]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# --------------------------------------------------------------------------- sealed copies

MEMFD_NAME = "model-bundle-weights"
"""The name a :func:`sealed_copy` shows in ``/proc/self/maps`` (``/memfd:model-bundle-weights``)."""


def sealed_copy(
    fd: int,
    start: int,
    size: int,
    *,
    piece: int = SHARD_SIZE,
    workers: int | None = None,
    name: str = MEMFD_NAME,
) -> mmap.mmap:
    """A private, sealed, read-only in-memory copy of bytes [start, start + size) of ``fd``.

    Linux: the bytes go from the page cache into a fresh memory file
    (``memfd_create``) with ``sendfile``, pieces of ``piece`` bytes copied in
    parallel (each thread writes through its own open file description, at its
    own offset). The kernel writes whole pages, so it need not zero them first as it
    does for every page of anonymous memory (on a 2-core EPYC VM: 0.41 core-seconds
    per GB for this copy, 0.67 for ``preadv`` into anonymous memory;
    benchmarks/verify_memory.py compares whole verifies). The file is then sealed
    against writing, growing
    and shrinking (``F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL``)
    *before* it is mapped read-only and handed out, so bytes hashed from the mapping
    can never change afterwards (no writer, not even this process, nor another one
    that opened it through ``/proc``: a write before the seal is caught by the hash)
    and the mapping cannot fault with SIGBUS (it cannot shrink). Its descriptor is
    closed: the mapping alone keeps it alive, and its pages count once in the
    resident set (as shared memory).

    A file shorter than the range raises :class:`ShortReadError`. Where memory
    files, ``sendfile`` or seals are missing (not Linux, no ``/proc``, an old kernel)
    an :class:`OSError` says so; callers then read into anonymous memory instead.
    """
    if size <= 0 or start < 0:
        raise ValueError(f"bad range: {size} bytes at {start}")
    if not (hasattr(os, "memfd_create") and hasattr(os, "sendfile")):
        raise OSError(errno.ENOSYS, "no memfd_create/sendfile on this platform")
    try:
        import fcntl

        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    except (ImportError, AttributeError) as e:
        raise OSError(errno.ENOSYS, "no file sealing on this platform") from e
    memfd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(memfd, size)

        def copy(a: int, b: int) -> None:
            # sendfile writes at the output's file offset: one description per piece.
            out = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.lseek(out, a, os.SEEK_SET)
                pos = a
                while pos < b:
                    k = os.sendfile(out, fd, start + pos, b - pos)
                    if k <= 0:
                        raise ShortReadError(
                            f"file ends at byte {start + pos}, inside [{start + a}, {start + b})"
                        )
                    pos += k
            finally:
                os.close(out)

        pieces = shard_spans(size, piece)
        n = max(1, min(workers or os.cpu_count() or 1, len(pieces)))
        if n == 1:
            for a, b in pieces:
                copy(a, b)
        else:
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="bundle-copy") as pool:
                futures = [pool.submit(copy, a, b) for a, b in pieces]
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, seals)
        if fcntl.fcntl(memfd, fcntl.F_GET_SEALS) & seals != seals:
            raise OSError(errno.EPERM, "the memory file did not take its seals")
        return mmap.mmap(memfd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(memfd)
