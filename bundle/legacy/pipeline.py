"""migrate(): scan, check the approval, convert (in the sandbox when code must run), sign.

Three routes, chosen by the scan, never by the file's name:

* tensors-only PyTorch checkpoint -> ``torch.load(weights_only=True)`` into the
  module the caller passes (``model=``), exported here: nothing from the file runs;
* object pickle (joblib, pickle, a pickled ``nn.Module``) or ``.keras``/``.h5`` ->
  only if every global (custom object) the scan lists was approved; unpickled
  (Keras: loaded in safe mode) in the sandbox child, which exports and checks
  parity and writes an unsigned bundle; this process verifies that bundle, checks
  its migration record is the one it asked for, and signs it;
* anything dangerous, unresolvable, or needing more than was approved -> an
  :class:`ApprovalError` before any process starts or any byte is unpickled.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from ..errors import ApprovalError, ConversionError, FormatError
from ..format import canonical_json
from ..format.manifest import Manifest
from .sandbox import Limits, run_child
from .scanner import ScanReport, scan_bytes

__all__ = ["RECORD_KEY", "RECORD_VERSION", "approvals_from_scan", "migrate", "migration_record"]

RECORD_KEY = "migration"
"""The manifest metadata key holding the migration record (canonical JSON)."""
RECORD_VERSION = 1
MAX_SOURCE_BYTES = 16 << 30
MAX_SCAN_JSON = 64 << 20

_KINDS = {
    "pickle": "pickle",
    "joblib": "joblib",
    "torch-zip": "torch",
    "torch-legacy": "torch",
    "keras": "keras",
    "h5": "keras",
}
_TOOLS = {
    "pickle": ("scikit-learn", "skl2onnx", "joblib"),
    "joblib": ("scikit-learn", "skl2onnx", "joblib"),
    "torch": ("torch", "onnxscript"),
    "keras": ("keras", "tensorflow", "tf2onnx"),
}
_LOADED_WITH = {
    "pickle": "restricted unpickler (approved globals only) in the migration sandbox",
    "joblib": "restricted joblib unpickler (approved globals only) in the migration sandbox",
    "torch": "torch.load with the restricted unpickler (approved globals only) in the "
    "migration sandbox",
    "keras": "keras.saving.load_model(safe_mode=True, approved custom objects only) in the "
    "migration sandbox",
    "weights_only": "torch.load(weights_only=True) into the caller's module",
}


def _versions(names: Sequence[str]) -> dict[str, str]:
    out = {"model-bundle": _own_version(), "python": sys.version.split()[0]}
    for name in ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _own_version() -> str:
    from .._version import __version__

    return __version__


def migration_record(
    report: ScanReport,
    approved: Sequence[str],
    loaded_with: str,
    tools: Mapping[str, str],
    tolerance: Any = None,
) -> dict[str, Any]:
    """The record a migrated bundle's manifest carries under ``metadata["migration"]``
    (canonical JSON; spec/FORMAT.md "Migration record", spec/migration.schema.json)."""
    return {
        "version": RECORD_VERSION,
        "source": {
            "name": os.path.basename(report.path),
            "format": report.format,
            "sha256": report.sha256,
            "size": report.size,
        },
        "verdict": report.verdict,
        "approved": sorted(approved),
        "tensor_globals": sorted({f.target for f in report.findings if f.tensor}),
        "loaded_with": loaded_with,
        "tools": dict(sorted(tools.items())),
        "parity": {
            "required": True,
            "tolerance": list(tolerance) if tolerance is not None else None,
        },
    }


def _read_source(path: str | os.PathLike[str]) -> bytes:
    p = os.fspath(path)
    if os.path.isdir(p):
        raise ConversionError(
            f"{p} is a directory (a SavedModel?): migrate reads single files; "
            "scan it, then export it with bundle.save(path) if the scan "
            "says no-code"
        )
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise FormatError(f"cannot read {p}: {e.strerror or e}", entry=p) from e
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise FormatError(f"{p} is larger than {MAX_SOURCE_BYTES} bytes", entry=p)
    return data


def _check_approval(report: ScanReport, approve: Iterable[str]) -> list[str]:
    if report.problems:
        raise ApprovalError(
            f"{report.path} cannot be scanned completely, so nothing in it "
            "can be approved: " + "; ".join(report.problems),
            entry=report.path,
        )
    if report.dangerous:
        raise ApprovalError(
            f"{report.path} needs {', '.join(report.dangerous)}: known ways to "
            "run code, never approvable; nothing was run",
            entry=report.path,
        )
    approved = set(approve)
    missing = sorted(set(report.needs_approval) - approved)
    if missing:
        raise ApprovalError(
            f"{report.path} needs {', '.join(missing)}, which "
            f"{'was' if len(missing) == 1 else 'were'} not approved; nothing "
            "was run (review the scan, then approve exactly these)",
            entry=report.path,
        )
    return sorted(report.needs_approval)


def approvals_from_scan(
    scan_json: str | os.PathLike[str], source: str | os.PathLike[str]
) -> list[str]:
    """The globals a saved scan (``model-bundle scan --json``) lists, to approve for
    ``source``: refused (:class:`ApprovalError`) when the scan is of another file
    (its SHA-256 differs), so an approval cannot be carried over to different bytes."""
    import hashlib

    try:
        with open(scan_json, "rb") as f:
            saved = canonical_json.loads(
                f.read(MAX_SCAN_JSON + 1)[: MAX_SCAN_JSON + 1], what=os.fspath(scan_json)
            )
    except OSError as e:
        raise FormatError(f"cannot read {os.fspath(scan_json)}: {e.strerror or e}") from e
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("globals"), list)
        or not all(isinstance(g, str) for g in saved["globals"])
    ):
        raise FormatError(f"{os.fspath(scan_json)} is not a scan report (no globals list)")
    h = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if saved.get("sha256") != h.hexdigest():
        raise ApprovalError(
            f"{os.fspath(scan_json)} is the scan of another file (SHA-256 "
            f"{str(saved.get('sha256'))[:16]}..., {os.fspath(source)} is "
            f"{h.hexdigest()[:16]}...); scan this file and review it"
        )
    return list(saved["globals"])


def _sample_layout(sample_input: Any) -> tuple[str, dict[str, Any]]:
    import numpy as np

    def arr(v: Any) -> Any:
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu().numpy()
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise TypeError(
                "sample_input must be numeric/string arrays (no objects): it is "
                "handed to the sandbox as .npz, without pickle"
            )
        return a

    if isinstance(sample_input, Mapping):
        return "dict", {str(k): arr(v) for k, v in sample_input.items()}
    if (
        isinstance(sample_input, (tuple, list))
        and sample_input
        and all(hasattr(v, "shape") for v in sample_input)
    ):
        return "tuple", {f"x{i}": arr(v) for i, v in enumerate(sample_input)}
    return "array", {"x": arr(sample_input)}


def migrate(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    approve: Iterable[str] = (),
    model: Any = None,
    sample_input: Any = None,
    signing_key: Any = None,
    passphrase: bytes | None = None,
    name: str | None = None,
    version: str = "1",
    tolerance: tuple[float, float] | None = None,
    search_path: Sequence[str] = (),
    limits: Limits | None = None,
) -> Manifest:
    """Convert a legacy model file to a signed bundle at ``out``; return its manifest.

    The file is scanned first (:func:`bundle.scan`); it is converted only if the scan
    resolves everything and ``approve`` names every global (Keras custom object) it
    lists that is not tensor plumbing -- otherwise :class:`bundle.ApprovalError` and
    nothing runs. A tensors-only PyTorch checkpoint needs ``model`` (an ``nn.Module``
    of its architecture): it is loaded with ``torch.load(weights_only=True)``. Other
    files are loaded in a sandboxed child process (:mod:`bundle.legacy.sandbox`,
    ``limits``); ``search_path`` adds directories where that child may import the
    approved classes from (it runs with ``python -I``). ``sample_input`` (arrays, a
    tuple or a dict of arrays) is required: parity against the original model is
    measured and must pass (``tolerance``: atol, rtol). ``signing_key`` (and
    ``passphrase``) sign the result; the manifest's ``metadata["migration"]``
    records the source's SHA-256 and format, the approved globals, the tool versions
    and that parity was required. ``name`` defaults to the file's stem.
    """
    if sample_input is None:
        raise ValueError(
            "migrate needs sample_input: parity against the original model is "
            "how a migration is checked"
        )
    data = _read_source(path)
    report = scan_bytes(data, os.fspath(path))
    approved = _check_approval(report, approve)
    kind = _KINDS.get(report.format)
    name = name or os.path.splitext(os.path.basename(os.fspath(path)))[0] or "model"
    if kind == "torch" and report.tensors_only:
        return _migrate_weights_only(
            data,
            report,
            out,
            model,
            sample_input,
            signing_key,
            passphrase,
            name,
            version,
            tolerance,
        )
    if kind is None or report.tensors_only:
        raise ConversionError(
            f"{report.path}: a {report.format} file "
            f"({report.verdict}) is not a model migrate can convert"
            + (
                "; pass model= for a tensors-only torch checkpoint"
                if report.format.startswith("torch")
                else ""
            )
        )
    if model is not None:
        raise ValueError(
            f"model= is for tensors-only checkpoints; {report.path} holds the model itself"
        )
    tools = _versions(_TOOLS[kind])
    record = migration_record(report, approved, _LOADED_WITH[kind], tools, tolerance)
    return _migrate_in_sandbox(
        data,
        report,
        kind,
        approved,
        _record_text(record),
        out,
        sample_input,
        signing_key,
        passphrase,
        name,
        version,
        tolerance,
        search_path,
        limits or Limits(),
    )


def _record_text(record: dict[str, Any]) -> str:
    text = canonical_json.dumps(record).decode("utf-8")
    if len(text) > 8192:
        raise ConversionError(
            f"the migration record is {len(text)} characters, more than a "
            "manifest metadata value may hold (8192)"
        )
    return text


def _migrate_weights_only(
    data: bytes,
    report: ScanReport,
    out: str | os.PathLike[str],
    model: Any,
    sample_input: Any,
    signing_key: Any,
    passphrase: bytes | None,
    name: str,
    version: str,
    tolerance: tuple[float, float] | None,
) -> Manifest:
    if model is None:
        raise ValueError(
            f"{report.path} is a tensors-only checkpoint: pass model= (an "
            "nn.Module of its architecture) to load it into"
        )
    import torch

    from ..api import save

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(
            f"torch.load(weights_only=True) refused {report.path}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ConversionError(
            f"{report.path} does not fit the model given: {' '.join(str(e).split())[:600]}"
        ) from e
    model.eval()
    record = migration_record(
        report, [], _LOADED_WITH["weights_only"], _versions(_TOOLS["torch"]), tolerance
    )
    return save(
        model,
        out,
        sample_input=sample_input,
        signing_key=signing_key,
        passphrase=passphrase,
        name=name,
        version=version,
        metadata={RECORD_KEY: _record_text(record)},
        tolerance=tolerance,
    )


def _migrate_in_sandbox(
    data: bytes,
    report: ScanReport,
    kind: str,
    approved: list[str],
    record_text: str,
    out: str | os.PathLike[str],
    sample_input: Any,
    signing_key: Any,
    passphrase: bytes | None,
    name: str,
    version: str,
    tolerance: tuple[float, float] | None,
    search_path: Sequence[str],
    limits: Limits,
) -> Manifest:
    import numpy as np

    from ..api import sign, verify
    from .child import OUTPUT, REQUEST, SAMPLE

    layout, arrays = _sample_layout(sample_input)
    out_path = os.path.abspath(os.fspath(out))
    workdir = tempfile.mkdtemp(prefix=".migrate-", dir=os.path.dirname(out_path))
    try:
        request = {
            "kind": kind,
            "sha256": report.sha256,
            "approved": approved,
            "record": record_text,
            "name": name,
            "version": version,
            "tolerance": list(tolerance) if tolerance else None,
            "sample_layout": layout,
            "suffix": ".h5" if report.format == "h5" else ".keras",
            "search_path": [os.path.abspath(p) for p in search_path],
        }
        with open(os.path.join(workdir, REQUEST), "wb") as f:
            f.write(canonical_json.dumps(request))
        np.savez(os.path.join(workdir, SAMPLE), allow_pickle=False, **arrays)
        result = run_child(workdir, data, limits)
        if not result.get("ok"):
            message = f"the migration sandbox: {result.get('error')}: {result.get('message')}"
            if result.get("error") == "ApprovalError":
                raise ApprovalError(message, entry=report.path)
            raise ConversionError(message, entry=report.path)
        if result.get("network") != "network namespace":
            import warnings

            warnings.warn(
                "the migration sandbox could not enter a network namespace here; "
                "only its audit hook refused network access (see SECURITY.md)",
                RuntimeWarning,
                stacklevel=3,
            )
        unsigned = os.path.join(workdir, OUTPUT)
        checked = verify(unsigned, allow_unsigned=True)
        manifest = checked.manifest
        if manifest.metadata.get("migration") != record_text:
            raise ConversionError(
                "the sandbox's bundle does not carry the migration record it was given; not signed"
            )
        if manifest.parity is None or not manifest.parity.passed:
            raise ConversionError("the sandbox's bundle has no passing parity record; not signed")
        if signing_key is not None:
            sign(unsigned, signing_key, passphrase=passphrase)
        os.replace(unsigned, out_path)
        return manifest
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
