"""Freshness: signed expiry, a minimum version, and a local rollback record.

A valid signature proves who made a bundle, not that it is the one to use
today. Three optional checks, all on the *signed* manifest (so an attacker
cannot change what they read), close the gap:

* **Expiry.** ``manifest.expires`` (RFC 3339 UTC, ``YYYY-MM-DDTHH:MM:SSZ``) is
  set by the signer; a bundle is refused at or after that instant. It bounds
  how long a stale or withdrawn bundle can be replayed (a "freeze" attack).
* **Minimum version.** ``min_version`` refuses a bundle whose
  ``model.version`` is lower: the deployment pins a floor.
* **Rollback state.** ``rollback_state=path`` keeps, per model name and
  signer key id, the highest version this machine has accepted; a lower one is
  refused, an equal or higher one accepted and recorded. The record is written
  only after the signatures and every byte of the bundle verified, atomically
  (temp file + rename), under an exclusive lock where the OS has one.

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
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FreshnessError
from ..format.versions import format_time, parse_time, parse_version

__all__ = ["Policy"]

STATE_FORMAT = "model-bundle-rollback-state/1"
MAX_STATE_BYTES = 16 << 20


def _orderable(version: str) -> bool:
    try:
        parse_version(version)
    except ValueError:
        return False
    return True


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
            raise FreshnessError(f"now must be a datetime or an RFC 3339 UTC string, "
                                 f"not {type(self.now).__name__}")
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

    def check(self, name: str, version: str, expires: str | None,
              signers: Sequence[str]) -> None:
        """Refuse an expired bundle, one below ``min_version``, or a recorded rollback.

        Runs right after the signed manifest is parsed, before any content is
        hashed; ``signers`` are the trusted key ids that signed.
        """
        if expires is not None:
            at = self.time()
            if at >= parse_time(expires, "expires"):
                raise FreshnessError(f"bundle {name!r} v{version} expired at {expires} "
                                     f"(verification time {format_time(at)})")
        if self.min_version is None and self.rollback_state is None:
            return
        mine = self._version(name, version)
        if self.min_version is not None and mine < parse_version(self.min_version):
            raise FreshnessError(f"bundle {name!r} v{version} is older than the required "
                                 f"minimum version {self.min_version}")
        if self.rollback_state is not None:
            if not signers:
                raise FreshnessError("rollback protection needs a bundle signed by a trusted "
                                     "key; this one is not")
            seen = _read_state(Path(self.rollback_state)).get(name, {})
            self._compare(name, version, mine, seen, signers)

    def record(self, name: str, version: str, signers: Sequence[str]) -> None:
        """After a bundle fully verified: store its version as the highest seen per signer."""
        if self.rollback_state is None or not signers:
            return
        path = Path(self.rollback_state)
        mine = self._version(name, version)
        with _locked(path):
            state = _read_state(path)
            seen = state.setdefault(name, {})
            # Checked again under the lock: another process may have moved on meanwhile.
            self._compare(name, version, mine, seen, signers)
            changed = False
            for key_id in signers:
                if key_id not in seen or parse_version(seen[key_id]) < mine:
                    seen[key_id] = version
                    changed = True
            if changed:
                _write_state(path, state)

    @staticmethod
    def _version(name: str, version: str) -> tuple[int, ...]:
        try:
            return parse_version(version)
        except ValueError as e:
            raise FreshnessError(f"bundle {name!r}: {e}") from e

    @staticmethod
    def _compare(name: str, version: str, mine: tuple[int, ...], seen: dict[str, str],
                 signers: Sequence[str]) -> None:
        for key_id in signers:
            recorded = seen.get(key_id)
            if recorded is not None and parse_version(recorded) > mine:
                raise FreshnessError(
                    f"rollback refused: bundle {name!r} v{version} signed by "
                    f"{key_id[:16]} is older than v{recorded}, already accepted from that "
                    "signer on this machine")


# --------------------------------------------------------------------------- state file


def _read_state(path: Path) -> dict[str, dict[str, str]]:
    """The recorded versions, {model name: {key id: version}}; empty if the file is absent."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise FreshnessError(f"cannot read rollback state {path}: {e.strerror}") from e
    problem = "too large" if len(data) > MAX_STATE_BYTES else None
    doc: Any = None
    if problem is None:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            problem = "not valid JSON"
    if problem is None and not (isinstance(doc, dict) and doc.get("format") == STATE_FORMAT
                                and isinstance(doc.get("models"), dict)):
        problem = f"not a {STATE_FORMAT} document"
    if problem is None:
        models = doc["models"]
        for name, per_key in models.items():
            if not isinstance(per_key, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and _orderable(v)
                    for k, v in per_key.items()):
                problem = f"entry {name!r} is malformed"
                break
    if problem is not None:
        # Fail closed: a damaged record must not silently reset protection.
        raise FreshnessError(f"rollback state {path} is {problem}; refusing to verify "
                             "(restore it, or remove it to start over deliberately)")
    return {str(n): dict(v) for n, v in doc["models"].items()}


def _write_state(path: Path, models: dict[str, dict[str, str]]) -> None:
    text = json.dumps({"format": STATE_FORMAT, "models": models}, sort_keys=True, indent=1)
    directory = path.parent if str(path.parent) else Path(".")
    try:
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
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise FreshnessError(f"cannot lock rollback state {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
