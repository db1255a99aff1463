"""X.509 signers: certificate chains in signatures, verified against trusted root CAs;
and the k-of-n trust policy (each distinct key once) from the API and the CLI."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from helpers import read_entries, rewrite, save_tiny, tiny_model
from pki import CLIENT_AUTH, CODE_SIGNING, NOW, PKI, issue, key_usage, pem

import bundle
from bundle.cli import exit_code_of as cli_exit_code
from bundle.cli import main
from bundle.errors import KeyFileError, SignatureError
from bundle.export.writer import statement_for
from bundle.format import canonical_json as _json
from bundle.format.manifest import MANIFEST_NAME, Manifest
from bundle.trust import dsse


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="module")
def leaf_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def certified(pki: PKI, leaf_key: Any) -> bundle.PrivateKey:
    """A P-256 key with its chain (leaf, intermediate)."""
    return bundle.PrivateKey(leaf_key).with_certificates([pki.leaf(leaf_key), pki.inter])


def _sig_name(key_id: str) -> str:
    return f"signatures/{key_id}.sig"


def _cert_signature(
    statement: bytes, signer: Any, chain: list[x509.Certificate], keyid: str = ""
) -> bytes:
    """A Sigstore bundle with a certificate chain, signed by ``signer`` with no checks
    on our side: how an attacker (or another tool) could write one."""
    message = dsse.pae(dsse.PAYLOAD_TYPE, statement)
    sig = (
        signer.sign(message)
        if isinstance(signer, ed25519.Ed25519PrivateKey)
        else signer.sign(message, ec.ECDSA(hashes.SHA256()))
    )
    return _json.dumps(
        {
            "mediaType": dsse.BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "x509CertificateChain": {
                    "certificates": [
                        {
                            "rawBytes": base64.b64encode(
                                c.public_bytes(serialization.Encoding.DER)
                            ).decode()
                        }
                        for c in chain
                    ]
                },
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": dsse.PAYLOAD_TYPE,
                "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}],
            },
        }
    )


def _with_cert_signature(
    tmp_path: Path, name: str, signer: Any, chain: list[x509.Certificate], keyid: str = ""
) -> Path:
    """The tiny model, unsigned, plus one hand-made certificate signature."""
    base = save_tiny(tmp_path / f"{name}.unsigned.mbundle")
    entries = read_entries(base)
    mbytes = entries[MANIFEST_NAME]
    statement = statement_for(Manifest.from_bytes(mbytes), mbytes)
    leaf_key = chain[0].public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    kid = bundle.PublicKey(leaf_key).key_id
    entries[_sig_name(kid)] = _cert_signature(statement, signer, chain, keyid)
    return rewrite(base, tmp_path / f"{name}.mbundle", entries)


# --------------------------------------------------------------------------- signing


def test_signature_embeds_the_chain_not_a_key_hint(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "c.mbundle", certified)
    doc = json.loads(read_entries(path)[_sig_name(certified.key_id)])
    material = doc["verificationMaterial"]
    assert "publicKey" not in material
    ders = [
        base64.b64decode(c["rawBytes"]) for c in material["x509CertificateChain"]["certificates"]
    ]
    assert ders == [c.public_bytes(serialization.Encoding.DER) for c in certified.certificates]
    assert x509.load_der_x509_certificate(ders[1]) == pki.inter
    # the DSSE keyid still names the key, so the entry name can be checked
    assert doc["dsseEnvelope"]["signatures"][0]["keyid"] == certified.key_id


def test_chain_from_files_and_the_save_option(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    leaf = pki.leaf(leaf_key)
    files = pki.write(tmp_path, leaf)
    key_path, _ = bundle.PrivateKey(leaf_key).save(tmp_path / "signer")
    # one PEM file holding leaf + intermediate, attached through save(certificate_chain=)
    a = save_tiny(tmp_path / "a.mbundle", str(key_path), certificate_chain=files["chain"])
    # separate files, leaf first, through load_private_key(certificate_chain=)
    k = bundle.load_private_key(key_path, certificate_chain=[files["leaf"], files["inter"]])
    b = save_tiny(tmp_path / "b.mbundle", k)
    assert a.read_bytes() == b.read_bytes()
    report = bundle.verify(a, trusted_roots=files["root"])
    assert report.signers[0].key_id == k.key_id


def test_chain_must_certify_the_signing_key(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyFileError, match="does not certify the signing key"):
        bundle.PrivateKey(other).with_certificates([pki.leaf(leaf_key), pki.inter])
    with pytest.raises(KeyFileError, match="does not certify any of the signing keys"):
        save_tiny(
            tmp_path / "x.mbundle",
            bundle.PrivateKey(other),
            certificate_chain=pem(pki.leaf(leaf_key), pki.inter),
        )
    assert not (tmp_path / "x.mbundle").exists()
    with pytest.raises(KeyFileError, match="certificate_chain given without"):
        save_tiny(tmp_path / "y.mbundle", None, certificate_chain=pem(pki.inter))
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyFileError, match="not a PEM or DER"):
        bundle.PrivateKey(leaf_key).with_certificates(junk)


def test_p521_leaf_is_refused_for_signing(pki: PKI) -> None:
    k = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(KeyFileError, match="secp521r1"):
        bundle.PrivateKey(k).with_certificates([pki.leaf(k), pki.inter])


# --------------------------------------------------------------------------- verifying


def test_valid_chain_is_accepted_with_identity(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "ok.mbundle", certified)
    report = bundle.verify(path, trusted_roots=[pki.root])
    assert report.verified
    (s,) = report.signers
    assert s.key_id == certified.key_id
    assert s.key_type == "ecdsa-p256"
    assert s.identity is not None
    assert s.identity.subject == "CN=ML release signer,O=Example Org"
    assert s.identity.san == ("email:releases@example.org",)
    assert s.identity.issuer == "CN=Example Signing CA,O=Example Org"
    assert s.identity.root == "CN=Example Root CA,O=Example Org"
    signers = report.to_dict()["signers"]
    assert isinstance(signers, list)
    assert signers[0]["certificate"]["san"] == ["email:releases@example.org"]
    m = bundle.load(path, trusted_roots=pem(pki.root), device="cpu")
    assert m.run({"X": np.ones((2, 4), np.float32)})["Y"].shape == (2, 3)


@pytest.mark.parametrize("leaf_type", ["ed25519", "ecdsa-p384"])
def test_other_leaf_key_types(tmp_path: Path, pki: PKI, leaf_type: str) -> None:
    k = bundle.generate_key(leaf_type)
    signer = k.with_certificates([pki.leaf(k.key), pki.inter])
    path = save_tiny(tmp_path / "t.mbundle", signer)
    assert bundle.verify(path, trusted_roots=pki.root).signers[0].key_type == leaf_type


def test_expired_leaf_is_refused(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    leaf = pki.leaf(
        leaf_key, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
    )
    path = save_tiny(
        tmp_path / "e.mbundle", bundle.PrivateKey(leaf_key).with_certificates([leaf, pki.inter])
    )
    with pytest.raises(SignatureError, match="is not valid at") as e:
        bundle.verify(path, trusted_roots=pki.root)
    assert "0 trusted key(s), 1 required" in str(e.value)
    # checked at the verification time: while the certificate was valid it verifies
    assert bundle.verify(path, trusted_roots=pki.root, now=NOW - dt.timedelta(days=2)).verified


def test_not_yet_valid_leaf_is_refused(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    leaf = pki.leaf(leaf_key, not_before=NOW + dt.timedelta(days=1))
    path = save_tiny(
        tmp_path / "f.mbundle", bundle.PrivateKey(leaf_key).with_certificates([leaf, pki.inter])
    )
    with pytest.raises(SignatureError, match="is not valid at"):
        bundle.verify(path, trusted_roots=pki.root)


def test_wrong_root_is_refused(tmp_path: Path, certified: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "w.mbundle", certified)
    with pytest.raises(SignatureError, match="does not lead to a trusted root CA"):
        bundle.verify(path, trusted_roots=PKI().root)


def test_missing_intermediate_is_refused(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    signer = bundle.PrivateKey(leaf_key).with_certificates([pki.leaf(leaf_key)])
    path = save_tiny(tmp_path / "m.mbundle", signer)
    with pytest.raises(SignatureError, match="does not lead to a trusted root CA"):
        bundle.verify(path, trusted_roots=pki.root)
    # trusting the intermediate as an anchor is the deployment's explicit choice
    assert bundle.verify(path, trusted_roots=pki.inter).verified


def test_leaf_without_digital_signature_is_refused(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    leaf = pki.leaf(leaf_key, usage=key_usage(key_encipherment=True))
    path = _with_cert_signature(tmp_path, "noku", leaf_key, [leaf, pki.inter])
    with pytest.raises(SignatureError, match="lacks digitalSignature"):
        bundle.verify(path, trusted_roots=pki.root)
    # and a leaf with no key usage extension at all
    bare = issue("bare", leaf_key, pki.inter, pki.inter_key, ca=False, usage=None)
    path = _with_cert_signature(tmp_path, "bare", leaf_key, [bare, pki.inter])
    with pytest.raises(SignatureError, match="no key usage extension; digitalSignature"):
        bundle.verify(path, trusted_roots=pki.root)


def test_extended_key_usage_must_allow_code_signing(
    tmp_path: Path, pki: PKI, leaf_key: Any
) -> None:
    tls = pki.leaf(leaf_key, eku=[CLIENT_AUTH])
    path = _with_cert_signature(tmp_path, "tls", leaf_key, [tls, pki.inter])
    with pytest.raises(SignatureError, match="codeSigning"):
        bundle.verify(path, trusted_roots=pki.root)
    code = pki.leaf(leaf_key, eku=[CLIENT_AUTH, CODE_SIGNING])
    path = _with_cert_signature(tmp_path, "code", leaf_key, [code, pki.inter])
    assert bundle.verify(path, trusted_roots=pki.root).verified


def test_ca_certificate_as_leaf_is_refused(tmp_path: Path, pki: PKI) -> None:
    k = ec.generate_private_key(ec.SECP256R1())
    ca_leaf = issue(
        "sub CA",
        k,
        pki.inter,
        pki.inter_key,
        ca=True,
        usage=key_usage(digital_signature=True, key_cert_sign=True),
    )
    path = _with_cert_signature(tmp_path, "ca", k, [ca_leaf, pki.inter])
    with pytest.raises(SignatureError, match="leaf is a CA"):
        bundle.verify(path, trusted_roots=pki.root)


def test_p521_leaf_is_refused_when_verifying(tmp_path: Path, pki: PKI) -> None:
    k = ec.generate_private_key(ec.SECP521R1())
    path = _with_cert_signature(tmp_path, "p521", k, [pki.leaf(k), pki.inter])
    with pytest.raises(SignatureError, match="secp521r1"):
        bundle.verify(path, trusted_roots=pki.root)


_P256_CURVE_OID = bytes.fromhex("06082a8648ce3d030107")  # DER of prime256v1 (P-256)
_EC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # DER of id-ecPublicKey


def _odd_leaf(pki: PKI, kind: str) -> x509.Certificate:
    """A leaf under the intermediate whose key is not one a signer may use. The last two
    name (by editing the DER) a curve or key type ``cryptography`` cannot even load: their
    issuer signature breaks, which the verifier must never get as far as checking."""
    from cryptography.hazmat.primitives.asymmetric import dsa, rsa

    keys: dict[str, Callable[[], PrivateKeyTypes]] = {
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "dsa": lambda: dsa.generate_private_key(2048),
        "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
        "brainpoolP256r1": lambda: ec.generate_private_key(ec.BrainpoolP256R1()),
    }
    if kind in keys:
        return pki.leaf(keys[kind]())
    der = pki.leaf(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER)
    if kind == "unloadable-curve":  # prime192v2
        der = der.replace(_P256_CURVE_OID, _P256_CURVE_OID[:-1] + b"\x02", 1)
    else:  # 1.2.840.10045.2.2, no key type at all
        der = der.replace(_EC_KEY_OID, _EC_KEY_OID[:-1] + b"\x02", 1)
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize(
    "kind",
    ["rsa", "dsa", "secp256k1", "brainpoolP256r1", "unloadable-curve", "unloadable-key-type"],
)
def test_leaf_key_a_signer_may_not_use_does_not_count(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey, kind: str
) -> None:
    """Not fatal beside a good signature; alone, refused saying why."""
    path = save_tiny(tmp_path / "good.mbundle", certified)
    entries = read_entries(path)
    good = entries.pop(_sig_name(certified.key_id))
    payload = base64.b64decode(json.loads(good)["dsseEnvelope"]["payload"])
    junk_name = _sig_name("0" * 64)
    entries[junk_name] = _cert_signature(payload, _NoSigner(), [_odd_leaf(pki, kind), pki.inter])
    alone = rewrite(path, tmp_path / "alone.mbundle", entries)
    with pytest.raises(SignatureError, match="leaf certificate key") as e:
        bundle.verify(alone, trusted_roots=pki.root)
    assert "signed by 0 trusted key(s)" in str(e.value)
    entries[_sig_name(certified.key_id)] = good
    beside = rewrite(path, tmp_path / "beside.mbundle", entries)
    report = bundle.verify(beside, trusted_roots=pki.root)
    assert [s.key_id for s in report.signers] == [certified.key_id]
    assert report.untrusted_signatures == ("0" * 64,)


class _NoSigner:
    """Stands in for a key the test cannot (or need not) sign with: a signature of zeros."""

    def sign(self, message: bytes, *_: Any) -> bytes:
        return bytes(64)


@pytest.mark.parametrize("critical", [True, False])
def test_leaf_with_an_unknown_critical_extension_is_refused(
    tmp_path: Path, pki: PKI, leaf_key: Any, critical: bool
) -> None:
    """RFC 5280 4.2: a certificate with a critical extension the verifier does not know must
    be rejected; cryptography's path validation does so even under a permissive leaf policy."""
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = issue(
        "ML release signer",
        leaf_key,
        pki.inter,
        pki.inter_key,
        ca=False,
        usage=key_usage(digital_signature=True),
        extra=[(unknown, critical)],
    )
    path = save_tiny(
        tmp_path / "x.mbundle", bundle.PrivateKey(leaf_key).with_certificates([leaf, pki.inter])
    )
    if not critical:
        assert bundle.verify(path, trusted_roots=pki.root).verified
        return
    with pytest.raises(SignatureError, match=r"1\.3\.6\.1\.4\.1\.55555\.1.*critical"):
        bundle.verify(path, trusted_roots=pki.root)


