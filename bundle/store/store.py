"""The model store: immutable versions and signed aliases over a folder or a bucket.

Layout (normative in spec/STORE.md)::

    model-bundle-store.json               {"format": "model-bundle-store/1"}
    blobs/sha256/<digest>                 bundle files, named by the SHA-256 of their bytes
    versions/<name>/<version>.json        name + version -> digest, created once, never changed
    aliases/<name>/<alias>/<seq>.json     the signed alias log, one record per object

Every write that decides something is an exclusive create (:mod:`.backends`), so
there is no server and no lock: the loser of a race reads again and retries.
Everything that goes in or comes out is verified by the store's one
:class:`~bundle.TrustPolicy`: a pushed bundle before it is stored, a target before
an alias is pointed at it, every alias record on every resolve, every byte on load.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import api
from ..errors import (
    FreshnessError,
    IntegrityError,
    KeyFileError,
    StoreConflictError,
    StoreError,
    StoreLogError,
    StoreNotFoundError,
)
from ..format import canonical_json
from ..trust import signing
from ..trust.policy import TrustPolicy
from . import log
from .backends import Backend, open_backend
from .cache import Cache, parse_digest
from .log import AliasRecord, Target
from .state import StateFile

if TYPE_CHECKING:
    from ..runtime.model import Model
    from ..trust.verify import VerifyReport

__all__ = ["GcReport", "Resolved", "Store", "StoredVersion"]

STORE_FORMAT = "model-bundle-store/1"
VERSION_FORMAT = "model-bundle-store-version/1"
MARKER = "model-bundle-store.json"
MAX_VERSION_BYTES = 4096
MAX_ATTEMPTS = 64
"""Sequence numbers a writer tries before giving up (each loss means another writer won)."""
GC_GRACE_SECONDS = 3600.0
"""gc leaves younger unreferenced blobs alone: a push uploads the blob before its version."""

KeyLike = signing.PrivateKey | str | os.PathLike[str]


@dataclass(frozen=True)
class StoredVersion:
    """One immutable version: ``name`` + ``version`` -> the bundle file with ``digest``."""

    name: str
    version: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
        }


@dataclass(frozen=True)
class Resolved:
    """What a reference named: the bundle's digest and, when known, name and version.

    ``record`` is the verified alias record for a ``name@alias`` reference.
    """

    ref: str
    digest: str
    size: int
    name: str | None
    version: str | None
    record: AliasRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ref": self.ref,
            "digest": self.digest,
            "size": self.size,
            "name": self.name,
            "version": self.version,
            "record": None if self.record is None else self.record.to_dict(),
        }


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Store.gc` removed (or would remove, with ``dry_run``) and kept."""

    deleted: tuple[str, ...]
    kept: int
    young: tuple[str, ...]
    """Unreferenced blobs left alone because they are younger than the grace period."""
    temporaries: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "deleted": list(self.deleted),
            "kept": self.kept,
            "young": list(self.young),
            "temporaries": list(self.temporaries),
        }


def _blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest}"


def _version_key(name: str, version: str) -> str:
    return f"versions/{name}/{version}.json"


def _alias_dir(name: str, alias: str) -> str:
    return f"aliases/{name}/{alias}"


