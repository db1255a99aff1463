"""The trust policy: one object that says what a deployment accepts.

Every place that decides trust -- ``verify``, ``load``, ``restore``, ``sign``
(countersigning), and the store and server built on them -- takes a
:class:`TrustPolicy`. The keyword shortcuts (``trusted_keys=``, ``threshold=``,
``trusted_roots=``, ``now=``, ``min_version=``, ``rollback_state=``) build one.
A policy cannot exist invalid: a wrong argument value raises ``ValueError`` or
``TypeError`` when it is built, never a signature error later.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..format.versions import parse_time, parse_version
from . import freshness, signing

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["TrustPolicy", "resolve_policy"]


class TrustPolicy:
    """Whom to trust, how many must agree, and how fresh a bundle must be.

    ``keys``: a public key, a ``.pub`` file, a directory of ``.pub`` files (a trust
    store), a :class:`~bundle.TrustStore`, or a list of these. ``roots``: root CA
    certificates (objects, PEM/DER bytes or files) whose chains certify signers.
    ``threshold``: how many distinct trusted keys must have signed (each key counts
    once). ``min_version``: refuse older model versions (dot-separated integers).
    ``rollback_state``: a JSON file recording, per model name, the highest version
    accepted; lower ones are refused (see SECURITY.md). ``now``: the verification
    time (a datetime, naive read as UTC, or an RFC 3339 string), default the clock.
    ``allow_unsigned``: accept a bundle no trusted key signed (integrity is still
    checked); only meaningful without keys or roots.
    """

    __slots__ = ("_freshness", "_store", "allow_unsigned")

    def __init__(
        self,
        keys: signing.TrustedKeys | None = None,
        *,
        roots: Any = None,
        threshold: int = 1,
        min_version: str | None = None,
        rollback_state: str | os.PathLike[str] | None = None,
        now: dt.datetime | str | None = None,
        allow_unsigned: bool = False,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise TypeError(f"threshold must be an int, not {type(threshold).__name__}")
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        if min_version is not None:
            if not isinstance(min_version, str):
                raise TypeError(
                    f"min_version must be a string such as '3' or '1.10.2', "
                    f"not {type(min_version).__name__}"
                )
            try:
                parse_version(min_version)
            except ValueError as e:
                raise ValueError(f"min_version: {e}") from e
        if isinstance(now, str):
            now = parse_time(now, "now")
        elif now is not None and not isinstance(now, dt.datetime):
            raise TypeError(
                f"now must be a datetime or an RFC 3339 UTC string, not {type(now).__name__}"
            )
        if rollback_state is not None and not isinstance(rollback_state, (str, os.PathLike)):
            raise TypeError(f"rollback_state must be a path, not {type(rollback_state).__name__}")
        store = signing.as_trust_store(keys) if keys is not None else None
        anchors = signing.load_roots(roots)
        if anchors:
            store = (
                store.with_roots(anchors)
                if store is not None
                else signing.TrustStore(roots=anchors)
            )
        if store is not None and threshold != 1:
            store = signing.TrustStore(store.keys, threshold=threshold, roots=store.roots)
        elif store is None and threshold != 1:
            raise ValueError("threshold given without trusted keys or roots")
        self._store = store
        self._freshness = freshness.Policy(
            now, min_version, None if rollback_state is None else Path(rollback_state)
        )
        self.allow_unsigned = bool(allow_unsigned)

    @property
    def keys(self) -> tuple[signing.PublicKey, ...]:
        """The trusted public keys (each once)."""
        return self._store.keys if self._store is not None else ()

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trusted root CA certificates."""
        return self._store.roots if self._store is not None else ()

    @property
    def threshold(self) -> int:
        """How many distinct trusted keys must have signed."""
        return self._store.threshold if self._store is not None else 1

    @property
    def min_version(self) -> str | None:
        """The lowest model version accepted, if any."""
        return self._freshness.min_version

    @property
    def rollback_state(self) -> Path | None:
        """The rollback record file, if any."""
        rs = self._freshness.rollback_state
        return None if rs is None else Path(rs)

    @property
    def now(self) -> dt.datetime | None:
        """The fixed verification time, or None for the clock."""
        now = self._freshness.now
        return now if isinstance(now, dt.datetime) else None

    @property
    def trust_store(self) -> signing.TrustStore | None:
        """The keys, roots and threshold as the signature checks use them."""
        return self._store

    @property
    def freshness(self) -> freshness.Policy:
        """The clock, version floor and rollback record as the freshness checks use them."""
        return self._freshness

    def key_ids(self) -> list[str]:
        """The ids of the trusted keys."""
        return [k.key_id for k in self.keys]

    def __repr__(self) -> str:
        parts = [f"keys={[k[:16] for k in self.key_ids()]}"]
        if self.roots:
            parts.append(f"roots={len(self.roots)}")
        parts.append(f"threshold={self.threshold}")
        for name in ("min_version", "rollback_state", "now"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        if self.allow_unsigned:
            parts.append("allow_unsigned=True")
        return f"TrustPolicy({', '.join(parts)})"


def resolve_policy(
    trust: TrustPolicy | None,
    *,
    trusted_keys: Any = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    rollback_state: str | os.PathLike[str] | None = None,
) -> TrustPolicy:
    """``trust=``, or the policy the keyword shortcuts describe; not both."""
    shortcuts: Iterable[tuple[str, Any]] = (
        ("trusted_keys", trusted_keys),
        ("threshold", threshold),
        ("trusted_roots", trusted_roots),
        ("now", now),
        ("min_version", min_version),
        ("rollback_state", rollback_state),
    )
    if trust is not None:
        given = [name for name, value in shortcuts if value is not None]
        if allow_unsigned:
            given.append("allow_unsigned")
        if given:
            raise TypeError(f"give trust= or {', '.join(given)}, not both")
        if not isinstance(trust, TrustPolicy):
            raise TypeError(f"trust must be a bundle.TrustPolicy, not {type(trust).__name__}")
        return trust
    return TrustPolicy(
        trusted_keys,
        roots=trusted_roots,
        threshold=1 if threshold is None else threshold,
        min_version=min_version,
        rollback_state=rollback_state,
        now=now,
        allow_unsigned=allow_unsigned,
    )
