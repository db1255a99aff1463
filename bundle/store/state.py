"""The client state file: the newest alias record this machine has accepted, per alias.

``{"format": "model-bundle-store-state/1", "aliases": {"<store url>#<name>@<alias>":
{"seq": n, "record": "<sha256 of record n>"}}}``. With it, resolving an alias
refuses a log whose latest record is older than one accepted before (a replayed
or frozen alias) and a log rewritten below it (a fork), as TUF clients refuse
rolled-back metadata. It is read before and written after a successful resolve,
atomically (temp file + rename) under an exclusive lock; a damaged file fails
closed. The file must be a regular file, not a symbolic link.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FreshnessError

__all__ = ["STATE_FORMAT", "StateFile"]

STATE_FORMAT = "model-bundle-store-state/1"
MAX_STATE_BYTES = 16 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StateFile:
    """One client state file; ``floor`` reads an alias's entry, ``advance`` raises it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def key(store_url: str, name: str, alias: str) -> str:
        """The entry name of one alias of one store."""
        return f"{store_url}#{name}@{alias}"

    def floor(self, key: str) -> dict[str, Any] | None:
        """The entry {"seq", "record"} for ``key``, or None."""
        return self._read().get(key)

    def advance(self, key: str, seq: int, record: str) -> None:
        """Record that record ``seq`` (SHA-256 ``record``) was accepted for ``key``.

        Under the lock the entry is read again: it only moves forward (another
        process may have accepted a newer record meanwhile).
        """
        with self._locked():
            entries = self._read()
            have = entries.get(key)
            if have is not None and int(have["seq"]) >= seq:
                if int(have["seq"]) == seq and have["record"] != record:
                    raise FreshnessError(
                        f"{key}: record {seq} differs from the one this "
                        "machine accepted before (a fork); refused"
                    )
                return
            entries[key] = {"seq": seq, "record": record}
            self._write(entries)

    def _read(self) -> dict[str, dict[str, Any]]:
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise FreshnessError(
                f"cannot read store state {self.path} (a symbolic link is refused): {e.strerror}"
            ) from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FreshnessError(f"store state {self.path} is not a regular file")
            data = os.read(fd, MAX_STATE_BYTES + 1)
        finally:
            os.close(fd)
        try:
            if len(data) > MAX_STATE_BYTES:
                raise ValueError("too large")
            doc = json.loads(data)
            if (
                not isinstance(doc, dict)
                or doc.get("format") != STATE_FORMAT
                or not isinstance(doc.get("aliases"), dict)
            ):
                raise ValueError(f"not a {STATE_FORMAT} document")
            for k, v in doc["aliases"].items():
                if not (
                    isinstance(v, dict)
                    and set(v) == {"seq", "record"}
                    and isinstance(v["seq"], int)
                    and not isinstance(v["seq"], bool)
                    and v["seq"] >= 0
                    and isinstance(v["record"], str)
                    and _HEX64.fullmatch(v["record"])
                ):
                    raise ValueError(f"malformed entry {k!r}")
        except ValueError as e:  # json.JSONDecodeError is one
            # Fail closed: a damaged state must not silently reset the protection.
            raise FreshnessError(
                f"store state {self.path} is damaged ({e}); refusing to "
                "resolve (restore it, or remove it to start over)"
            ) from e
        aliases: dict[str, dict[str, Any]] = doc["aliases"]
        return aliases

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        text = json.dumps({"format": STATE_FORMAT, "aliases": entries}, sort_keys=True, indent=1)
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            f"{self.path}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
