"""TrustPolicy: one object for whom to trust, accepted wherever trust is decided."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from helpers import save_tiny

import bundle
from bundle.errors import FreshnessError, SignatureError


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="module")
def other() -> bundle.PrivateKey:
    return bundle.generate_key("ed25519")


def test_policy_normalises_what_it_is_given(
    tmp_path: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    key.save(tmp_path / "a")
    other.save(tmp_path / "b")
    policy = bundle.TrustPolicy(
        tmp_path,
        threshold=2,
        min_version="1.2",
        rollback_state=str(tmp_path / "seen.json"),
        now="2030-01-01T00:00:00Z",
    )
    assert sorted(policy.key_ids()) == sorted([key.key_id, other.key_id])
    assert policy.threshold == 2
    assert policy.min_version == "1.2"
    assert policy.rollback_state == tmp_path / "seen.json"
    assert policy.now == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    assert not policy.allow_unsigned
    assert "threshold=2" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"threshold": 0}, ValueError, "at least 1"),
        ({"threshold": 2}, ValueError, "distinct"),
        ({"threshold": True}, TypeError, "int"),
        ({"threshold": "2"}, TypeError, "int"),
        ({"min_version": "latest"}, ValueError, "min_version"),
        ({"min_version": 3}, TypeError, "min_version"),
        ({"now": "yesterday"}, ValueError, "now"),
        ({"now": 1893456000}, TypeError, "now"),
        ({"rollback_state": 5}, TypeError, "rollback_state"),
    ],
)
def test_a_wrong_argument_is_the_callers_error(
    key: bundle.PrivateKey, kwargs: dict[str, object], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        bundle.TrustPolicy(key.public_key, **kwargs)  # type: ignore[arg-type]


def test_threshold_without_anyone_to_trust_is_refused() -> None:
    with pytest.raises(ValueError, match="without trusted keys"):
        bundle.TrustPolicy(threshold=2)


def test_verify_load_restore_and_sign_take_a_policy(
    tmp_path: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "m.mbundle", key, version="3")
    policy = bundle.TrustPolicy(key.public_key, min_version="3")
    assert bundle.verify(path, trust=policy).signers[0].key_id == key.key_id
    model = bundle.load(path, trust=policy)
    assert model.predict(np.ones((2, 4), np.float32)).shape[0] == 2
    with pytest.raises(FreshnessError, match="minimum version 4"):
        bundle.verify(path, trust=bundle.TrustPolicy(key.public_key, min_version="4"))
    with pytest.raises(SignatureError):
        bundle.verify(path, trust=bundle.TrustPolicy(other.public_key))
    # countersigning under a policy: the bundle must already verify against it
    with pytest.raises(SignatureError):
        bundle.sign(path, other, trust=bundle.TrustPolicy(other.public_key))
    bundle.sign(path, other, trust=policy)
    both = bundle.TrustPolicy([key.public_key, other.public_key], threshold=2)
    assert len(bundle.verify(path, trust=both).signers) == 2


def test_policy_and_shortcuts_are_not_mixed(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "m.mbundle", key)
    policy = bundle.TrustPolicy(key.public_key)
    for extra in (
        {"trusted_keys": key.public_key},
        {"threshold": 1},
        {"min_version": "1"},
        {"allow_unsigned": True},
    ):
        with pytest.raises(TypeError, match="not both"):
            bundle.verify(path, trust=policy, **extra)
    with pytest.raises(TypeError, match="TrustPolicy"):
        bundle.load(path, trust=key.public_key)  # type: ignore[arg-type]


def test_unsigned_needs_saying_so(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "u.mbundle", None)
    with pytest.raises(SignatureError, match="no trusted keys"):
        bundle.verify(path, trust=bundle.TrustPolicy())
    report = bundle.verify(path, trust=bundle.TrustPolicy(allow_unsigned=True))
    assert not report.verified


def test_keys_may_be_given_as_pem_bytes(
    tmp_path: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    """How keys travel to batch workers: one PEM, or a list mixing PEM and keys."""
    path = save_tiny(tmp_path / "m.mbundle", key)
    assert bundle.verify(path, trusted_keys=key.public_key.pem()).signers[0].key_id == key.key_id
    mixed = bundle.TrustPolicy([other.public_key, key.public_key.pem()])
    assert sorted(mixed.key_ids()) == sorted([key.key_id, other.key_id])
    with pytest.raises(SignatureError):
        bundle.verify(path, trusted_keys=other.public_key.pem())
    with pytest.raises(bundle.KeyFileError, match="not a PEM/DER public key"):
        bundle.TrustPolicy(b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
    two = key.public_key.pem() + other.public_key.pem()
    with pytest.raises(bundle.KeyFileError, match="holds 2 PEM blocks"):
        bundle.TrustPolicy(two)  # never the first key only, silently
    with pytest.raises(TypeError, match="PEM bytes or paths, not int"):
        bundle.TrustPolicy([key.public_key, 7])  # type: ignore[list-item]