class Store:
    """A model store at ``url``: a local folder, ``file://``, ``s3://bucket/prefix``,
    ``memory://name`` (fsspec; S3 endpoint and credentials in ``storage_options``).

    ``trust`` (a :class:`~bundle.TrustPolicy`) decides everything the store accepts:
    bundles pushed and loaded, and alias records (signed by ``trust``'s keys, at its
    threshold). ``state`` is the client state file (:mod:`.state`): with it, an alias
    whose log goes backwards is refused. ``cache_dir``: where fetched bundles are
    kept by digest (default :func:`bundle.store.cache.default_cache_dir`).
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        trust: TrustPolicy,
        storage_options: dict[str, Any] | None = None,
        state: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(trust, TrustPolicy):
            raise TypeError(f"trust must be a bundle.TrustPolicy, not {type(trust).__name__}")
        self.trust = trust
        self.backend: Backend = open_backend(url, storage_options)
        self.url = self.backend.url
        self.state = StateFile(state) if state is not None else None
        self.cache = Cache(cache_dir)
        self._tips: dict[tuple[str, str], AliasRecord] = {}
        """The newest record this object verified per alias: later reads chain onto it."""
        self._checked: set[str] = set()
        """Digests this object verified under ``trust`` (push, promote)."""

    def __repr__(self) -> str:
        return f"Store({self.url!r}, trust={self.trust!r})"

    # ---------------------------------------------------------------- versions

    def push(self, path: str | os.PathLike[str]) -> StoredVersion:
        """Verify the bundle at ``path`` and store it as its manifest's name and version.

        The file is copied into the cache first and that copy is what is verified and
        uploaded (a file changed meanwhile cannot slip through). Pushing the same bytes
        again is a no-op; other bytes under an existing name and version raise
        :class:`StoreConflictError`. The bundle must verify under the store's trust
        policy or nothing is stored.
        """
        self._check_marker(create=True)
        snapshot, digest = self.cache.add(Path(path))
        report = api.verify(snapshot, trust=self.trust)
        model = report.manifest.model
        try:
            name, version = (
                log.check_name(model.name, "model name"),
                log.check_version(model.version),
            )
        except ValueError as e:
            raise StoreError(
                f"{path}: {e}; save the bundle with a name and version a store can hold"
            ) from e
        size = snapshot.stat().st_size
        want = StoredVersion(name, version, digest, size)
        existing = self._version_record(name, version)
        if existing is not None and existing.digest != digest:
            raise self._conflict(existing, want)
        if self.backend.size(_blob_key(digest)) != size:
            self.backend.upload(_blob_key(digest), snapshot)
        if existing is None and not self.backend.create(
            _version_key(name, version), self._version_bytes(want)
        ):
            existing = self._version_record(name, version)
            if existing is None or existing.digest != digest:
                raise self._conflict(existing, want)
        self._checked.add(digest)
        return want

    @staticmethod
    def _conflict(existing: StoredVersion | None, want: StoredVersion) -> StoreConflictError:
        have = existing.digest[:16] if existing is not None else "(unreadable)"
        return StoreConflictError(
            f"{want.name}:{want.version} is already stored as {have}..., not "
            f"{want.digest[:16]}...: versions are immutable; save with a new version"
        )

    @staticmethod
    def _version_bytes(v: StoredVersion) -> bytes:
        return canonical_json.dumps({"format": VERSION_FORMAT, **v.to_dict()})

    def _version_record(self, name: str, version: str) -> StoredVersion | None:
        key = _version_key(name, version)
        data = self.backend.read(key, MAX_VERSION_BYTES)
        if data is None:
            return None
        try:
            doc = canonical_json.loads(data, what=key)
            if (
                not isinstance(doc, dict)
                or doc.get("format") != VERSION_FORMAT
                or set(doc) != {"format", "name", "version", "digest", "size"}
            ):
                raise ValueError("not a version record")
            Target(doc["digest"], doc["version"], doc["size"])
            stored = StoredVersion(doc["name"], doc["version"], doc["digest"], doc["size"])
        except Exception as e:  # FormatError, ValueError, TypeError: all malformed
            raise StoreError(f"{self.url}/{key} is not a valid version record: {e}") from e
        if (stored.name, stored.version) != (name, version):
            raise StoreError(f"{self.url}/{key} records {stored.name}:{stored.version}")
        return stored

    def versions(self, name: str) -> list[StoredVersion]:
        """Every stored version of ``name`` (ordered by version where they are numbers)."""
        log.check_name(name)
        found = [
            v.removesuffix(".json")
            for v in self.backend.listdir(f"versions/{name}")
            if v.endswith(".json")
        ]
        out = [r for v in found if (r := self._version_record(name, v)) is not None]
        return sorted(out, key=lambda v: _version_sort_key(v.version))

    def names(self) -> list[str]:
        """Every model name with a stored version."""
        return [n for n in self.backend.listdir("versions") if log.NAME_PATTERN.fullmatch(n)]

    def aliases(self, name: str) -> list[str]:
        """The alias names of ``name`` that have records."""
        log.check_name(name)
        return [a for a in self.backend.listdir(f"aliases/{name}") if log.NAME_PATTERN.fullmatch(a)]

    # ---------------------------------------------------------------- aliases

    def _read_log(
        self, name: str, alias: str, *, anchor: tuple[int, str] | None
    ) -> tuple[list[AliasRecord], int]:
        """Verified records from the anchor's seq (or 0) to the end, and the count."""
        folder = _alias_dir(name, alias)
        listed_names = self.backend.listdir(folder)
        seqs = [s for n in listed_names if (s := log.seq_of_key(n)) is not None]
        stray = [n for n in listed_names if log.seq_of_key(n) is None]
        if stray:
            raise StoreError(f"{self.url}/{folder} holds objects that are not records: {stray[:3]}")
        if not seqs:
            return [], 0
        log.check_listing(f"{name}@{alias}", seqs)
        start = anchor[0] if anchor is not None and anchor[0] < len(seqs) else 0
        items = []
        for seq in range(start, len(seqs)):
            data = self.backend.read(f"{folder}/{log.record_key(seq)}", log.MAX_RECORD_BYTES)
            if data is None:
                raise _log_gap(name, alias, seq)
            items.append((seq, data))
        records = log.verify_chain(
            name,
            alias,
            items,
            self.trust.trust_store,
            listed=seqs,
            anchor=anchor if start else None,
        )
        return records, len(seqs)

    def _tip(self, name: str, alias: str) -> AliasRecord | None:
        """The newest record, verified, chained onto what this object verified before."""
        known = self._tips.get((name, alias))
        anchor = (known.seq, known.record_sha256) if known is not None else None
        records, count = self._read_log(name, alias, anchor=anchor)
        if known is not None and count <= known.seq:
            raise FreshnessError(
                f"{name}@{alias}: record {known.seq} was read before and is "
                "gone now: the alias log went backwards; refused"
            )
        tip = records[-1] if records else None
        if tip is not None:
            self._tips[(name, alias)] = tip
        return tip

    def history(self, name: str, alias: str) -> list[AliasRecord]:
        """Every record of the alias, oldest first, each verified (signatures, chain)."""
        log.check_name(name)
        log.check_name(alias, "alias")
        records, _ = self._read_log(name, alias, anchor=None)
        if not records:
            raise StoreNotFoundError(f"no alias {alias!r} for model {name!r} in {self.url}")
        self._tips[(name, alias)] = records[-1]
        return records

    def _target(self, name: str, version_or_digest: str) -> StoredVersion:
        digest = parse_digest(version_or_digest)
        if digest is not None:
            for v in self.versions(name):
                if v.digest == digest:
                    return v
            raise StoreNotFoundError(f"no version of {name!r} has digest {digest[:16]}...")
        log.check_version(version_or_digest)
        found = self._version_record(name, version_or_digest)
        if found is None:
            raise StoreNotFoundError(
                f"no version {version_or_digest!r} of model {name!r} in {self.url}"
            )
        return found

    def _check_target(self, v: StoredVersion) -> None:
        """The bundle an alias is about to point at verifies under the trust policy."""
        if v.digest in self._checked:
            return
        path = self._fetch(v.digest, v.size)
        report = api.verify(path, trust=self.trust)
        _check_binding(
            report.manifest.model.name, report.manifest.model.version, v.name, v.version, v.digest
        )
        self._checked.add(v.digest)

    def _append(
        self,
        name: str,
        alias: str,
        action: str,
        choose: Any,
        keys: list[Any],
        reason: str,
        expires: Any,
    ) -> AliasRecord:
        """Sign and exclusively create the next record; on losing a race, re-read and retry."""
        for attempt in range(MAX_ATTEMPTS):
            tip = self._tip(name, alias)
            target: StoredVersion = choose(tip)
            self._check_target(target)
            seq = 0 if tip is None else tip.seq + 1
            statement = log.build_record(
                name,
                alias,
                seq,
                action,
                Target(target.digest, target.version, target.size),
                tip,
                time=self.trust.freshness.time(),
                reason=reason,
                expires=expires,
            )
            data = log.sign_record(statement, keys)
            # Verified like anything read, before it is written: a record the policy would
            # refuse (keys it does not trust, too few of them) must never enter the log,
            # where it would stay forever.
            rec = log.verify_chain(
                name, alias, [(seq, data)], self.trust.trust_store, anchor=(seq, _sha256(data))
            )[0]
            key = f"{_alias_dir(name, alias)}/{log.record_key(seq)}"
            if self.backend.create(key, data):
                self._tips[(name, alias)] = rec
                self._remember(rec)
                return rec
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter only
        raise StoreConflictError(
            f"{name}@{alias}: lost {MAX_ATTEMPTS} races for the next "
            "record to other writers; try again"
        )

    def promote(
        self,
        name: str,
        alias: str,
        version_or_digest: str,
        *,
        signing_key: KeyLike | Sequence[KeyLike],
        passphrase: bytes | None = None,
        reason: str = "",
        expires: Any = None,
    ) -> AliasRecord:
        """Point ``name@alias`` at a stored version (by version, or digest) with a new
        signed record; return it.

        The target bundle is verified under the trust policy first, and the alias log
        as it stands (a log that does not verify is never extended). ``signing_key``:
        a key, a PEM path, or several (the policy's threshold counts distinct keys).
        ``expires`` (aware datetime, timedelta, RFC 3339 string) makes resolving the
        alias fail from then on unless a newer record exists.
        """
        log.check_name(name)
        log.check_name(alias, "alias")
        keys = _keys(signing_key, passphrase)
        self._check_marker(create=True)
        target = self._target(name, version_or_digest)
        return self._append(name, alias, "promote", lambda _tip: target, keys, reason, expires)

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        signing_key: KeyLike | Sequence[KeyLike],
        passphrase: bytes | None = None,
        to: str | None = None,
        reason: str = "rollback",
        expires: Any = None,
    ) -> AliasRecord:
        """Point ``name@alias`` back, with a new signed record, and return it.

        ``to`` (a version or digest) names the target; by default it is the most
        recent earlier target of the log that differs from the current one and that
        no rollback moved away from -- so rolling back twice goes two steps back,
        never forward again to the target the first rollback left.
        """
        log.check_name(name)
        log.check_name(alias, "alias")
        keys = _keys(signing_key, passphrase)
        self._check_marker(create=True)
        explicit = self._target(name, to) if to is not None else None

        def choose(tip: AliasRecord | None) -> StoredVersion:
            if tip is None:
                raise StoreNotFoundError(
                    f"no alias {alias!r} for model {name!r}: nothing to roll back"
                )
            if explicit is not None:
                return explicit
            records = self.history(name, alias)
            left = {
                r.previous.digest
                for r in records
                if r.action == "rollback" and r.previous is not None
            }
            current = records[-1].target.digest
            for r in reversed(records):
                if r.target.digest != current and r.target.digest not in left:
                    return self._target(name, r.target.digest)
            raise StoreNotFoundError(f"{name}@{alias} has no earlier target to roll back to")

        return self._append(name, alias, "rollback", choose, keys, reason, expires)

    # ---------------------------------------------------------------- resolving

    def resolve(self, ref: str) -> Resolved:
        """What ``"name@alias"``, ``"name:version"`` or a digest names, verified.

        An alias is resolved by verifying its records (signatures at the policy's
        threshold, no gap, no fork, the latest not expired) and, with a client state
        file, that its latest record is not older than one accepted before.
        """
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a string, not {type(ref).__name__}")
        digest = parse_digest(ref)
        if digest is not None:
            size = self.backend.size(_blob_key(digest))
            if size is None:
                raise StoreNotFoundError(f"no blob {digest[:16]}... in {self.url}")
            return Resolved(ref, digest, size, None, None)
        if "@" in ref:
            name, alias = ref.split("@", 1)
            log.check_name(name)
            log.check_name(alias, "alias")
            rec = self._current(name, alias)
            return Resolved(ref, rec.target.digest, rec.target.size, name, rec.target.version, rec)
        if ":" in ref:
            name, version = ref.split(":", 1)
            log.check_name(name)
            log.check_version(version)
            v = self._version_record(name, version)
            if v is None:
                raise StoreNotFoundError(f"no version {version!r} of model {name!r} in {self.url}")
            return Resolved(ref, v.digest, v.size, name, version)
        raise ValueError(f"ref {ref!r}: use name@alias, name:version or sha256:<digest>")

    def _current(self, name: str, alias: str) -> AliasRecord:
        key = StateFile.key(self.url, name, alias)
        floor = self.state.floor(key) if self.state is not None else None
        known = self._tips.get((name, alias))
        anchors = [(int(floor["seq"]), str(floor["record"]))] if floor is not None else []
        if known is not None:
            anchors.append((known.seq, known.record_sha256))
        anchor = max(anchors) if anchors else None
        records, count = self._read_log(name, alias, anchor=anchor)
        latest = records[-1] if records else None
        if anchor is not None and count <= anchor[0]:
            have = f"record {count - 1}" if count else "no records"
            raise FreshnessError(
                f"{name}@{alias}: the store shows {have} as the latest, but "
                f"record {anchor[0]} was accepted before: the alias log was "
                "rolled back, replayed or frozen; refused"
            )
        rec = log.check_current(latest, name, alias, now=self.trust.freshness.time())
        self._tips[(name, alias)] = rec
        self._remember(rec)
        return rec

    def _remember(self, rec: AliasRecord) -> None:
        if self.state is not None:
            self.state.advance(
                StateFile.key(self.url, rec.name, rec.alias), rec.seq, rec.record_sha256
            )

    # ---------------------------------------------------------------- bytes

    def _fetch(self, digest: str, size: int) -> Path:
        key = _blob_key(digest)
        have = self.backend.size(key) if self.cache.get(digest) is None else size
        if have is None:
            raise StoreNotFoundError(f"blob {digest[:16]}... is missing from {self.url}")
        path, _ = self.cache.fetch(
            lambda a, b: self.backend.read_range(key, a, b),
            have,
            expected=digest,
            what=f"{self.url}/{key}",
        )
        return path

    def pull(self, ref: str, dest: str | os.PathLike[str] | None = None) -> Path:
        """Fetch the bundle ``ref`` names into the cache (checked against its digest) and
        return its path there, or a copy written atomically to ``dest``. Verify or load
        the result with the trust policy before use (:meth:`load` does)."""
        r = self.resolve(ref)
        path = self._fetch(r.digest, r.size)
        if dest is None:
            return path
        target = Path(dest)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.",
            suffix=".tmp",
            dir=target.parent if str(target.parent) else ".",
        )
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target

    def load(self, ref: str, **options: Any) -> Model:
        """Resolve ``ref``, fetch the bundle (cached by digest, hashed as it arrives) and
        :func:`bundle.load` it under the store's trust policy; ``options`` (device,
        zero_copy, ...) pass through. The bundle's signed name and version must be the
        ones the version or alias record names."""
        r = self.resolve(ref)
        path = self._fetch(r.digest, r.size)
        model = api.load(path, trust=self.trust, **options)
        if r.name is not None and r.version is not None:
            m = model.manifest.model
            _check_binding(m.name, m.version, r.name, r.version, r.digest)
        return model

    def restore(
        self, ref: str, model: Any, optimizer: Any = None, scheduler: Any = None, **options: Any
    ) -> VerifyReport:
        """:func:`bundle.restore` the training state of the bundle ``ref`` names into
        ``model`` (and ``optimizer``, ``scheduler``), verified as :meth:`load` does."""
        r = self.resolve(ref)
        path = self._fetch(r.digest, r.size)
        report = api.restore(path, model, optimizer, scheduler, trust=self.trust, **options)
        if r.name is not None and r.version is not None:
            m = report.manifest.model
            _check_binding(m.name, m.version, r.name, r.version, r.digest)
        return report

    # ---------------------------------------------------------------- housekeeping

    def gc(self, *, grace: float = GC_GRACE_SECONDS, dry_run: bool = False) -> GcReport:
        """Delete blobs that no version record and no alias record references.

        Blobs younger than ``grace`` seconds are kept (a push in progress uploads the
        blob before its version record), as are blobs whose age the backend cannot
        tell. Stale temporary files of interrupted local writes go too. Records are
        never deleted.
        """
        referenced: set[str] = set()
        for name in self.names():
            referenced.update(v.digest for v in self.versions(name))
            for alias in self.aliases(name):
                referenced.update(self._targets_named(name, alias))
        deleted, young, kept = [], [], 0
        now = time.time()
        for digest in self.backend.listdir("blobs/sha256"):
            if digest in referenced:
                kept += 1
                continue
            if parse_digest(digest) is None:
                continue  # not a blob this store wrote: leave it
            modified = self.backend.modified(_blob_key(digest))
            if modified is None or now - modified < grace:
                young.append(digest)
                continue
            deleted.append(digest)
        temporaries = self.backend.stale_temporaries(grace)
        if not dry_run:
            for digest in deleted:
                self.backend.delete(_blob_key(digest))
            for key in temporaries:
                self.backend.delete(key)
        return GcReport(tuple(deleted), kept, tuple(young), tuple(temporaries))

    def _targets_named(self, name: str, alias: str) -> set[str]:
        """Digests an alias's records name, read without verifying: a forged record can
        only make gc keep a blob, never delete one. A record that cannot be read stops gc."""
        folder = _alias_dir(name, alias)
        out: set[str] = set()
        for obj in self.backend.listdir(folder):
            data = self.backend.read(f"{folder}/{obj}", log.MAX_RECORD_BYTES)
            try:
                env = json.loads(data or b"")
                pred = json.loads(base64.b64decode(env["payload"]))["predicate"]
                out.add(str(pred["target"]["digest"]))
                if pred.get("previous"):
                    out.add(str(pred["previous"]["digest"]))
            except Exception as e:  # any malformation: refuse to guess what is referenced
                raise StoreError(
                    f"gc: cannot read {self.url}/{folder}/{obj} ({e}); nothing was deleted"
                ) from e
        return out

    def _check_marker(self, *, create: bool) -> None:
        data = self.backend.read(MARKER, MAX_VERSION_BYTES)
        if data is None and create:
            body = canonical_json.dumps({"format": STORE_FORMAT})
            if self.backend.create(MARKER, body):
                return
            data = self.backend.read(MARKER, MAX_VERSION_BYTES)
        if data is None:
            return
        try:
            doc = json.loads(data)
            ok = isinstance(doc, dict) and doc.get("format") == STORE_FORMAT
        except ValueError:
            ok = False
        if not ok:
            raise StoreError(
                f"{self.url}/{MARKER} is not a {STORE_FORMAT} marker: this "
                "release cannot write to that store"
            )


def _log_gap(name: str, alias: str, seq: int) -> StoreLogError:
    """A record listed a moment ago and gone now: deleted under our feet."""
    return StoreLogError(
        f"{name}@{alias}: record {seq} was listed but cannot be read: records were deleted"
    )


def _check_binding(have_name: str, have_version: str, name: str, version: str, digest: str) -> None:
    if (have_name, have_version) != (name, version):
        raise IntegrityError(
            f"the store records {digest[:16]}... as {name}:{version}, but "
            f"the signed bundle is {have_name!r} v{have_version}; refused"
        )


def _keys(signing_key: Any, passphrase: bytes | None) -> list[signing.PrivateKey]:
    items = list(signing_key) if isinstance(signing_key, (list, tuple)) else [signing_key]
    if not items or any(k is None for k in items):
        raise KeyFileError("no signing key given: alias records are signed")
    return [signing.load_private_key(k, passphrase) for k in items]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_sort_key(version: str) -> tuple[int, tuple[int, ...], str]:
    from ..format.versions import parse_version

    try:
        return 0, parse_version(version), version
    except ValueError:
        return 1, (), version
