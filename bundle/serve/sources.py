"""Where the versions to serve come from: a bundle file, or an alias in a model store.

A :class:`Source` answers one question -- what should be serving now? -- with a
:class:`Candidate`: the digest of the bytes, and a loader that verifies them under
the trust policy and returns a :class:`bundle.Model`. The registry polls it, and
loads a candidate only when its digest changes. Nothing here decides trust: the
loader is :func:`bundle.load` (or the store's load), which verifies before parsing.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import BundleError, FormatError, StoreLogError
from ..runtime.model import Model
from ..trust.policy import TrustPolicy

__all__ = ["Candidate", "FileSource", "Source", "StoreSource"]

Loader = Callable[[Any], Model]
"""session_options -> a verified, loaded Model (raises a BundleError otherwise)."""


@dataclass(frozen=True)
class Candidate:
    """A version a source wants served: its digest, how to load it, what is known of it.

    ``digest``: ``sha256:<hex>`` of the bundle bytes. ``version``: the version label
    the source claims before loading (a store's record), or None. ``record``: what
    the source knows (alias, sequence number, who promoted it), for the page.
    """

    digest: str
    load: Loader
    version: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """What a served model name follows."""

    name: str
    poll_interval: float

    def current(self) -> Candidate:
        """The version that should serve now; a BundleError if it cannot be told."""
        ...

    def history(self) -> list[dict[str, Any]]:
        """The alias history, newest first ([] where there is none)."""
        ...

    def rollback(self, to_digest: str, reason: str) -> str:
        """Record that the server went back to ``to_digest``; return what was done."""
        ...

    def describe(self) -> str:
        """One line naming the source, for the page and logs."""
        ...


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, streamed (``hashlib`` releases the GIL while it hashes)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return "sha256:" + h.hexdigest()


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class FileSource:
    """A bundle file, watched for changes (polled ``stat``; hashed again only when it changed).

    ``name`` (the route) defaults to the model name in the bundle's manifest; the
    digest is SHA-256 of the whole file, as ``sha256sum`` prints it. A file that
    changes while it is hashed is reported as changing and tried again at the next
    poll, so a half-copied file is never taken for a version. Replace the file
    atomically (write elsewhere, rename over it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        trust: TrustPolicy,
        name: str | None = None,
        poll_interval: float = 1.0,
        device: str = "cpu",
        zero_copy: bool = False,
    ) -> None:
        if not isinstance(trust, TrustPolicy):
            raise TypeError(f"trust must be a bundle.TrustPolicy, not {type(trust).__name__}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        self.path = Path(path)
        self.trust = trust
        if name is None:
            # Only the route's name comes from the unverified manifest; what serves under
            # it is verified at every load.
            from .. import api

            name = api.inspect(self.path).manifest.model.name
        self.name = name
        self.poll_interval = float(poll_interval)
        self.device = device
        self.zero_copy = zero_copy
        self._lock = threading.Lock()
        self._seen: tuple[tuple[int, ...] | None, str] | None = None

    def current(self) -> Candidate:
        """The file's digest now (cached while its stat is unchanged) and its loader."""
        before = _identity(self.path)
        if before is None:
            raise FormatError(f"{self.path} does not exist or cannot be read", entry=str(self.path))
        with self._lock:
            if self._seen is not None and self._seen[0] == before:
                digest = self._seen[1]
            else:
                try:
                    digest = file_digest(self.path)
                except OSError as e:
                    raise FormatError(
                        f"{self.path} cannot be read: {e.strerror}", entry=str(self.path)
                    ) from e
                if _identity(self.path) != before:
                    raise FormatError(
                        f"{self.path} changed while it was being hashed; "
                        "trying again at the next poll",
                        entry=str(self.path),
                    )
                self._seen = (before, digest)
        path, trust, device, zero_copy = self.path, self.trust, self.device, self.zero_copy

        def load(session_options: Any) -> Model:
            from .. import api

            model = api.load(
                path,
                trust=trust,
                device=device,
                zero_copy=zero_copy,
                session_options=session_options,
            )
            if _identity(path) != before:
                # The bytes loaded may not be the bytes hashed: try again next poll.
                raise FormatError(
                    f"{path} changed while it was being loaded; trying again at the next poll",
                    entry=str(path),
                )
            return model

        return Candidate(digest, load, record={"source": str(self.path)})

    def history(self) -> list[dict[str, Any]]:
        """A file has no alias history."""
        return []

    def rollback(self, to_digest: str, reason: str) -> str:
        """A file cannot be rolled back: say so (the server already serves ``to_digest``)."""
        return (
            f"serving {to_digest[:19]} again; {self.path} still holds the rejected version "
            "(it is not loaded again until the file changes)"
        )

    def describe(self) -> str:
        """``file:<path>``."""
        return f"file:{self.path}"


class StoreSource:
    """``name@alias`` in a model store (:class:`bundle.Store`), polled.

    Uses only ``store.resolve(spec)`` (a ref with ``digest``, ``version``, ``seq``),
    ``store.load(ref, session_options=...)``, ``store.history(name, alias)`` and
    ``store.rollback(name, alias, signing_key=...)``. With a ``signing_key``, an
    automatic rollback appends a signed rollback record to the alias log; without
    one it is reported (model status, metrics, log) and the alias is left as is.
    """

    def __init__(
        self, store: Any, spec: str, *, signing_key: Any = None, poll_interval: float = 5.0
    ) -> None:
        name, sep, alias = spec.partition("@")
        if not sep or not name or not alias:
            raise ValueError(f"model must be given as name@alias, not {spec!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        self.store = store
        self.spec = spec
        self.name = name
        self.alias = alias
        self.signing_key = signing_key
        self.poll_interval = float(poll_interval)

    def current(self) -> Candidate:
        """Resolve the alias (the store verifies its signed records) to a digest."""
        ref = self.store.resolve(self.spec)
        store = self.store
        digest = str(ref.digest)
        version = getattr(ref, "version", None)

        def load(session_options: Any) -> Model:
            # By digest: exactly the bytes the verified record names, even if the alias
            # moves meanwhile (the next poll sees that).
            model: Model = store.load(digest, session_options=session_options)
            if version is not None and model.manifest.model.version != str(version):
                raise StoreLogError(
                    f"{self.spec} names version {version}, but {digest[:19]} "
                    f"is version {model.manifest.model.version}"
                )
            return model

        record = getattr(ref, "record", None)
        seq = getattr(record, "seq", None) if record is not None else getattr(ref, "seq", None)
        return Candidate(
            digest,
            load,
            None if version is None else str(version),
            {"alias": self.alias, "seq": seq, "source": self.describe()},
        )

    def history(self) -> list[dict[str, Any]]:
        """The alias log as the store reports it, newest first."""
        out = []
        for rec in self.store.history(self.name, self.alias):
            if isinstance(rec, dict):
                out.append(dict(rec))
            elif hasattr(rec, "to_dict"):
                out.append(dict(rec.to_dict()))
            else:
                out.append(
                    {
                        k: getattr(rec, k)
                        for k in ("seq", "digest", "version", "action", "signer", "time")
                        if hasattr(rec, k)
                    }
                )
        out.sort(key=lambda r: -(r.get("seq") or 0))
        return out

    def rollback(self, to_digest: str, reason: str) -> str:
        """Append a signed rollback record when a key was given; else say why not."""
        if self.signing_key is None:
            return (
                f"rolled back to {to_digest[:19]} in this server only: no signing key, so "
                f"{self.spec} still points at the rejected version in the store"
            )
        try:
            self.store.rollback(self.name, self.alias, signing_key=self.signing_key)
        except BundleError as e:
            return f"rolled back here, but the store refused the rollback record: {e.one_line()}"
        return f"rolled back; signed rollback record appended to {self.spec}"

    def describe(self) -> str:
        """``store:<url> <name@alias>``."""
        url = getattr(self.store, "url", type(self.store).__name__)
        return f"store:{url} {self.spec}"


def sources_names(sources: Sequence[Source]) -> list[str]:
    """The served names, checked to be distinct."""
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1 and n})
    if dup:
        raise ValueError(f"two sources serve the same model name(s) {dup}: give each a name")
    return names
