"""Keys: generation, files, passphrases, key ids, deterministic signatures, trust stores."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import read_entries, rewrite, save_tiny

import bundle
from bundle.errors import KeyFileError, SignatureError
from bundle.format import canonical_json as _json
from bundle.trust import dsse, signing

KEY_TYPES = ["ecdsa-p256", "ed25519"]


@pytest.mark.parametrize("key_type", [*KEY_TYPES, "ecdsa-p384", "ecdsa-p521"])
def test_generate(key_type: str) -> None:
    k = bundle.generate_key(key_type)
    assert k.public_key.key_type == key_type
    msg = b"message"
    assert k.public_key.verify(k.sign(msg), msg)
    assert not k.public_key.verify(k.sign(msg), b"other message")
    assert k.key_id != bundle.generate_key(key_type).key_id


def test_default_key_type_is_p256() -> None:
    assert bundle.generate_key().public_key.key_type == "ecdsa-p256"


def test_unknown_key_type() -> None:
    with pytest.raises(KeyFileError, match="unknown key type"):
        bundle.generate_key("rsa-2048")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_save_writes_private_0600_and_public(tmp_path: Path, key_type: str) -> None:
    k = bundle.generate_key(key_type)
    key_path, pub_path = k.save(tmp_path / "signer")
    assert key_path == tmp_path / "signer.key"
    assert pub_path == tmp_path / "signer.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes()
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert bundle.load_private_key(key_path).key_id == k.key_id
    assert bundle.load_public_key(pub_path).key_id == k.key_id
    assert bundle.load_public_key(pub_path) == k.public_key


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    k = bundle.generate_key()
    key_path, _ = k.save(tmp_path / "k")
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        bundle.generate_key().save(tmp_path / "k")
    assert key_path.read_bytes() == before
    k2 = bundle.generate_key()
    k2.save(tmp_path / "k", overwrite=True)
    assert bundle.load_private_key(key_path).key_id == k2.key_id
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_overwrite_never_exposes_the_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overwriting a world-readable file: its mode is 0600 before the key is written."""
    import os

    key_path = tmp_path / "k.key"
    key_path.write_bytes(b"old")
    key_path.chmod(0o644)
    modes: list[int] = []
    real_fdopen = os.fdopen

    class Spy:
        def __init__(self, f: IO[Any]) -> None:
            self.f = f

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            modes.append(stat.S_IMODE(key_path.stat().st_mode))
            return self.f.write(data)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Spy(real_fdopen(fd, *a, **k)))
    bundle.generate_key().save(tmp_path / "k", overwrite=True)
    monkeypatch.undo()
    assert modes == [0o600]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_passphrase(tmp_path: Path, key_type: str) -> None:
    k = bundle.generate_key(key_type)
    key_path, _ = k.save(tmp_path / "enc", passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()
    with pytest.raises(KeyFileError, match="passphrase"):
        bundle.load_private_key(key_path)
    with pytest.raises(KeyFileError, match="passphrase"):
        bundle.load_private_key(key_path, b"wrong")
    assert bundle.load_private_key(key_path, b"correct horse").key_id == k.key_id
    # and the other way round: a plain key given a passphrase
    plain, _ = k.save(tmp_path / "plain")
    with pytest.raises(KeyFileError, match="not encrypted"):
        bundle.load_private_key(plain, b"correct horse")


def test_passphrase_through_save(tmp_path: Path) -> None:
    k = bundle.generate_key()
    key_path, pub = k.save(tmp_path / "enc", passphrase=b"pw")
    with pytest.raises(KeyFileError):
        save_tiny(tmp_path / "t.mbundle", str(key_path))
    save_tiny(tmp_path / "t.mbundle", str(key_path), passphrase=b"pw")
    assert bundle.verify(tmp_path / "t.mbundle", trusted_keys=pub).signers[0].key_id == k.key_id


def test_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        bundle.load_private_key(tmp_path / "missing.key")
    with pytest.raises(KeyFileError):
        bundle.load_public_key(tmp_path / "missing.pub")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError):
        bundle.load_public_key(junk)
    with pytest.raises(KeyFileError):
        bundle.load_private_key(junk)
    big = tmp_path / "big.pub"
    big.write_bytes(b"x" * (signing.MAX_KEY_FILE + 1))
    with pytest.raises(KeyFileError, match="too large"):
        bundle.load_public_key(big)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_id_is_sha256_of_spki_pem(tmp_path: Path, key_type: str) -> None:
    k = bundle.generate_key(key_type)
    _, pub = k.save(tmp_path / "k")
    spki = k.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub.read_bytes() == spki
    assert k.key_id == hashlib.sha256(spki).hexdigest()
    assert k.public_key.key_id == k.key_id
    # the same key read from DER has the same id
    der = k.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert bundle.load_public_key(der).key_id == k.key_id


