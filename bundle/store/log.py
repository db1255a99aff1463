"""The signed alias log: records, their DSSE signatures, and their verification.

An alias (``production``, ``staging``...) of a model name is an append-only
sequence of records, seq 0, 1, 2...; each names the target the alias points at
from then on, the target before it, and the SHA-256 of the record before it, so
the records form one hash chain. Each record is an in-toto Statement (predicate
:data:`PREDICATE_TYPE`) in a DSSE envelope signed with the same keys as bundles.
spec/STORE.md is the normative description.

Everything here is free of I/O, as python-tuf's ``trusted_metadata_set`` is: the
store reads bytes and hands them in; this module says whether they form a log
the trust policy accepts, and raises a named error when they do not.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    FormatError,
    FreshnessError,
    SignatureError,
    StoreLogError,
    StoreNotFoundError,
)
from ..format import canonical_json
from ..format.versions import format_time, parse_time
from ..trust import dsse, signing

__all__ = [
    "MAX_REASON_CHARS",
    "MAX_RECORD_BYTES",
    "NAME_PATTERN",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "SEQ_DIGITS",
    "VERSION_PATTERN",
    "AliasRecord",
    "Target",
    "build_record",
    "check_current",
    "check_listing",
    "check_name",
    "check_version",
    "record_key",
    "seq_of_key",
    "sign_record",
    "verify_chain",
]

PAYLOAD_TYPE = dsse.PAYLOAD_TYPE
"""DSSE payload type: the record is an in-toto Statement v1."""
PREDICATE_TYPE = "https://model-bundle.dev/store/alias-record/v1"
"""What makes a record an alias record and nothing else: a bundle signature (predicate
``https://model_signing/signature/v1.0``) can never pass for one, nor the reverse."""
MAX_RECORD_BYTES = 64 << 10
MAX_REASON_CHARS = 1024
SEQ_DIGITS = 12
"""Sequence numbers are written zero-padded, so listing order is sequence order."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Model names and alias names: one path segment of a store key, never ``.``/``..``."""
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECORD_KEY = re.compile(rf"[0-9]{{{SEQ_DIGITS}}}\.json")
_ACTIONS = ("promote", "rollback")


def check_name(value: object, what: str = "name") -> str:
    """A model or alias name usable as a key segment, or ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 of A-Z a-z 0-9 . _ - and start with a letter or digit"
        )
    return value


def check_version(value: object) -> str:
    """A version usable as a key segment, or ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"version must be a string, not {type(value).__name__}")
    if not VERSION_PATTERN.fullmatch(value):
        raise ValueError(
            f"version {value!r} must be 1-64 of A-Z a-z 0-9 . _ + - and start "
            "with a letter or digit"
        )
    return value


def record_key(seq: int) -> str:
    """The object name of record ``seq`` inside its alias folder."""
    return f"{seq:0{SEQ_DIGITS}d}.json"


def seq_of_key(name: str) -> int | None:
    """The sequence number an object name in an alias folder carries, or None."""
    return int(name[:SEQ_DIGITS]) if _RECORD_KEY.fullmatch(name) else None


@dataclass(frozen=True)
class Target:
    """What an alias points at: a stored bundle, by digest, with its version and size."""

    digest: str
    version: str
    size: int

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.digest):
            raise ValueError(f"digest must be 64 lowercase hex digits, not {self.digest!r}")
        check_version(self.version)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative int, not {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"digest": self.digest, "version": self.version, "size": self.size}


@dataclass(frozen=True)
class AliasRecord:
    """One verified record of an alias log."""

    name: str
    alias: str
    seq: int
    action: str
    target: Target
    previous: Target | None
    previous_record: str | None
    time: str
    reason: str
    expires: str | None
    signers: tuple[str, ...]
    """The trusted key ids whose signatures counted."""
    record_sha256: str
    """SHA-256 of the record object's bytes: what the next record's ``previous_record`` names."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``)."""
        return {
            "name": self.name,
            "alias": self.alias,
            "seq": self.seq,
            "action": self.action,
            "target": self.target.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
            "previous_record": self.previous_record,
            "time": self.time,
            "reason": self.reason,
            "expires": self.expires,
            "signers": list(self.signers),
            "record_sha256": self.record_sha256,
        }