def test_signature_not_made_by_the_certified_key(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    path = _with_cert_signature(tmp_path, "imp", impostor, [pki.leaf(leaf_key), pki.inter])
    with pytest.raises(SignatureError, match="does not verify with the key of certificate"):
        bundle.verify(path, trusted_roots=pki.root)


def test_keyid_naming_another_key_is_refused(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    other = bundle.generate_key()
    base = save_tiny(tmp_path / "u.mbundle")
    entries = read_entries(base)
    mbytes = entries[MANIFEST_NAME]
    statement = statement_for(Manifest.from_bytes(mbytes), mbytes)
    entries[_sig_name(other.key_id)] = _cert_signature(
        statement, leaf_key, [pki.leaf(leaf_key), pki.inter], keyid=other.key_id
    )
    path = rewrite(base, tmp_path / "k.mbundle", entries)
    with pytest.raises(SignatureError, match="mismatched key id"):
        bundle.verify(path, trusted_roots=pki.root)


def test_malformed_certificate_material(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "g.mbundle", certified)
    entries = read_entries(path)
    name = _sig_name(certified.key_id)
    doc = json.loads(entries[name])
    cases: list[tuple[Any, str]] = [
        ({"certificates": [{"rawBytes": base64.b64encode(b"not DER").decode()}]}, "not valid DER"),
        ({"certificates": []}, "needs 1..8"),
        ({"certificates": [{"rawBytes": "%%%"}]}, "base64"),
        ({"certificates": ["x"]}, "not an object"),
        ("nope", "needs 1..8"),
    ]
    for i, (chain, message) in enumerate(cases):
        doc["verificationMaterial"]["x509CertificateChain"] = chain
        entries[name] = _json.dumps(doc)
        bad = rewrite(path, tmp_path / f"bad{i}.mbundle", entries)
        with pytest.raises(SignatureError, match=message):
            bundle.verify(bad, trusted_roots=pki.root)
    doc["verificationMaterial"]["publicKey"] = {"hint": certified.key_id}
    doc["verificationMaterial"]["x509CertificateChain"] = {
        "certificates": [
            {
                "rawBytes": base64.b64encode(
                    pki.inter.public_bytes(serialization.Encoding.DER)
                ).decode()
            }
        ]
    }
    entries[name] = _json.dumps(doc)
    with pytest.raises(SignatureError, match="both a public key hint and certificates"):
        bundle.verify(rewrite(path, tmp_path / "both.mbundle", entries), trusted_roots=pki.root)


def test_single_certificate_material_is_read(tmp_path: Path, pki: PKI, leaf_key: Any) -> None:
    """Sigstore bundle v0.3 may carry just the leaf as ``certificate``."""
    leaf = pki.leaf(leaf_key)
    path = _with_cert_signature(tmp_path, "single", leaf_key, [leaf])
    entries = read_entries(path)
    name = next(n for n in entries if n.startswith("signatures/"))
    doc = json.loads(entries[name])
    doc["verificationMaterial"] = {
        "certificate": doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0],
        "tlogEntries": [],
    }
    entries[name] = _json.dumps(doc)
    path = rewrite(path, tmp_path / "single2.mbundle", entries)
    assert bundle.verify(path, trusted_roots=pki.inter).signers[0].identity is not None
    with pytest.raises(SignatureError, match="does not lead to a trusted root"):
        bundle.verify(path, trusted_roots=pki.root)


def test_directly_trusted_key_needs_no_root(tmp_path: Path, certified: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "d.mbundle", certified)
    (s,) = bundle.verify(path, trusted_keys=certified.public_key).signers
    assert s.key_id == certified.key_id
    assert s.identity is None  # trusted as a key, not through the certificate
    with pytest.raises(SignatureError):
        bundle.verify(path, trusted_keys=bundle.generate_key().public_key)


def test_certificate_signer_plus_another_key_counts_as_two(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey
) -> None:
    plain = bundle.generate_key("ed25519")
    path = save_tiny(tmp_path / "two.mbundle", [certified, plain])
    report = bundle.verify(path, trusted_keys=plain.public_key, trusted_roots=pki.root, threshold=2)
    assert {s.key_id for s in report.signers} == {certified.key_id, plain.key_id}
    # roots alone: one certified signer does not meet a threshold of two
    with pytest.raises(SignatureError, match="signed by 1 trusted key"):
        bundle.verify(path, trusted_roots=pki.root, threshold=2)
    # the certified key also listed as a trusted key is still one signer
    with pytest.raises(SignatureError, match="signed by 1 trusted key"):
        bundle.verify(path, trusted_keys=certified.public_key, trusted_roots=pki.root, threshold=2)


def test_two_certified_signers_from_one_ca(tmp_path: Path, pki: PKI) -> None:
    a, b = bundle.generate_key(), bundle.generate_key()
    sa = a.with_certificates([pki.leaf(a.key, subject="alice"), pki.inter])
    sb = b.with_certificates([pki.leaf(b.key, subject="bob"), pki.inter])
    path = save_tiny(tmp_path / "ab.mbundle", [sa, sb])
    report = bundle.verify(path, trusted_roots=pki.root, threshold=2)
    subjects = sorted(s.identity.subject for s in report.signers if s.identity is not None)
    assert subjects == ["CN=alice,O=Example Org", "CN=bob,O=Example Org"]


def test_trust_store_with_roots_only() -> None:
    root = PKI().root
    store = bundle.TrustStore(roots=[root, root], threshold=3)
    assert store.keys == ()
    assert store.roots == (root,)
    with pytest.raises(ValueError, match="no trusted keys"):
        bundle.TrustStore()
    with pytest.raises(ValueError, match="threshold"):
        bundle.TrustStore(roots=[root], threshold=0)


def test_sign_adds_a_certified_signature(
    tmp_path: Path, pki: PKI, certified: bundle.PrivateKey
) -> None:
    first = bundle.generate_key()
    path = save_tiny(tmp_path / "s.mbundle", first)
    bundle.sign(path, certified, trusted_keys=first.public_key)
    report = bundle.verify(path, trusted_keys=first.public_key, trusted_roots=pki.root, threshold=2)
    assert [s.identity is not None for s in report.signers].count(True) == 1
    # countersigning can require a certified signer instead of a key
    bundle.sign(path, bundle.generate_key(), trusted_roots=pki.root)
    with pytest.raises(SignatureError):
        bundle.sign(path, bundle.generate_key(), trusted_roots=PKI().root)


def test_inspect_shows_the_claimed_identity(tmp_path: Path, certified: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "i.mbundle", [certified, bundle.generate_key()])
    insp = bundle.inspect(path)
    assert insp.claimed_identities == {
        certified.key_id: "CN=ML release signer,O=Example Org (email:releases@example.org)"
    }
    assert insp.to_dict()["claimed_identities"] == dict(insp.claimed_identities)


# --------------------------------------------------------------------------- command line


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_certificate_sign_verify_inspect(
    tmp_path: Path, pki: PKI, leaf_key: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = pki.write(tmp_path, pki.leaf(leaf_key))
    key_path, _ = bundle.PrivateKey(leaf_key).save(tmp_path / "leaf")
    path = save_tiny(tmp_path / "cli.mbundle")
    code, _, err = run(
        capsys,
        "sign",
        path,
        "--key",
        key_path,
        "--certificate-chain",
        files["leaf"],
        "--certificate-chain",
        files["inter"],
    )
    assert code == 0, err
    code, out, _ = run(capsys, "verify", path, "--trusted-root", files["root"])
    assert code == 0
    assert "certificate CN=ML release signer,O=Example Org (email:releases@example.org)" in out
    code, out, _ = run(capsys, "verify", path, "--trusted-root", files["root"], "--json")
    assert (
        json.loads(out)["signers"][0]["certificate"]["root"] == "CN=Example Root CA,O=Example Org"
    )
    code, out, _ = run(capsys, "inspect", path)
    assert "(certificate CN=ML release signer" in out
    other = tmp_path / "other-root.pem"
    other.write_bytes(pem(PKI().root))
    code, _, err = run(capsys, "verify", path, "--trusted-root", other)
    assert code == cli_exit_code(SignatureError)
    assert "does not lead to a trusted root CA" in err


def test_cli_export_with_chain(
    tmp_path: Path, pki: PKI, leaf_key: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnx import save as save_onnx

    files = pki.write(tmp_path, pki.leaf(leaf_key))
    key_path, _ = bundle.PrivateKey(leaf_key).save(tmp_path / "leaf")
    save_onnx(tiny_model(), tmp_path / "m.onnx")
    code, _, err = run(
        capsys,
        "export",
        tmp_path / "m.onnx",
        tmp_path / "m.mbundle",
        "--key",
        key_path,
        "--certificate-chain",
        files["chain"],
    )
    assert code == 0, err
    code, _, _ = run(
        capsys,
        "predict",
        tmp_path / "m.mbundle",
        "--trusted-root",
        files["root"],
        "--input",
        _npy(tmp_path),
        "--json",
    )
    assert code == 0


def _npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    return tmp_path / "x.npy"


def test_cli_threshold_on_verify_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """k of n from the command line: --threshold counts distinct trusted keys."""
    a, b, c = (bundle.generate_key(t) for t in ("ecdsa-p256", "ed25519", "ecdsa-p384"))
    pubs = [k.save(tmp_path / n)[1] for k, n in ((a, "a"), (b, "b"), (c, "c"))]
    two = save_tiny(tmp_path / "two.mbundle", [a, b])
    x = _npy(tmp_path)
    trust = [arg for p in pubs for arg in ("--trusted-key", p)]
    assert run(capsys, "verify", two, *trust, "--threshold", "2")[0] == 0
    code, _, err = run(capsys, "verify", two, *trust, "--threshold", "3")
    assert code == cli_exit_code(SignatureError)
    assert "signed by 2 trusted key(s), 3 required" in err
    assert run(capsys, "predict", two, *trust, "--threshold", "2", "--input", x)[0] == 0
    code, _, err = run(capsys, "predict", two, *trust, "--threshold", "3", "--input", x)
    assert code == cli_exit_code(SignatureError)
    # the same key given twice (a file and its directory) is one key: 2 of {a, b} only
    code, _, err = run(
        capsys,
        "verify",
        two,
        "--trusted-key",
        pubs[0],
        "--trusted-key",
        tmp_path / "a.pub",
        "--threshold",
        "2",
    )
    assert code == 2  # a usage error: no bundle can meet it
    assert "needs between 1 and 1 distinct" in err


def test_cli_unloadable_leaf_key_exits_with_the_signature_code(
    tmp_path: Path, pki: PKI, capsys: pytest.CaptureFixture[str]
) -> None:
    base = save_tiny(tmp_path / "u.mbundle")
    entries = read_entries(base)
    mbytes = entries[MANIFEST_NAME]
    statement = statement_for(Manifest.from_bytes(mbytes), mbytes)
    entries[_sig_name("0" * 64)] = _cert_signature(
        statement, _NoSigner(), [_odd_leaf(pki, "unloadable-curve"), pki.inter]
    )
    path = rewrite(base, tmp_path / "c.mbundle", entries)
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    code, _, err = run(capsys, "verify", path, "--trusted-root", tmp_path / "root.pem")
    assert code == cli_exit_code(SignatureError), err
    assert err.startswith("error: SignatureError:"), err
    assert "leaf certificate key" in err, err
    assert len(err.strip().splitlines()) == 1
