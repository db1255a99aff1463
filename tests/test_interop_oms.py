"""Interoperability with OpenSSF Model Signing's reference tool, ``model_signing``.

Both directions, through its command line, in a separate virtual environment
(``.venv-interop/`` at the repository root, gitignored, built on first use from
the package registry) so its dependency pins never touch the project's venv:

* a bundle signed here with ECDSA, unzipped, verifies with ``model_signing
  verify key`` (and, with a certificate chain, ``verify certificate``);
* a directory (an unzipped, unsigned bundle) signed by ``model_signing sign
  key`` / ``sign certificate``, packed by :func:`bundle.pack_directory`,
  verifies here.

What does not interoperate, and why, is asserted too (Ed25519) and written down
in SECURITY.md ("Interoperability with OpenSSF Model Signing").

The registry must be reachable the first time: if the install fails, the tests
fail saying so. ``MODEL_BUNDLE_SKIP_INTEROP=1`` skips them (offline work only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from helpers import read_entries, save_tiny
from pki import PKI, pem

import bundle
from bundle.cli import main
from bundle.errors import IntegrityError, SignatureError

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-interop"
# model_signing 1.1.1's CLI imports pyOpenSSL (certificate verification) without declaring it.
REQUIREMENTS = ("model-signing==1.1.1", "pyOpenSSL")
READY = ".model-bundle-interop-ready"
X = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)

Oms = Callable[..., subprocess.CompletedProcess[str]]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _usable(venv: Path) -> bool:
    marker = venv / READY
    if not marker.is_file() or marker.read_text() != "\n".join(REQUIREMENTS):
        return False
    probe = subprocess.run(
        [str(_venv_python(venv)), "-c", "import model_signing, OpenSSL"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _build_venv() -> Path:
    """Create the interop venv (in a temporary sibling, renamed into place when complete)."""
    tmp = VENV.with_name(f"{VENV.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(tmp)],
        [
            str(_venv_python(tmp)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--timeout",
            "60",
            *REQUIREMENTS,
        ],
    ]
    for cmd in steps:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            res = subprocess.CompletedProcess(cmd, -1, "", "timed out after 900 s")
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (res.stdout + res.stderr).strip()[-1500:]
            pytest.fail(
                f"could not install {' '.join(REQUIREMENTS)} from the package registry "
                f"into {VENV} ({' '.join(cmd[:4])} ... exit {res.returncode}):\n{tail}\n"
                "The interop tests need the registry once; offline, set "
                "MODEL_BUNDLE_SKIP_INTEROP=1 to skip them.",
                pytrace=False,
            )
    (tmp / READY).write_text("\n".join(REQUIREMENTS))
    shutil.rmtree(VENV, ignore_errors=True)
    try:
        os.replace(tmp, VENV)
    except OSError:  # another session finished first: use its venv
        shutil.rmtree(tmp, ignore_errors=True)
    return VENV


@pytest.fixture(scope="session")
def oms() -> Oms:
    """Run ``python -m model_signing ARGS`` in the interop venv; returns the finished process."""
    if os.environ.get("MODEL_BUNDLE_SKIP_INTEROP") == "1":
        pytest.skip("MODEL_BUNDLE_SKIP_INTEROP=1: model_signing interop tests skipped")
    venv = VENV if _usable(VENV) else _build_venv()
    python = str(_venv_python(venv))

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "model_signing", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


def _unzip(path: Path, directory: Path) -> Path:
    with zipfile.ZipFile(path) as z:
        z.extractall(directory)
    return directory


def _ok(res: subprocess.CompletedProcess[str], word: str) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{word} succeeded" in res.stdout


def _failed(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "failed with error" in res.stderr
    return res.stderr


# --------------------------------------------------------------------------- here -> OMS


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384"])
def test_bundle_signed_here_verifies_with_model_signing(
    tmp_path: Path, oms: Oms, key_type: str
) -> None:
    key = bundle.generate_key(key_type)
    _, pub = key.save(tmp_path / "signer")
    path = save_tiny(tmp_path / "m.mbundle", key)
    model = _unzip(path, tmp_path / "model")
    sig = model / "signatures" / f"{key.key_id}.sig"
    _ok(oms("verify", "key", model, "--signature", sig, "--public_key", pub), "Verification")
    # OMS really checks the files: one flipped byte in the weights fails it
    weights = model / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert "weights.safetensors" in _failed(
        oms("verify", "key", model, "--signature", sig, "--public_key", pub)
    )


def test_every_signature_of_a_multi_signed_bundle(tmp_path: Path, oms: Oms) -> None:
    """Each signatures/<key id>.sig is a complete OMS signature over the same files."""
    a, b, ed = (
        bundle.generate_key(),
        bundle.generate_key("ecdsa-p384"),
        bundle.generate_key("ed25519"),
    )
    pubs = {k.key_id: k.save(tmp_path / k.key_id[:8])[1] for k in (a, b, ed)}
    path = save_tiny(tmp_path / "m.mbundle", [a, b, ed], expires="2099-01-01T00:00:00Z")
    model = _unzip(path, tmp_path / "model")
    for k in (a, b):
        _ok(
            oms(
                "verify",
                "key",
                model,
                "--signature",
                model / "signatures" / f"{k.key_id}.sig",
                "--public_key",
                pubs[k.key_id],
            ),
            "Verification",
        )
    # Not interoperable: model_signing's key verifier accepts elliptic-curve keys only.
    _failed(
        oms(
            "verify",
            "key",
            model,
            "--signature",
            model / "signatures" / f"{ed.key_id}.sig",
            "--public_key",
            pubs[ed.key_id],
        )
    )
    # and a key that did not sign is refused by its key-hint check
    _failed(
        oms(
            "verify",
            "key",
            model,
            "--signature",
            model / "signatures" / f"{a.key_id}.sig",
            "--public_key",
            pubs[b.key_id],
        )
    )


def test_certificate_signed_bundle_verifies_with_model_signing(tmp_path: Path, oms: Oms) -> None:
    pki = PKI()
    key = bundle.generate_key()
    signer = key.with_certificates([pki.leaf(key.key), pki.inter])
    path = save_tiny(tmp_path / "c.mbundle", signer)
    model = _unzip(path, tmp_path / "model")
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    sig = model / "signatures" / f"{key.key_id}.sig"
    _ok(
        oms(
            "verify",
            "certificate",
            model,
            "--signature",
            sig,
            "--certificate_chain",
            tmp_path / "root.pem",
        ),
        "Verification",
    )
    (tmp_path / "other.pem").write_bytes(pem(PKI().root))
    _failed(
        oms(
            "verify",
            "certificate",
            model,
            "--signature",
            sig,
            "--certificate_chain",
            tmp_path / "other.pem",
        )
    )


# --------------------------------------------------------------------------- OMS -> here


def _unsigned_model_dir(tmp_path: Path) -> tuple[Path, Path]:
    path = save_tiny(tmp_path / "unsigned.mbundle")
    return path, _unzip(path, tmp_path / "model")


def test_directory_signed_by_model_signing_verifies_here(
    tmp_path: Path,
    oms: Oms,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = bundle.generate_key()
    key_path, pub = key.save(tmp_path / "signer")
    unsigned, model = _unsigned_model_dir(tmp_path)
    sig = model / "model.sig"  # model_signing's default place: inside the model directory
    _ok(oms("sign", "key", model, "--private_key", key_path, "--signature", sig), "Signing")
    out = tmp_path / "packed.mbundle"
    bundle.pack_directory(model, out, signatures=[sig])
    report = bundle.verify(out, trusted_keys=pub)
    assert [s.key_id for s in report.signers] == [key.key_id]
    # the signature is stored byte for byte; model.sig is not packed as content
    entries = read_entries(out)
    assert entries[f"signatures/{key.key_id}.sig"] == sig.read_bytes()
    assert "model.sig" not in entries
    ref = bundle.load(unsigned, allow_unsigned=True, device="cpu").run({"X": X})["Y"]
    got = bundle.load(out, trusted_keys=pub, device="cpu").run({"X": X})["Y"]
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(SignatureError):
        bundle.verify(out, trusted_keys=bundle.generate_key().public_key)
    # the same through the command line, the signature kept outside the directory
    outside = tmp_path / "outside.sig"
    (model / "model.sig").unlink()
    _ok(oms("sign", "key", model, "--private_key", key_path, "--signature", outside), "Signing")
    cli_out = tmp_path / "cli.mbundle"
    assert main(["pack", str(model), str(cli_out), "--signature", str(outside)]) == 0
    assert main(["verify", str(cli_out), "--trusted-key", str(pub)]) == 0
    assert "OK" in capsys.readouterr().out


def test_certificate_signed_directory_verifies_here(tmp_path: Path, oms: Oms) -> None:
    pki = PKI()
    key = bundle.generate_key()
    key_path, _ = key.save(tmp_path / "leaf")
    (tmp_path / "leaf.pem").write_bytes(pem(pki.leaf(key.key)))
    (tmp_path / "inter.pem").write_bytes(pem(pki.inter))
    _, model = _unsigned_model_dir(tmp_path)
    sig = tmp_path / "model.sig"
    _ok(
        oms(
            "sign",
            "certificate",
            model,
            "--private_key",
            key_path,
            "--signing_certificate",
            tmp_path / "leaf.pem",
            "--certificate_chain",
            tmp_path / "inter.pem",
            "--signature",
            sig,
        ),
        "Signing",
    )
    out = tmp_path / "cert.mbundle"
    bundle.pack_directory(model, out, signatures=[sig])
    (s,) = bundle.verify(out, trusted_roots=pki.root).signers
    assert s.key_id == key.key_id
    assert s.identity is not None
    assert s.identity.san == ("email:releases@example.org",)
    with pytest.raises(SignatureError, match="does not lead to a trusted root"):
        bundle.verify(out, trusted_roots=PKI().root)


def test_model_signing_signature_over_other_files_is_refused(tmp_path: Path, oms: Oms) -> None:
    """OMS signs whatever is in the directory; a bundle's signature must cover exactly the
    manifest's files and manifest.json, so extra or changed files are refused when packing."""
    key = bundle.generate_key()
    key_path, _ = key.save(tmp_path / "signer")
    _, model = _unsigned_model_dir(tmp_path)
    (model / "README.md").write_text("not part of the bundle")
    sig = tmp_path / "model.sig"
    _ok(oms("sign", "key", model, "--private_key", key_path, "--signature", sig), "Signing")
    with pytest.raises(SignatureError, match=r"signed but not in the bundle \['README.md'\]"):
        bundle.pack_directory(model, tmp_path / "x.mbundle", signatures=[sig])
    (model / "README.md").unlink()
    weights = model / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # changed before signing
    _ok(oms("sign", "key", model, "--private_key", key_path, "--signature", sig), "Signing")
    with pytest.raises(SignatureError, match=r"different digests \['weights.safetensors'\]"):
        bundle.pack_directory(model, tmp_path / "y.mbundle", signatures=[sig])
    weights.write_bytes(original)
    _ok(oms("sign", "key", model, "--private_key", key_path, "--signature", sig), "Signing")
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # changed after signing
    with pytest.raises(IntegrityError, match=r"weights\.safetensors: SHA-256 differs"):
        bundle.pack_directory(model, tmp_path / "z.mbundle", signatures=[sig])
    for name in ("x", "y", "z"):
        assert not (tmp_path / f"{name}.mbundle").exists()