def test_ecdsa_signatures_are_deterministic() -> None:
    """RFC 6979: the same key over the same bytes gives the same signature."""
    k = bundle.generate_key("ecdsa-p256")
    msg = dsse.pae(dsse.PAYLOAD_TYPE, b'{"hello":"world"}')
    s1, s2 = k.sign(msg), k.sign(msg)
    assert s1 == s2
    assert k.sign(msg + b"!") != s1
    assert k.public_key.verify(s1, msg)
    # the key read back from its PEM signs identically
    again = bundle.load_private_key(k.private_pem())
    assert again.sign(msg) == s1


def test_signed_statement_is_deterministic() -> None:
    k = bundle.generate_key("ecdsa-p256")
    statement = dsse.build_statement("m", [("b", "1" * 64), ("a", "2" * 64)])
    assert dsse.sign_statement(statement, k) == dsse.sign_statement(statement, k)
    assert dsse.parse_statement(statement, "s") == [("a", "2" * 64), ("b", "1" * 64)]


@pytest.mark.parametrize("key_type", [*KEY_TYPES, "ecdsa-p384"])
def test_malformed_signature_bytes_do_not_verify(key_type: str) -> None:
    """Garbage where a signature should be: False, never an exception."""
    k = bundle.generate_key(key_type)
    good = k.sign(b"m")
    for sig in (
        b"",
        b"\0",
        b"\x30",
        b"\x30\x06\x02\x01\x01\x02\x01\x01",
        good[:-1],
        good + b"\0",
        bytes(64),
        b"\xff" * 64,
        b"\x30" + good[1:],
    ):
        if sig == good:
            continue
        assert k.public_key.verify(sig, b"m") is False


def test_pae_matches_the_dsse_spec() -> None:
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_trust_store_from_a_directory(tmp_path: Path) -> None:
    keys = [bundle.generate_key(t) for t in ("ecdsa-p256", "ed25519", "ecdsa-p256")]
    for i, k in enumerate(keys):
        k.save(tmp_path / f"k{i}")
    (tmp_path / "k0.pub.bak").write_bytes(b"not a key")  # only *.pub files are read
    (tmp_path / "notes.txt").write_text("ignored")
    store = bundle.TrustStore.from_paths([tmp_path])
    assert sorted(store.key_ids()) == sorted(k.key_id for k in keys)
    assert store.threshold == 1
    assert bundle.TrustStore.from_paths([tmp_path], threshold=3).threshold == 3
    with pytest.raises(ValueError, match="threshold"):
        bundle.TrustStore.from_paths([tmp_path], threshold=4)
    with pytest.raises(ValueError, match="threshold"):
        bundle.TrustStore.from_paths([tmp_path], threshold=0)
    # a directory and one of its files: the key is counted once
    both = bundle.TrustStore.from_paths([tmp_path, tmp_path / "k1.pub"])
    assert len(both.keys) == 3


def test_trust_store_refusals(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match=r"no \.pub files"):
        bundle.TrustStore.from_paths([empty])
    with pytest.raises(ValueError, match="no trusted keys"):
        bundle.TrustStore([])
    (empty / "bad.pub").write_bytes(b"garbage")
    with pytest.raises(KeyFileError):
        bundle.TrustStore.from_paths([empty])


def _write_pem(
    path: Path,
    key: ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ec.EllipticCurvePublicKey
    | rsa.RSAPublicKey,
) -> Path:
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        data = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    path.write_bytes(data)
    return path


def test_unsupported_curve_secp256k1(tmp_path: Path) -> None:
    k = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(KeyFileError, match="secp256k1"):
        bundle.load_private_key(_write_pem(tmp_path / "k1.key", k))
    with pytest.raises(KeyFileError, match="secp256k1"):
        bundle.load_public_key(_write_pem(tmp_path / "k1.pub", k.public_key()))
    with pytest.raises(KeyFileError):
        bundle.TrustStore.from_paths([tmp_path])
    with pytest.raises(KeyFileError):
        bundle.PrivateKey(k)


