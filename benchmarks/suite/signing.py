"""Hashing, verifying and signing the same weights: this project against OpenSSF model_signing.

model_signing pins its own dependency versions, so it runs from a separate venv
(``.venv-oms/`` at the repository root, or the interop tests' ``.venv-interop/``
when that one exists; ``.venv-oms/`` is created here when neither does) through its
CLI, ``model_signing sign key`` / ``verify key``, on a directory holding exactly
the model's ``model.safetensors`` -- the same weight bytes the bundle holds.
Our side is timed both ways: the CLI as a fresh process (what model_signing's
figures are comparable to) and ``bundle.verify`` in-process (throughput).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .timing import command, median, timed

ROOT = Path(__file__).resolve().parents[2]
OMS_VENV = ROOT / ".venv-oms"
OTHER_VENVS = (ROOT / ".venv-interop",)
"""Venvs other tools make with the same packages (tests/test_interop_oms.py): reused."""
OMS_PACKAGES = ("model-signing", "pyOpenSSL")


@dataclass
class SignResult:
    """Median seconds per operation on one model's bytes."""

    model: str
    nbytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def hashlib_rate(size: int = 256 << 20, runs: int = 3) -> float:
    """Single-core SHA-256 throughput of hashlib on an in-memory buffer, bytes/s."""
    buf = os.urandom(size)
    return size / median([timed(lambda: hashlib.sha256(buf).digest())[0] for _ in range(runs)])


def oms_cli(log: Callable[[str], None]) -> list[str] | None:
    """The command running model_signing's CLI (``python -m model_signing`` in an
    existing venv, else a new ``.venv-oms``); None if none.

    Run through the venv's interpreter, not its console script: a venv built in a
    temporary folder and renamed (the interop tests do that) keeps scripts whose
    first line names the temporary folder.
    """

    def command(venv: Path) -> list[str] | None:
        python = venv / "bin" / "python"
        if python.exists() and any(venv.glob("lib/python*/site-packages/model_signing")):
            return [str(python), "-m", "model_signing"]
        return None

    for venv in (OMS_VENV, *OTHER_VENVS):
        found = command(venv)
        if found is not None:
            return found
    log(f"  creating {OMS_VENV} with {', '.join(OMS_PACKAGES)}")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(OMS_VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(OMS_VENV / "bin" / "pip"), "install", "-q", *OMS_PACKAGES],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"  could not set up model_signing: {e}")
        return None
    return command(OMS_VENV)


def _oms_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MODEL_SIGNING_LOG_LEVEL"] = "WARNING"
    return env


def oms_keys(tmp: Path) -> tuple[Path, Path]:
    """A P-256 key pair as PEM files (PKCS#8 private, SubjectPublicKeyInfo public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp / "oms.key.pem", tmp / "oms.pub.pem"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


def measure(
    model: str,
    bundle_path: Path,
    weights_dir: Path,
    *,
    key_path: Path,
    pub_path: Path,
    runs: int,
    oms: list[str] | None,
    tmp: Path,
    log: Callable[[str], None],
) -> SignResult:
    """Verify/sign the bundle (in-process and CLI) and model_signing on its weights.

    Each sign uses a fresh key (``key_path`` is not used for it), so each one writes.
    """
    import bundle

    res = SignResult(model, bundle_path.stat().st_size)
    cli = [sys.executable, "-m", "bundle"]
    log(f"  {model}: bundle.verify / CLI verify / CLI sign")
    verify_cmd = [*cli, "verify", str(bundle_path), "--trusted-key", str(pub_path)]
    # Every sign gets a key that has not signed yet: signing again with a key that
    # already signed gives the same bytes and writes nothing, which is not what is timed.
    stem = "".join(c if c.isalnum() else "-" for c in model)
    v, s, verify_in, sign_in = [], [], [], []
    for i in range(runs):  # round-robin: a busy machine slows every side alike
        fresh, _ = bundle.generate_key().save(tmp / f"{stem}-sign-{i}")
        sign_cmd = [*cli, "sign", str(bundle_path), "--key", str(fresh)]
        v.append(command(verify_cmd))
        s.append(command(sign_cmd))
        verify_in.append(timed(lambda: bundle.verify(bundle_path, trusted_keys=pub_path))[0])
        k = bundle.generate_key()
        sign_in.append(timed(lambda k=k: bundle.sign(bundle_path, k, trusted_keys=pub_path))[0])
    res.seconds["bundle.verify (in-process)"] = median(verify_in)
    res.seconds["bundle.sign (in-process)"] = median(sign_in)
    res.seconds["model-bundle verify (CLI)"] = median(v)
    res.seconds["model-bundle sign (CLI)"] = median(s)
    if oms is None:
        res.notes.append("model_signing: n/a (no .venv-oms; see benchmarks/README.md)")
        return res
    log(f"  {model}: model_signing sign / verify")
    priv, pub = oms_keys(tmp)
    sig = tmp / f"{weights_dir.parent.name}.oms.sig"
    env = _oms_env()
    sign = [
        *oms,
        "sign",
        "key",
        "--private_key",
        str(priv),
        "--signature",
        str(sig),
        str(weights_dir),
    ]
    verify = [
        *oms,
        "verify",
        "key",
        "--public_key",
        str(pub),
        "--signature",
        str(sig),
        str(weights_dir),
    ]
    v, s = [], []
    for _ in range(runs):
        s.append(command(sign, env))
        v.append(command(verify, env))
    res.seconds["model_signing sign key (CLI)"] = median(s)
    res.seconds["model_signing verify key (CLI)"] = median(v)
    res.seconds["model_signing --version (CLI start-up)"] = median(
        [command([*oms, "--version"], env) for _ in range(runs)]
    )
    return res
