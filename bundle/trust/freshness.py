"""Freshness: signed expiry, a minimum version, and a local rollback record.

A valid signature proves who made a bundle, not that it is the one to use
today. Three optional checks, all on the *signed* manifest (so an attacker
cannot change what they read), close the gap:

* **Expiry.** ``manifest.expires`` (RFC 3339 UTC, ``YYYY-MM-DDTHH:MM:SSZ``) is
  set by the signer; a bundle is refused at or after that instant. It bounds
  how long a stale or withdrawn bundle can be replayed (a "freeze" attack).
* **Minimum version.** ``min_version`` refuses a bundle whose
  ``model.version`` is lower: the deployment pins a floor.
* **Rollback state.** ``rollback_state=path`` keeps, per model name, the
  highest version this machine has accepted from any trusted signer; a lower
  one is refused whoever signed it, an equal or higher one accepted and
  recorded. The floor is per name, not per key, so a key rotation, a k-of-n set
  or a renewed certificate cannot reopen old versions. The record is written
  only after the signatures and every byte of the bundle verified, atomically
  (temp file + rename), under an exclusive lock where the OS has one. The state
  file must be a regular file, not a symbolic link: a planted link could point
  the record at a file the attacker controls.

Versions compare as dot-separated non-negative integers (``3``, ``1.10.2``,
``2024.6.1``), numerically and component by component, trailing zero
components ignored (``1.0`` == ``1``). A version in any other form cannot be
ordered; asking for rollback protection on one is an error rather than a
guess. The manifest's ``model.version`` stays a free string otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, FreshnessError
from ..format import canonical_json as _json
from ..format.versions import format_time, parse_time, parse_version

__all__ = ["Policy"]

STATE_FORMAT = "model-bundle-rollback-state/2"
STATE_FORMAT_1 = "model-bundle-rollback-state/1"
"""The per-signer form that earlier releases wrote; read, and rewritten as /2 on update."""
MAX_STATE_BYTES = 16 << 20


def _aware(now: dt.datetime) -> dt.datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Policy:
    """What a verifier requires beyond signatures: a clock, a version floor, a state file.

    ``now`` replaces the current time for the expiry and certificate checks (for
    tests and for re-checking a decision); a naive datetime is read as UTC.
    """

    now: dt.datetime | str | None = None
    min_version: str | None = None
    rollback_state: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.now, str):
            try:
                object.__setattr__(self, "now", parse_time(self.now, "now"))
            except ValueError as e:
                raise FreshnessError(str(e)) from e
        elif self.now is not None and not isinstance(self.now, dt.datetime):
            raise FreshnessError(
                f"now must be a datetime or an RFC 3339 UTC string, not {type(self.now).__name__}"
            )
        if self.min_version is not None:
            try:
                parse_version(self.min_version)
            except ValueError as e:
                raise FreshnessError(f"min_version: {e}") from e

    def time(self) -> dt.datetime:
        """The verification time (UTC, aware)."""
        if isinstance(self.now, dt.datetime):
            return _aware(self.now)
        return dt.datetime.now(dt.timezone.utc)

    def check(self, name: str, version: str, expires: str | None, signers: Sequence[str]) -> None:
        """Refuse an expired bundle, one below ``min_version``, or a recorded rollback.

        Runs right after the signed manifest is parsed, before any content is
        hashed; ``signers`` are the trusted key ids that signed.
        """
        if expires is not None:
            at = self.time()
            if at >= parse_time(expires, "expires"):
                raise FreshnessError(
                    f"bundle {name!r} v{version} expired at {expires} "
                    f"(verification time {format_time(at)})"
                )
        if self.min_version is None and self.rollback_state is None:
            return
        mine = self._version(name, version)
        if self.min_version is not None and mine < parse_version(self.min_version):
            raise FreshnessError(
                f"bundle {name!r} v{version} is older than the required "
                f"minimum version {self.min_version}"
            )
        if self.rollback_state is not None:
            if not signers:
                raise FreshnessError(
                    "rollback protection needs a bundle signed by a trusted key; this one is not"
                )
            floor = _read_state(Path(self.rollback_state)).get(name)
            self._compare(name, version, mine, floor, signers)

    def record(self, name: str, version: str, signers: Sequence[str]) -> None:
        """After a bundle fully verified: raise the model name's floor to its version."""
        if self.rollback_state is None or not signers:
            return
        path = Path(self.rollback_state)
        mine = self._version(name, version)
        with _locked(path):
            state = _read_state(path)
            floor = state.get(name)
            # Checked again under the lock: another process may have moved on meanwhile.
            self._compare(name, version, mine, floor, signers)
            if floor is None or parse_version(floor.version) < mine:
                state[name] = Floor(
                    version,
                    tuple(sorted(set(signers))),
                    format_time(dt.datetime.now(dt.timezone.utc)),
                )
            elif set(signers) <= set(floor.signers):
                return
            else:
                state[name] = Floor(
                    floor.version, tuple(sorted({*floor.signers, *signers})), floor.accepted_at
                )
            _write_state(path, state)

    @staticmethod
    def _version(name: str, version: str) -> tuple[int, ...]:
        try:
            return parse_version(version)
        except ValueError as e:
            raise FreshnessError(f"bundle {name!r}: {e}") from e

    @staticmethod
    def _compare(
        name: str, version: str, mine: tuple[int, ...], floor: Floor | None, signers: Sequence[str]
    ) -> None:
        if floor is not None and parse_version(floor.version) > mine:
            by = ", ".join(k[:16] for k in signers)
            raise FreshnessError(
                f"rollback refused: bundle {name!r} v{version} signed by {by} is older than "
                f"v{floor.version}, already accepted for that model name on this machine "
                "(from any trusted signer)"
            )


