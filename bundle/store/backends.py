"""Where a store's objects live: fsspec file systems, with exclusive create per backend.

Every backend reads, lists and deletes through fsspec. What differs is how an
object is created *exclusively* -- the one primitive the alias log needs, so
that two writers can never both win a sequence number:

* local folder (path or ``file://``): the bytes go to a temporary file that is
  then ``os.link``-ed to its name; ``link`` fails if the name exists, and the
  object appears whole or not at all;
* S3 and S3-compatible (``s3://``): ``PutObject`` with ``If-None-Match: *``
  (s3fs ``pipe_file(mode="create")``), answered 412 when the key exists;
* ``memory://``: fsspec's create mode, under a process-wide lock (the memory
  file system is one process's dictionary).

Other protocols can be read but not written: without an exclusive create the
log's guarantees would not hold. Every backend failure becomes a
:class:`~bundle.errors.StoreError` naming the object.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import StoreError

__all__ = ["Backend", "open_backend"]

_MEMORY_LOCK = threading.Lock()


@contextlib.contextmanager
def _wrapped(what: str) -> Iterator[None]:
    """Any backend exception (OSError, botocore, aiohttp...) as a StoreError."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError:
        raise
    except FileExistsError:
        raise
    except Exception as e:
        raise StoreError(f"{what}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e


class Backend:
    """A store root on an fsspec file system; keys are ``/``-separated relative paths."""

    writable = False
    """Whether :meth:`create` is exclusive on this backend (else writes are refused)."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def path(self, key: str) -> str:
        """The file system path of ``key``."""
        return f"{self.root}/{key}" if self.root else key

    # ---------------------------------------------------------------- reading

    def read(self, key: str, max_size: int) -> bytes | None:
        """The object's bytes, or None if it does not exist; a larger one is refused."""
        with _wrapped(f"cannot read {self.url}/{key}"):
            try:
                # One ranged request, bounded: no separate size query (a round trip per
                # record on S3), and an oversized object is never read whole.
                data: bytes = self.fs.cat_file(self.path(key), start=0, end=max_size + 1)
            except (FileNotFoundError, IsADirectoryError):
                return None
        if len(data) > max_size:
            raise StoreError(
                f"{self.url}/{key} is over the {max_size}-byte limit for this kind of object"
            )
        return data

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object."""
        with _wrapped(f"cannot read {self.url}/{key}"):
            data: bytes = self.fs.cat_file(self.path(key), start=start, end=end)
        return data

    def size(self, key: str) -> int | None:
        """The object's size, or None if it does not exist."""
        with _wrapped(f"cannot stat {self.url}/{key}"):
            try:
                info = self.fs.info(self.path(key))
            except FileNotFoundError:
                return None
            if info.get("type") == "directory":
                return None
            return int(info["size"])

    def modified(self, key: str) -> float | None:
        """The object's modification time (seconds since the epoch), if the backend says."""
        with _wrapped(f"cannot stat {self.url}/{key}"):
            try:
                value = self.fs.modified(self.path(key))
            except (FileNotFoundError, NotImplementedError):
                return None
        return float(value.timestamp())

    def listdir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (objects and folders), sorted; [] if none."""
        with _wrapped(f"cannot list {self.url}/{prefix}"):
            self.fs.invalidate_cache(self.path(prefix))
            try:
                entries = self.fs.ls(self.path(prefix), detail=False)
            except FileNotFoundError:
                return []
        base = self.path(prefix).rstrip("/") + "/"
        out = set()
        for p in entries:
            p = p.rstrip("/")
            name = p[len(base) :] if p.startswith(base) else p.rsplit("/", 1)[-1]
            if name and "/" not in name:
                out.add(name)
        return sorted(out)

    # ---------------------------------------------------------------- writing

    def _refuse(self) -> None:
        if not self.writable:
            raise StoreError(
                f"{self.url}: the {self.fs.protocol!r} backend cannot create "
                "objects exclusively, so this store is read-only here (writable: "
                "a local folder, file://, s3://, memory://)"
            )

    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` unless it exists: True if this call created it.

        Exclusive: of two writers creating one key, exactly one gets True, and a
        reader sees the whole object or none.
        """
        self._refuse()
        raise NotImplementedError

    def upload(self, key: str, local: Path) -> None:
        """Store the file ``local`` under ``key``, whole or not at all (readers never see
        part of it). An existing object is left as it is."""
        self._refuse()
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove an object (gone already is fine)."""
        self._refuse()
        with _wrapped(f"cannot delete {self.url}/{key}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def stale_temporaries(self, older_than: float) -> list[str]:
        """Keys of temporary objects left by interrupted writes (none on object stores)."""
        return []


class LocalBackend(Backend):
    """A folder: temporary file, fsync, then ``os.link`` to the final name."""

    writable = True
    TMP = ".tmp"

    def _tmp(self, data: bytes | None = None, source: Path | None = None) -> Path:
        tmpdir = Path(self.path(self.TMP))
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                if data is not None:
                    f.write(data)
                elif source is not None:
                    with open(source, "rb") as src:
                        while chunk := src.read(1 << 20):
                            f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp

    def _link(self, tmp: Path, key: str) -> bool:
        final = Path(self.path(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(final.parent)
        return True

    def create(self, key: str, data: bytes) -> bool:
        with _wrapped(f"cannot write {self.url}/{key}"):
            return self._link(self._tmp(data=data), key)

    def upload(self, key: str, local: Path) -> None:
        with _wrapped(f"cannot write {self.url}/{key}"):
            self._link(self._tmp(source=local), key)

    def stale_temporaries(self, older_than: float) -> list[str]:
        found = []
        cutoff = time.time() - older_than
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.path(self.TMP)):
                if entry.name.endswith(".part") and entry.stat().st_mtime <= cutoff:
                    found.append(f"{self.TMP}/{entry.name}")
        return found


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (POSIX); a no-op where directories cannot be
    opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class S3Backend(Backend):
    """S3 and S3-compatible stores: conditional PutObject (``If-None-Match: *``)."""

    writable = True

    def create(self, key: str, data: bytes) -> bool:
        with _wrapped(f"cannot write {self.url}/{key}"):
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:  # s3fs's reading of 412 Precondition Failed
                return False
            return True

    def upload(self, key: str, local: Path) -> None:
        # A PutObject, or a multipart upload, is atomic on S3: the object appears
        # when the upload completes, never in part.
        if self.size(key) is not None:
            return
        with _wrapped(f"cannot write {self.url}/{key}"):
            self.fs.put_file(os.fspath(local), self.path(key))


class MemoryBackend(Backend):
    """fsspec's in-process memory file system (tests, examples)."""

    writable = True

    def create(self, key: str, data: bytes) -> bool:
        with _MEMORY_LOCK, _wrapped(f"cannot write {self.url}/{key}"):
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            return True

    def upload(self, key: str, local: Path) -> None:
        data = local.read_bytes()
        with (
            _MEMORY_LOCK,
            _wrapped(f"cannot write {self.url}/{key}"),
            contextlib.suppress(FileExistsError),
        ):
            self.fs.pipe_file(self.path(key), data, mode="create")


def _kind(protocol: Any) -> type[Backend]:
    names = set(protocol) if isinstance(protocol, (tuple, list)) else {protocol}
    if names & {"file", "local"}:
        return LocalBackend
    if names & {"s3", "s3a"}:
        return S3Backend
    if "memory" in names:
        return MemoryBackend
    return Backend


def open_backend(
    url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> Backend:
    """The backend for a store URL: a local path, ``file://``, ``s3://bucket/prefix``,
    ``memory://name``, or another fsspec URL (read-only)."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise ValueError("a store URL must be a non-empty string or path")
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - a dependency of the store extra
        raise StoreError("the model store needs fsspec: pip install 'model-bundle[store]'") from e
    options = dict(storage_options or {})
    if "://" not in text:
        text = os.path.abspath(text)
    with _wrapped(f"cannot open store {text}"):
        fs, root = fsspec.core.url_to_fs(text, **options)
    kind = _kind(fs.protocol)
    if kind is LocalBackend:
        root = os.path.abspath(root)
    return kind(fs, root, text)