# --------------------------------------------------------------------------- writing


def build_record(
    name: str,
    alias: str,
    seq: int,
    action: str,
    target: Target,
    previous: AliasRecord | None,
    *,
    time: dt.datetime,
    reason: str = "",
    expires: str | None = None,
) -> bytes:
    """The canonical Statement bytes of record ``seq``, chained onto ``previous``."""
    check_name(name)
    check_name(alias, "alias")
    if action not in _ACTIONS:
        raise ValueError(f"action must be one of {_ACTIONS}, not {action!r}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason must be a string of at most {MAX_REASON_CHARS} characters")
    if (previous is None) != (seq == 0) or (previous is not None and previous.seq != seq - 1):
        raise ValueError("record seq must follow the previous record")
    if expires is not None:
        expires = format_time(expires)
    predicate = {
        "name": name,
        "alias": alias,
        "seq": seq,
        "action": action,
        "target": target.to_dict(),
        "previous": None if previous is None else previous.target.to_dict(),
        "previous_record": None if previous is None else previous.record_sha256,
        "time": format_time(time),
        "reason": reason,
        "expires": expires,
    }
    return canonical_json.dumps(
        {
            "_type": dsse.STATEMENT_TYPE,
            "subject": [{"name": f"{name}@{alias}", "digest": {"sha256": target.digest}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
    )


def sign_record(statement: bytes, keys: Sequence[signing.PrivateKey]) -> bytes:
    """A DSSE envelope (canonical JSON) with one signature per key over ``statement``."""
    if not keys:
        raise ValueError("an alias record needs at least one signing key")
    message = dsse.pae(PAYLOAD_TYPE, statement)
    sigs = [
        {"keyid": k.key_id, "sig": base64.b64encode(k.sign(message)).decode("ascii")}
        for k in sorted(keys, key=lambda k: k.key_id)
    ]
    return canonical_json.dumps(
        {
            "payload": base64.b64encode(statement).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": sigs,
        }
    )


# --------------------------------------------------------------------------- verifying


def _b64(value: object, what: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{where}: {what} is not a base64 string", entry=where)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"{where}: {what} is not valid base64", entry=where) from e


def _signed_payload(
    data: bytes,
    trust: signing.TrustStore,
    where: str,
) -> tuple[bytes, tuple[str, ...]]:
    """The payload of a DSSE envelope signed by at least ``trust.threshold`` distinct
    trusted keys, and their ids. Signatures by other keys are ignored, never counted."""
    if len(data) > MAX_RECORD_BYTES:
        raise SignatureError(
            f"{where}: record is {len(data)} bytes, over the {MAX_RECORD_BYTES}-byte limit",
            entry=where,
        )
    try:
        env = canonical_json.loads(data, what=where)
    except FormatError as e:
        raise SignatureError(f"{where}: record is not a JSON DSSE envelope", entry=where) from e
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        raise SignatureError(
            f"{where}: record is not a DSSE envelope (payload, payloadType, signatures)",
            entry=where,
        )
    if env["payloadType"] != PAYLOAD_TYPE:
        raise SignatureError(
            f"{where}: payload type {env['payloadType']!r} is not {PAYLOAD_TYPE!r}", entry=where
        )
    payload = _b64(env["payload"], "payload", where)
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise SignatureError(f"{where}: record is unsigned", entry=where)
    message = dsse.pae(PAYLOAD_TYPE, payload)
    found: dict[str, None] = {}
    for s in sigs:
        if not isinstance(s, dict) or not set(s) <= {"keyid", "sig"}:
            raise SignatureError(f"{where}: malformed signature entry", entry=where)
        sig = _b64(s.get("sig"), "signature", where)
        hint = s.get("keyid")
        for key in trust.keys:
            if key.verify(sig, message):
                if hint not in (None, "", key.key_id):
                    raise SignatureError(
                        f"{where}: a signature names key {str(hint)[:16]} but "
                        f"was made by trusted key {key.key_id[:16]}",
                        entry=where,
                    )
                found[key.key_id] = None
                break
    if len(found) < trust.threshold:
        raise SignatureError(
            f"{where}: alias record is signed by {len(found)} trusted key(s), "
            f"{trust.threshold} required (trusted: "
            f"{', '.join(k[:16] for k in trust.key_ids()) or 'none'})",
            entry=where,
        )
    return payload, tuple(found)


_PREDICATE_KEYS = {
    "name",
    "alias",
    "seq",
    "action",
    "target",
    "previous",
    "previous_record",
    "time",
    "reason",
    "expires",
}


def _target(value: object, where: str) -> Target:
    if not isinstance(value, dict) or set(value) != {"digest", "version", "size"}:
        raise StoreLogError(f"{where}: a target needs exactly digest, version, size", entry=where)
    try:
        return Target(value["digest"], value["version"], value["size"])
    except (TypeError, ValueError) as e:
        raise StoreLogError(f"{where}: malformed target: {e}", entry=where) from e


def _time(value: object, what: str, where: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError(f"{what} is not a string")
        parse_time(value, what)
    except ValueError as e:
        raise StoreLogError(f"{where}: {e}", entry=where) from e
    return value


def _parse_statement(payload: bytes, where: str) -> dict[str, Any]:
    try:
        st = canonical_json.loads(payload, what=where)
    except FormatError as e:
        raise StoreLogError(f"{where}: signed payload is not JSON", entry=where) from e
    if (
        not isinstance(st, dict)
        or set(st) != {"_type", "subject", "predicateType", "predicate"}
        or st["_type"] != dsse.STATEMENT_TYPE
        or st["predicateType"] != PREDICATE_TYPE
    ):
        raise StoreLogError(
            f"{where}: signed payload is not an alias record statement "
            f"(predicate type {PREDICATE_TYPE})",
            entry=where,
        )
    pred = st["predicate"]
    if not isinstance(pred, dict) or set(pred) != _PREDICATE_KEYS:
        raise StoreLogError(
            f"{where}: the predicate needs exactly {sorted(_PREDICATE_KEYS)}", entry=where
        )
    subjects = st["subject"]
    if not (isinstance(subjects, list) and len(subjects) == 1 and isinstance(subjects[0], dict)):
        raise StoreLogError(f"{where}: the statement needs one subject", entry=where)
    pred["_subject"] = subjects[0]
    return pred


def _parse_record(data: bytes, trust: signing.TrustStore, where: str) -> AliasRecord:
    payload, signers = _signed_payload(data, trust, where)
    p = _parse_statement(payload, where)
    seq = p["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise StoreLogError(f"{where}: seq must be a non-negative int", entry=where)
    for field_name in ("name", "alias"):
        if not isinstance(p[field_name], str) or not NAME_PATTERN.fullmatch(p[field_name]):
            raise StoreLogError(f"{where}: malformed {field_name}", entry=where)
    if p["action"] not in _ACTIONS:
        raise StoreLogError(f"{where}: action must be one of {_ACTIONS}", entry=where)
    target = _target(p["target"], where)
    previous = None if p["previous"] is None else _target(p["previous"], where)
    prev_rec = p["previous_record"]
    if prev_rec is not None and not (isinstance(prev_rec, str) and _HEX64.fullmatch(prev_rec)):
        raise StoreLogError(f"{where}: previous_record must be a hex SHA-256", entry=where)
    if (seq == 0) != (previous is None) or (seq == 0) != (prev_rec is None):
        raise StoreLogError(
            f"{where}: only record 0 has no previous target and record", entry=where
        )
    reason = p["reason"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise StoreLogError(f"{where}: malformed reason", entry=where)
    expires = None if p["expires"] is None else _time(p["expires"], "expires", where)
    subject = p["_subject"]
    if subject != {"name": f"{p['name']}@{p['alias']}", "digest": {"sha256": target.digest}}:
        raise StoreLogError(
            f"{where}: the subject is not name@alias with the target digest", entry=where
        )
    return AliasRecord(
        p["name"],
        p["alias"],
        seq,
        p["action"],
        target,
        previous,
        prev_rec,
        _time(p["time"], "time", where),
        reason,
        expires,
        signers,
        hashlib.sha256(data).hexdigest(),
    )


def check_listing(label: str, listed: Sequence[int]) -> None:
    """The sequence numbers a store lists for one alias must be 0..n-1 exactly: a
    deleted record is a gap (:class:`StoreLogError`)."""
    want = list(range(len(listed)))
    if sorted(listed) != want:
        missing = sorted(set(range(max(listed) + 1)) - set(listed))
        raise StoreLogError(
            f"{label}: the log has a gap: record(s) {missing[:5]} of "
            f"0..{max(listed)} missing; records were deleted",
            entry=label,
        )


def verify_chain(
    name: str,
    alias: str,
    records: Sequence[tuple[int, bytes]],
    trust: signing.TrustStore | None,
    *,
    listed: Sequence[int] | None = None,
    anchor: tuple[int, str] | None = None,
    where: str = "",
) -> list[AliasRecord]:
    """Verify consecutive records of one alias log; return them, oldest first.

    ``records`` are (seq, object bytes) as read from the store, in order, from seq 0,
    or from the anchor's seq: ``anchor`` (seq, record SHA-256) is a record already
    trusted (the client state, or a record this process verified), whose bytes must
    hash the same now -- a log rewritten below it is a fork. ``listed`` is every
    seq the store lists: it must be 0..n-1 exactly (a deleted record is a gap), and
    ``records`` must reach its end. Each record must be signed by enough trusted keys
    (:class:`SignatureError` otherwise), sit where its signed content says, and name
    the record before it as ``previous_record`` and that record's target as
    ``previous`` (:class:`StoreLogError` otherwise).
    """
    label = where or f"{name}@{alias}"
    if trust is None:
        raise SignatureError(
            f"{label}: alias records are verified with trusted keys, and the trust policy has none"
        )
    if listed is not None:
        check_listing(label, listed)
    start = anchor[0] if anchor is not None else 0
    out: list[AliasRecord] = []
    prev: AliasRecord | None = None
    for i, (seq, data) in enumerate(records):
        at = f"{label} record {seq}"
        if seq != start + i:
            raise StoreLogError(f"{at}: expected record {start + i}: the log has a gap", entry=at)
        rec = _parse_record(data, trust, at)
        if (rec.name, rec.alias, rec.seq) != (name, alias, seq):
            raise StoreLogError(
                f"{at}: holds record {rec.seq} of {rec.name}@{rec.alias}: a "
                "record moved from elsewhere is refused",
                entry=at,
            )
        if i == 0 and anchor is not None and rec.record_sha256 != anchor[1]:
            raise StoreLogError(
                f"{at}: differs from the record {seq} accepted before "
                f"(SHA-256 {anchor[1][:16]}...): the log was rewritten (a fork)",
                entry=at,
            )
        if prev is not None:
            if rec.previous_record != prev.record_sha256:
                raise StoreLogError(
                    f"{at}: names previous record {str(rec.previous_record)[:16]}"
                    f"..., but record {prev.seq} is {prev.record_sha256[:16]}...:"
                    " a fork or an edited record",
                    entry=at,
                )
            if rec.previous != prev.target:
                raise StoreLogError(
                    f"{at}: its previous target is not record {prev.seq}'s target", entry=at
                )
        out.append(rec)
        prev = rec
    if listed is not None and records and records[-1][0] != len(listed) - 1:
        raise StoreLogError(
            f"{label}: records after {records[-1][0]} were not checked", entry=label
        )
    return out


def check_current(
    latest: AliasRecord | None,
    name: str,
    alias: str,
    *,
    now: dt.datetime,
    floor: Mapping[str, Any] | None = None,
) -> AliasRecord:
    """The alias's current record, refused when missing, expired, or older than the
    client state's ``floor`` ({"seq": n, "record": sha256}) -- a replayed or frozen log."""
    if floor is not None and (latest is None or latest.seq < int(floor["seq"])):
        have = "no records" if latest is None else f"record {latest.seq} as its latest"
        raise FreshnessError(
            f"{name}@{alias}: the store shows {have}, but record "
            f"{floor['seq']} was accepted before: the alias log was rolled "
            "back, replayed or frozen; refused"
        )
    if latest is None:
        raise StoreNotFoundError(f"no alias {alias!r} for model {name!r}")
    if latest.expires is not None and now >= parse_time(latest.expires, "expires"):
        raise FreshnessError(
            f"{name}@{alias}: record {latest.seq} expired at {latest.expires}"
            f" (now {format_time(now)}); promote again to renew it"
        )
    return latest
