"""The alias-log rules on bytes alone (no store, no I/O): a table of bad records, each
refused with its named error, and the good chain accepted."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

import bundle
from bundle.store import log
from bundle.trust import dsse

KEY = bundle.generate_key()
OTHER = bundle.generate_key()
TRUST = bundle.TrustStore([KEY.public_key])
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TARGETS = [
    log.Target(hashlib.sha256(bytes([i])).hexdigest(), str(i + 1), 100 + i) for i in range(3)
]


def _chain(n: int = 3, **kw: Any) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    prev = None
    for seq in range(n):
        data = log.sign_record(
            log.build_record("m", "prod", seq, "promote", TARGETS[seq % 3], prev, time=T0, **kw),
            [KEY],
        )
        prev = log.verify_chain(
            "m", "prod", [(seq, data)], TRUST, anchor=(seq, hashlib.sha256(data).hexdigest())
        )[0]
        out.append((seq, data))
    return out


def _statement(data: bytes) -> dict[str, Any]:
    statement: dict[str, Any] = json.loads(base64.b64decode(json.loads(data)["payload"]))
    return statement


def _resign(statement: dict[str, Any], keys: Any = (KEY,)) -> bytes:
    from bundle.format import canonical_json

    return log.sign_record(canonical_json.dumps(statement), list(keys))


def test_a_good_chain_verifies() -> None:
    records = log.verify_chain("m", "prod", _chain(), TRUST, listed=[0, 1, 2])
    assert [r.target for r in records] == TARGETS
    assert records[2].previous_record == records[1].record_sha256
    assert records[0].signers == (KEY.key_id,)


def _edit(seq: int, change: Callable[[dict[str, Any]], None]) -> Callable[[list[Any]], None]:
    def apply(chain: list[tuple[int, bytes]]) -> None:
        st = _statement(chain[seq][1])
        change(st)
        chain[seq] = (seq, _resign(st))

    return apply


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(st: dict[str, Any]) -> None:
        node = st
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _raw(seq: int, data: bytes) -> Callable[[list[Any]], None]:
    def apply(chain: list[tuple[int, bytes]]) -> None:
        chain[seq] = (seq, data)

    return apply


def _flip_payload(chain: list[tuple[int, bytes]]) -> None:
    env = json.loads(chain[1][1])
    st = json.loads(base64.b64decode(env["payload"]))
    st["predicate"]["reason"] = "x"
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    chain[1] = (1, json.dumps(env).encode())


def _unsigned(chain: list[tuple[int, bytes]]) -> None:
    env = json.loads(chain[1][1])
    env["signatures"] = []
    chain[1] = (1, json.dumps(env).encode())


def _untrusted(chain: list[tuple[int, bytes]]) -> None:
    """The same statement, signed by a key nobody trusts."""
    payload = base64.b64decode(json.loads(chain[1][1])["payload"])
    chain[1] = (1, log.sign_record(payload, [OTHER]))


def _other_payload_type(chain: list[tuple[int, bytes]]) -> None:
    env = json.loads(chain[1][1])
    env["payloadType"] = "application/json"
    chain[1] = (1, json.dumps(env).encode())


def _bundle_signature_as_record(chain: list[tuple[int, bytes]]) -> None:
    """A valid OMS bundle signature (another predicate type) is never a record."""
    st = dsse.build_statement("m", [("manifest.json", "0" * 64)])
    chain[1] = (1, log.sign_record(st, [KEY]))


BAD: list[tuple[str, Callable[[list[Any]], None], type[Exception], str]] = [
    ("unsigned", _unsigned, bundle.SignatureError, "unsigned"),
    ("untrusted key", _untrusted, bundle.SignatureError, "0 trusted"),
    ("edited payload", _flip_payload, bundle.SignatureError, "0 trusted"),
    ("not JSON", _raw(1, b"\x00garbage"), bundle.SignatureError, "not a JSON"),
    ("other payload type", _other_payload_type, bundle.SignatureError, "payload type"),
    ("bundle signature", _bundle_signature_as_record, bundle.StoreLogError, "alias record"),
    (
        "wrong seq inside",
        _edit(1, _set("predicate.seq", 5)),
        bundle.StoreLogError,
        "moved from elsewhere",
    ),
    (
        "wrong alias inside",
        _edit(1, _set("predicate.alias", "staging")),
        bundle.StoreLogError,
        "subject",
    ),
    (
        "previous_record",
        _edit(2, _set("predicate.previous_record", "0" * 64)),
        bundle.StoreLogError,
        "fork or an edited",
    ),
    (
        "previous target",
        _edit(2, _set("predicate.previous", TARGETS[2].to_dict())),
        bundle.StoreLogError,
        "previous target",
    ),
    (
        "subject digest",
        _edit(1, _set("subject", [{"name": "m@prod", "digest": {"sha256": "1" * 64}}])),
        bundle.StoreLogError,
        "subject",
    ),
    ("extra key", _edit(1, _set("predicate.extra", 1)), bundle.StoreLogError, "exactly"),
    ("bad action", _edit(1, _set("predicate.action", "delete")), bundle.StoreLogError, "action"),
    ("bad time", _edit(1, _set("predicate.time", "yesterday")), bundle.StoreLogError, "time"),
    (
        "record 0 with previous",
        _edit(0, _set("predicate.previous", TARGETS[1].to_dict())),
        bundle.StoreLogError,
        "only record 0",
    ),
    ("too large", _raw(1, b" " * (log.MAX_RECORD_BYTES + 1)), bundle.SignatureError, "limit"),
]


@pytest.mark.parametrize(("how", "error", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_records_are_refused(
    how: Callable[[list[Any]], None], error: type[Exception], match: str
) -> None:
    chain = _chain()
    how(chain)
    with pytest.raises(error, match=match):
        log.verify_chain("m", "prod", chain, TRUST, listed=[0, 1, 2])


def test_threshold_counts_distinct_trusted_keys() -> None:
    two = bundle.TrustStore([KEY.public_key, OTHER.public_key], threshold=2)
    st = log.build_record("m", "prod", 0, "promote", TARGETS[0], None, time=T0)
    with pytest.raises(bundle.SignatureError, match="1 trusted key"):
        log.verify_chain("m", "prod", [(0, log.sign_record(st, [KEY, KEY]))], two)
    rec = log.verify_chain("m", "prod", [(0, log.sign_record(st, [KEY, OTHER]))], two)[0]
    assert set(rec.signers) == {KEY.key_id, OTHER.key_id}


def test_gap_anchor_and_freshness() -> None:
    chain = _chain()
    with pytest.raises(bundle.StoreLogError, match="gap"):
        log.verify_chain("m", "prod", [chain[0], chain[2]], TRUST, listed=[0, 2])
    records = log.verify_chain("m", "prod", chain, TRUST)
    with pytest.raises(bundle.StoreLogError, match="rewritten"):
        log.verify_chain("m", "prod", chain[1:], TRUST, anchor=(1, "0" * 64))
    assert (
        log.verify_chain("m", "prod", chain[1:], TRUST, anchor=(1, records[1].record_sha256))[-1]
        == records[2]
    )
    with pytest.raises(bundle.FreshnessError, match="replayed or frozen"):
        log.check_current(records[1], "m", "prod", now=T0, floor={"seq": 2, "record": "x"})
    with pytest.raises(bundle.StoreNotFoundError):
        log.check_current(None, "m", "prod", now=T0)
    expiring = _chain(1, expires="2026-06-01T00:00:00Z")
    rec = log.verify_chain("m", "prod", expiring, TRUST)[0]
    assert log.check_current(rec, "m", "prod", now=T0) == rec
    with pytest.raises(bundle.FreshnessError, match="expired"):
        log.check_current(rec, "m", "prod", now=T0 + dt.timedelta(days=365))