def test_oms_public_key_file_is_a_trusted_key_here(tmp_path: Path, oms: Oms) -> None:
    """Keys made for model_signing (plain PEM from cryptography/openssl) work as .pub/.key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    raw = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(
        raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "k.pub").write_bytes(
        raw.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _, model = _unsigned_model_dir(tmp_path)
    sig = tmp_path / "model.sig"
    _ok(
        oms("sign", "key", model, "--private_key", tmp_path / "k.pem", "--signature", sig),
        "Signing",
    )
    bundle.pack_directory(model, tmp_path / "p.mbundle", signatures=[sig])
    assert bundle.verify(tmp_path / "p.mbundle", trusted_keys=tmp_path / "k.pub").verified
    # and the same key signs here, verifying there
    path = save_tiny(tmp_path / "here.mbundle", str(tmp_path / "k.pem"))
    here = _unzip(path, tmp_path / "here")
    kid = bundle.load_public_key(tmp_path / "k.pub").key_id
    _ok(
        oms(
            "verify",
            "key",
            here,
            "--signature",
            here / "signatures" / f"{kid}.sig",
            "--public_key",
            tmp_path / "k.pub",
        ),
        "Verification",
    )


def test_pack_refuses_a_tampered_directory_without_oms(tmp_path: Path) -> None:
    """pack_directory's own checks (no model_signing needed): listed files must match."""
    key = bundle.generate_key()
    path = save_tiny(tmp_path / "s.mbundle", key)
    model = _unzip(path, tmp_path / "model")
    again = tmp_path / "again.mbundle"
    bundle.pack_directory(model, again)
    assert again.read_bytes() == path.read_bytes()  # unzip + pack is the identity
    (model / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="not listed in the manifest"):
        bundle.pack_directory(model, tmp_path / "e.mbundle")
    (model / "extra.bin").unlink()
    (model / "model.sig").write_bytes(b"{}")
    with pytest.raises(IntegrityError, match=r"\['model\.sig'\]; a signature file must be given"):
        bundle.pack_directory(model, tmp_path / "e.mbundle")
    (model / "model.sig").unlink()
    (model / "model.onnx").write_bytes((model / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        bundle.pack_directory(model, tmp_path / "f.mbundle")
    assert not (tmp_path / "e.mbundle").exists()
    assert not (tmp_path / "f.mbundle").exists()


def test_pack_checks_signatures_by_the_rule_verify_uses(tmp_path: Path) -> None:
    """pack refuses what verify would: a statement cut differently from the manifest (the
    same files and digests, the weights' length misstated), and a certificate whose leaf
    key cannot even be loaded -- a SignatureError, not a crash (no model_signing needed)."""
    import base64
    import json

    from bundle.format import canonical_json as _json
    from bundle.format.digest import MIN_SHARD_SIZE, sha256_bytes
    from bundle.format.manifest import MANIFEST_NAME, Manifest
    from bundle.trust import dsse

    key = bundle.generate_key()
    model = _unzip(save_tiny(tmp_path / "u.mbundle"), tmp_path / "model")
    mbytes = (model / MANIFEST_NAME).read_bytes()
    pieces = [
        (f"{f.path}:0:{f.size + 8 if f.role == 'weights' else f.size}", f.sha256)
        for f in Manifest.from_bytes(mbytes).files
    ]
    pieces.append((f"{MANIFEST_NAME}:0:{len(mbytes)}", sha256_bytes(mbytes)))
    sig = tmp_path / "model.sig"
    sig.write_bytes(dsse.sign_statement(dsse.build_statement("tiny", pieces, MIN_SHARD_SIZE), key))
    with pytest.raises(SignatureError, match="disagree"):
        bundle.pack_directory(model, tmp_path / "x.mbundle", signatures=[sig])
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    pki = PKI()
    der = pki.leaf(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER)
    p256 = bytes.fromhex("06082a8648ce3d030107")
    leaf = x509.load_der_x509_certificate(der.replace(p256, p256[:-1] + b"\x02"))  # prime192v2
    env = json.loads(
        dsse.sign_statement(
            dsse.build_statement(
                "tiny",
                [
                    *((f.path, f.sha256) for f in Manifest.from_bytes(mbytes).files),
                    (MANIFEST_NAME, sha256_bytes(mbytes)),
                ],
            ),
            key,
        )
    )
    env["verificationMaterial"] = {
        "x509CertificateChain": {
            "certificates": [
                {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}
                for c in (leaf, pki.inter)
            ]
        },
        "tlogEntries": [],
    }
    env["dsseEnvelope"]["signatures"][0]["keyid"] = ""
    sig.write_bytes(_json.dumps(env))
    with pytest.raises(SignatureError, match="leaf certificate key"):
        bundle.pack_directory(model, tmp_path / "y.mbundle", signatures=[sig])
    assert not (tmp_path / "x.mbundle").exists()
    assert not (tmp_path / "y.mbundle").exists()
