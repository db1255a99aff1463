"""The local cache of bundle files, keyed by digest, and remote reads hashed as they arrive.

A digest is the SHA-256 of a bundle file's bytes. ``CACHE/sha256/<hex>`` holds
exactly those bytes: an entry is written to a temporary file in the cache,
checked, and renamed into place (atomic, so concurrent processes fetching the
same digest each end with a whole, correct file and readers never see part of
one). An entry is hashed again every time it is used: a file changed on disk is
an :class:`~bundle.errors.IntegrityError`, and is removed so the next use fetches
it again. Nothing here parses a bundle; what is loaded from the cache is then
verified in full by :func:`bundle.load`.

Remote bytes are read in ranges by several threads (large bundles), written at
their offsets, and hashed in order as they arrive, so the digest is known when the
last byte is, with no second pass and at most a few ranges in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import IntegrityError

__all__ = [
    "CHUNK_SIZE",
    "PARALLEL_MIN_BYTES",
    "WORKERS",
    "Cache",
    "default_cache_dir",
    "parse_digest",
    "sha256_file",
]

CHUNK_SIZE = 32 << 20
"""Bytes per ranged read. Large enough that per-request costs vanish (benchmarks/store.py:
against moto, 8 MiB ranges took 2.5x as long as one GET, 32 MiB ranges 1.1x)."""
PARALLEL_MIN_BYTES = 64 << 20
"""Smaller files are read in one request."""
WORKERS = 4
"""Ranged reads in flight at once (each holds one chunk in memory: 128 MiB at most)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")

ReadRange = Callable[[int, int], bytes]


def parse_digest(value: str) -> str | None:
    """The hex of ``sha256:<hex>`` or ``<hex>`` (64 lowercase hex digits), else None."""
    text = value[len("sha256:") :] if value.startswith("sha256:") else value
    return text if _HEX64.fullmatch(text) else None


def default_cache_dir() -> Path:
    """``$MODEL_BUNDLE_CACHE``, else the user cache directory's ``model-bundle``."""
    env = os.environ.get("MODEL_BUNDLE_CACHE")
    if env:
        return Path(env)
    if sys.platform == "win32":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "model-bundle"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Cache:
    """Bundle files by digest under ``directory`` (default :func:`default_cache_dir`)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, digest: str) -> Path:
        """Where the entry for ``digest`` lives (it may not exist)."""
        if not _HEX64.fullmatch(digest):
            raise ValueError(f"not a hex SHA-256 digest: {digest!r}")
        return self.directory / "sha256" / digest

    def get(self, digest: str) -> Path | None:
        """The entry's path after hashing it again; None if absent.

        An entry whose bytes no longer hash to its name raises IntegrityError (and is
        removed, so that the next use fetches it again).
        """
        path = self.path(digest)
        try:
            got = sha256_file(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise IntegrityError(
                f"cache entry {path} cannot be read: {e.strerror}", entry=str(path)
            ) from e
        if got != digest:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise IntegrityError(
                f"cache entry {path} changed on disk: its SHA-256 is "
                f"{got[:16]}..., not {digest[:16]}...; removed it, fetch again",
                entry=str(path),
            )
        return path

    def _temporary(self) -> tuple[int, Path]:
        folder = self.directory / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".fetch-", suffix=".part", dir=folder)
        return fd, Path(name)

    def _adopt(self, tmp: Path, digest: str) -> Path:
        final = self.path(digest)
        os.replace(tmp, final)  # atomic; a concurrent fetch of the same digest wrote the same
        return final

    def fetch(
        self,
        read_range: ReadRange,
        size: int,
        expected: str | None = None,
        what: str = "remote bundle",
    ) -> tuple[Path, str]:
        """Read ``size`` bytes through ``read_range(start, end)`` into the cache.

        Ranges are read in parallel and hashed in order as they arrive. With
        ``expected``, bytes that hash otherwise raise IntegrityError and nothing is
        kept. Returns the entry's path and digest.
        """
        if expected is not None:
            have = self.get(expected)
            if have is not None:
                return have, expected
        fd, tmp = self._temporary()
        try:
            digest = _download(read_range, size, fd, what)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        if expected is not None and digest != expected:
            tmp.unlink()
            raise IntegrityError(
                f"{what}: its bytes hash to {digest[:16]}..., not the digest "
                f"{expected[:16]}... it is stored under; nothing was kept",
                entry=what,
            )
        return self._adopt(tmp, digest), digest

    def add(self, source: Path) -> tuple[Path, str]:
        """Copy a local file into the cache (hashing it as it is copied)."""
        with open(source, "rb") as src:
            size = os.fstat(src.fileno()).st_size

            def read_range(start: int, end: int) -> bytes:
                return os.pread(src.fileno(), end - start, start)

            return self.fetch(read_range, size, what=str(source))


def _download(read_range: ReadRange, size: int, fd: int, what: str) -> str:
    """Fetch [0, size) into ``fd``; return the SHA-256 of the bytes, hashed in order."""
    h = hashlib.sha256()
    spans = (
        [(a, min(a + CHUNK_SIZE, size)) for a in range(0, size, CHUNK_SIZE)]
        if size >= PARALLEL_MIN_BYTES
        else ([(0, size)] if size else [])
    )

    def one(span: tuple[int, int]) -> bytes:
        data = read_range(*span)
        if len(data) != span[1] - span[0]:
            raise IntegrityError(
                f"{what}: asked for bytes {span[0]}..{span[1]}, got "
                f"{len(data)} (the object changed size?)",
                entry=what,
            )
        return data

    if len(spans) <= 1:
        for span in spans:
            data = one(span)
            h.update(data)
            os.pwrite(fd, data, span[0])
        return h.hexdigest()
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bundle-fetch") as pool:
        pending: dict[int, Future[bytes]] = {}
        nxt = 0
        try:
            for i, (start, _end) in enumerate(spans):
                while nxt < len(spans) and nxt < i + WORKERS:
                    pending[nxt] = pool.submit(one, spans[nxt])
                    nxt += 1
                data = pending.pop(i).result()  # popped: the chunk is freed once written
                h.update(data)
                view = memoryview(data)
                written = 0
                while written < len(view):
                    written += os.pwrite(fd, view[written:], start + written)
        except BaseException:
            for f in pending.values():
                f.cancel()
            raise
    return h.hexdigest()
