"""Measure, for each onnxruntime release, the newest IR version and opsets it loads.

    python scripts/probe_onnxruntime.py [VERSION ...] [--json OUT]

onnxruntime has no API that states its maximum IR version or opset (onnxruntime
issue #14932), and its documentation table lags the releases. This script asks
each release directly: it builds tiny one-node models (``Identity``) with the
project's own onnx, stamped with IR version 3..16, ``ai.onnx`` opset 7..32 and
``ai.onnx.ml`` opset 1..8, installs every listed onnxruntime (``--no-deps``, into
``.venv-ort-probe/ort/<version>``, cached) and records what each one loads.
The tables in ``bundle/format/compat.py`` are this script's output;
tests/format/test_compat.py checks them against the installed runtime and
tests/runtime/test_matrix.py against the oldest and newest of the CI matrix.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / ".venv-ort-probe"
IRS = range(3, 17)
OPSETS = range(7, 33)
ML_OPSETS = range(1, 9)

_CHILD = r"""
import json, sys, os
import onnxruntime as ort
out = {"version": ort.__version__, "ir": [], "opset": [], "ml": []}
so = ort.SessionOptions(); so.log_severity_level = 4
for kind in ("ir", "opset", "ml"):
    for name in sorted(os.listdir(sys.argv[1])):
        if not name.startswith(kind + "-"):
            continue
        try:
            ort.InferenceSession(os.path.join(sys.argv[1], name), so,
                                 providers=["CPUExecutionProvider"])
            out[kind].append(int(name.split("-")[1].split(".")[0]))
        except Exception:
            pass
print(json.dumps(out))
"""


def _models(directory: Path) -> None:
    from onnx import TensorProto, helper

    def model(ir: int, opset: int, ml: int | None) -> bytes:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        ops = [helper.make_opsetid("", opset)] + (
            [helper.make_opsetid("ai.onnx.ml", ml)] if ml else []
        )
        m = helper.make_model(g, opset_imports=ops)
        m.ir_version = ir
        return m.SerializeToString()

    for ir in IRS:  # opset 7 exists since IR 3
        (directory / f"ir-{ir}.onnx").write_bytes(model(ir, 7, None))
    for op in OPSETS:  # IR 7 is the newest every probed release reads
        (directory / f"opset-{op}.onnx").write_bytes(model(7, op, None))
    for ml in ML_OPSETS:
        (directory / f"ml-{ml}.onnx").write_bytes(model(7, 13, ml))


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _base() -> Path:
    if not _python(BASE).exists():
        subprocess.run([sys.executable, "-m", "venv", str(BASE)], check=True)
        # numpy 1.26 runs both the releases built against numpy 1 (< 1.19) and later ones.
        subprocess.run(
            [
                str(_python(BASE)),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "numpy==1.26.4",
                "protobuf",
                "flatbuffers",
                "packaging",
                "coloredlogs",
                "sympy",
            ],
            check=True,
        )
    return BASE


def probe(version: str, models: Path) -> dict[str, object]:
    """What onnxruntime ``version`` loads: lists of IR versions, opsets and ML opsets."""
    base = _base()
    target = base / "ort" / version
    if not (target / "onnxruntime").is_dir():
        subprocess.run(
            [
                str(_python(base)),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
                str(target),
                f"onnxruntime=={version}",
            ],
            check=True,
        )
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run(
        [str(_python(base)), "-c", _CHILD, str(models)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if res.returncode:
        return {"version": version, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="*")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        _models(Path(tmp))
        for v in args.versions:
            r = probe(v, Path(tmp))
            results.append(r)
            if "error" in r:
                print(f"{v}: error {r['error']}", flush=True)
            else:
                print(
                    f"{v}: max IR {max(r['ir'])}, max opset {max(r['opset'])}, "
                    f"max ai.onnx.ml {max(r['ml'])}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