def test_rsa_is_refused(tmp_path: Path) -> None:
    k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyFileError, match=r"RSA|rsa"):
        bundle.load_private_key(_write_pem(tmp_path / "r.key", k))
    with pytest.raises(KeyFileError, match=r"RSA|rsa"):
        bundle.load_public_key(_write_pem(tmp_path / "r.pub", k.public_key()))


def _envelope_with_hint(signer: bundle.PrivateKey, hint: str) -> bytes:
    statement = dsse.build_statement("m", [("a", "1" * 64)])
    env = json.loads(dsse.sign_statement(statement, signer))
    env["verificationMaterial"]["publicKey"]["hint"] = hint
    env["dsseEnvelope"]["signatures"][0]["keyid"] = hint
    return _json.dumps(env)


def test_hint_naming_another_key_is_refused() -> None:
    signer, named = bundle.generate_key(), bundle.generate_key()
    env = dsse.parse_envelope(_envelope_with_hint(signer, named.key_id), "s")
    assert env.hint == named.key_id
    trust = bundle.TrustStore([signer.public_key, named.public_key])
    with pytest.raises(SignatureError, match="mismatched key id"):
        dsse.verify_envelope(env, trust, "s")
    # with the right hint the same signature verifies
    ok = dsse.parse_envelope(_envelope_with_hint(signer, signer.key_id), "s")
    assert dsse.verify_envelope(ok, trust, "s") == signer.public_key
    # an untrusted signer is not an error here, just no key
    assert dsse.verify_envelope(ok, bundle.TrustStore([named.public_key]), "s") is None


def test_keyid_and_hint_must_agree() -> None:
    k = bundle.generate_key()
    env = json.loads(_envelope_with_hint(k, k.key_id))
    env["dsseEnvelope"]["signatures"][0]["keyid"] = "f" * 64
    with pytest.raises(SignatureError, match="disagree"):
        dsse.parse_envelope(_json.dumps(env), "s")
    env["verificationMaterial"]["publicKey"]["hint"] = "not-hex"
    with pytest.raises(SignatureError, match="hint"):
        dsse.parse_envelope(_json.dumps(env), "s")


def test_hint_naming_another_key_in_a_bundle(tmp_path: Path) -> None:
    """Signed by the trusted key, stored as the signature of another (trusted) key."""
    signer, named = bundle.generate_key(), bundle.generate_key("ed25519")
    path = save_tiny(tmp_path / "t.mbundle", signer)
    entries = read_entries(path)
    data = entries.pop(f"signatures/{signer.key_id}.sig")
    env = json.loads(data)
    env["verificationMaterial"]["publicKey"]["hint"] = named.key_id
    env["dsseEnvelope"]["signatures"][0]["keyid"] = named.key_id
    trust = bundle.TrustStore([signer.public_key, named.public_key])
    # under the named key's entry name: the signature verifies with another key
    entries[f"signatures/{named.key_id}.sig"] = _json.dumps(env)
    bad = rewrite(path, tmp_path / "hint.mbundle", entries)
    with pytest.raises(SignatureError, match="mismatched key id"):
        bundle.verify(bad, trusted_keys=trust)
    with pytest.raises(SignatureError):
        bundle.load(bad, trusted_keys=trust, device="cpu")
    # under the signer's own entry name: the name and the hint disagree
    del entries[f"signatures/{named.key_id}.sig"]
    entries[f"signatures/{signer.key_id}.sig"] = _json.dumps(env)
    bad2 = rewrite(path, tmp_path / "hint2.mbundle", entries)
    with pytest.raises(SignatureError, match="holds a signature for key"):
        bundle.verify(bad2, trusted_keys=trust)


def test_signature_made_with_wrong_algorithm_bytes(tmp_path: Path) -> None:
    """An Ed25519 signature placed in a P-256 key's envelope verifies with no key."""
    p256, ed = bundle.generate_key("ecdsa-p256"), bundle.generate_key("ed25519")
    statement = dsse.build_statement("m", [("a", "1" * 64)])
    env = json.loads(dsse.sign_statement(statement, p256))
    env["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        ed.sign(dsse.pae(dsse.PAYLOAD_TYPE, statement))
    ).decode()
    parsed = dsse.parse_envelope(_json.dumps(env), "s")
    assert dsse.verify_envelope(parsed, bundle.TrustStore([p256.public_key]), "s") is None