@dataclass(frozen=True)
class Floor:
    """The highest version of one model name accepted here; who signed it and when are
    for information only (the comparison is on ``version`` alone)."""

    version: str
    signers: tuple[str, ...]
    accepted_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": self.version, "signers": list(self.signers)}
        if self.accepted_at is not None:
            doc["accepted_at"] = self.accepted_at
        return doc


# --------------------------------------------------------------------------- state file


def _open_state(path: Path) -> bytes | None:
    """The state file's bytes (at most one over the limit); None if it does not exist.

    O_NOFOLLOW refuses a symbolic link as the last component; O_NONBLOCK keeps
    a FIFO from blocking open() so that fstat can refuse it.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow and os.path.islink(path):  # pragma: no cover - Windows: racy, but checked
        raise FreshnessError(f"rollback state {path} is a symbolic link; refusing to follow it")
    try:
        fd = os.open(
            path,
            os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0),
        )
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.islink(path):
            raise FreshnessError(
                f"rollback state {path} is a symbolic link; refusing to follow it"
            ) from e
        raise FreshnessError(f"cannot read rollback state {path}: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FreshnessError(f"rollback state {path} is not a regular file")
        data = bytearray()
        while len(data) <= MAX_STATE_BYTES:
            chunk = os.read(fd, MAX_STATE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)
    except OSError as e:
        raise FreshnessError(f"cannot read rollback state {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _is_version(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_version(value)
    except ValueError:
        return False
    return True


def _floor(entry: object) -> Floor | None:
    """One /2 entry, or None if malformed."""
    if not (
        isinstance(entry, dict)
        and {"version", "signers"} <= entry.keys() <= {"version", "signers", "accepted_at"}
    ):
        return None
    version, signers, at = entry["version"], entry["signers"], entry.get("accepted_at")
    if not (
        _is_version(version)
        and isinstance(signers, list)
        and all(isinstance(k, str) for k in signers)
    ):
        return None
    if at is not None:
        try:
            parse_time(at)
        except ValueError:
            return None
    return Floor(version, tuple(signers), at)


def _floor_1(per_key: object) -> Floor | None:
    """A /1 entry, {key id: version}: the floor is the highest version over its keys."""
    if not (
        isinstance(per_key, dict) and per_key and all(_is_version(v) for v in per_key.values())
    ):
        return None
    top = max(parse_version(v) for v in per_key.values())
    best = sorted(k for k, v in per_key.items() if parse_version(v) == top)
    return Floor(per_key[best[0]], tuple(best))


def _read_state(path: Path) -> dict[str, Floor]:
    """The floor of each model name recorded; empty if the file is absent."""
    data = _open_state(path)
    if data is None:
        return {}
    problem = "too large" if len(data) > MAX_STATE_BYTES else None
    doc: Any = None
    if problem is None:
        try:
            doc = _json.loads(data, what=str(path))
        except FormatError:
            problem = "not valid JSON"
    form = doc.get("format") if isinstance(doc, dict) else None
    if problem is None and not (
        form in (STATE_FORMAT, STATE_FORMAT_1) and isinstance(doc.get("models"), dict)
    ):
        problem = f"not a {STATE_FORMAT} (or {STATE_FORMAT_1}) document"
    floors: dict[str, Floor] = {}
    if problem is None:
        parse = _floor if form == STATE_FORMAT else _floor_1
        for name, entry in doc["models"].items():
            floor = parse(entry)
            if floor is None:
                problem = f"malformed at entry {name!r}"
                break
            floors[name] = floor
    if problem is not None:
        # Fail closed: a damaged record must not silently reset protection.
        raise FreshnessError(
            f"rollback state {path} is {problem}; refusing to verify "
            "(restore it, or remove it to start over deliberately)"
        )
    return floors


def _write_state(path: Path, floors: dict[str, Floor]) -> None:
    models = {name: floor.to_dict() for name, floor in floors.items()}
    text = json.dumps({"format": STATE_FORMAT, "models": models}, sort_keys=True, indent=1)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        import tempfile  # here: the load path verifies far more often than it records

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise FreshnessError(f"cannot write rollback state {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``PATH.lock`` (POSIX); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        # O_NOFOLLOW: a planted link must not make us create or lock a file elsewhere.
        fd = os.open(
            f"{path}.lock",
            os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            0o600,
        )
    except OSError as e:
        raise FreshnessError(f"cannot lock rollback state {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
