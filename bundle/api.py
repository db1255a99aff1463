"""The public functions: save, load, verify, inspect, sign."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import signing
from ._version import __version__
from ._verify import VerifyReport, signature_entries, verify_archive
from .archive import ALIGNMENT, EntryData, ZipReader
from .errors import ConversionError, FormatError, KeyFileError
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, FileEntry, Manifest, ModelInfo, OnnxInfo
from .weights import WEIGHTS_NAME

__all__ = ["Inspection", "inspect", "load", "restore", "save", "sign", "verify"]

ZERO_COPY_THRESHOLD = 64 << 20
"""Weights at least this large are read by onnxruntime from the bundle file itself."""

KeyLike = signing.PrivateKey | str | os.PathLike[str]


def _signing_keys(signing_key: KeyLike | Sequence[KeyLike] | None,
                  passphrase: bytes | None) -> list[signing.PrivateKey]:
    if signing_key is None:
        return []
    items = signing_key if isinstance(signing_key, (list, tuple)) else [signing_key]
    return [signing.load_private_key(k, passphrase) for k in items]


def save(model: Any, path: str | os.PathLike[str], *, sample_input: Any = None,
         signing_key: KeyLike | Sequence[KeyLike] | None = None,
         passphrase: bytes | None = None, name: str | None = None, version: str = "1",
         description: str = "", metadata: Mapping[str, str] | None = None,
         tolerance: tuple[float, float] | None = None, accept_mismatch: bool = False,
         created: str | None = None, target_opset: int | None = None,
         precision: str = "fp32", dynamic_axes: Mapping[str, Any] | None = None,
         exporter: str = "auto", optimizer: Any = None, scheduler: Any = None,
         include_rng: bool = False, training_state: bool | None = None) -> Manifest:
    """Export ``model`` to a bundle at ``path`` and return its manifest.

    ``model`` is a fitted scikit-learn estimator or pipeline, an ``onnx.ModelProto``
    or a path to an ``.onnx`` file. ``sample_input`` (a few rows: array or
    DataFrame) fixes the input signature and is used to measure parity against
    the original; a disagreement beyond ``tolerance`` (atol, rtol) raises
    :class:`ConversionError` unless ``accept_mismatch``. ``signing_key`` (a key,
    a PEM path, or several) signs the bundle; without one it is unsigned.
    ``created`` is an optional timestamp string recorded as given (none by
    default, so the same model gives the same bytes). ``precision`` "fp16" or
    "int8" stores a compressed variant; its deviation from the original is
    measured and recorded like any conversion's (default tolerances per precision
    in :data:`bundle.precision.DEFAULT_TOLERANCE`).

    PyTorch ``nn.Module``: ``sample_input`` is a tensor, a tuple of tensors or a dict
    of named tensors (2+ rows); axis 0 of each input is dynamic unless
    ``dynamic_axes`` (``{input: {axis: "name"}}``) says otherwise. ``exporter``:
    "auto" (dynamo, falling back to TorchScript with a warning), "dynamo" or
    "torchscript". The bundle also holds the module's training state (every
    parameter and buffer exactly, see :mod:`bundle.training`) unless
    ``training_state=False``; ``optimizer``, ``scheduler`` and ``include_rng`` add
    their states, for :func:`restore`.
    """
    from . import parity as parity_mod
    from . import precision as precision_mod
    from . import weights as weights_mod
    from ._writer import GRAPH_NAME, min_onnxruntime, pack
    from .convert import convert
    from .graph import io_specs

    keys = _signing_keys(signing_key, passphrase)
    torch_options = {k: v for k, v in (("dynamic_axes", dynamic_axes), ("optimizer", optimizer),
                                       ("scheduler", scheduler), ("training_state", training_state))
                     if v is not None}
    if exporter != "auto":
        torch_options["exporter"] = exporter
    if include_rng:
        torch_options["include_rng"] = True
    converted = convert(model, sample_input, target_opset=target_opset, **torch_options)
    if precision != "fp32":
        if not converted.reference and converted.feeds is not None:
            # Plain ONNX has no original framework: the fp32 graph is the reference.
            converted.reference = _run_onnx(converted.model, converted.feeds)
        converted.model = precision_mod.apply(converted.model, precision)
    onx = converted.model
    atol, rtol = tolerance or precision_mod.DEFAULT_TOLERANCE[precision]

    parity = None
    if converted.feeds is not None and converted.reference:
        outs = _run_onnx(onx, converted.feeds)
        rows = len(next(iter(converted.feeds.values())))
        parity = parity_mod.check(
            parity_mod.measure(outs, converted.reference, converted.methods, atol=atol,
                               rtol=rtol, rows=rows), accept_mismatch)

    tensors = weights_mod.externalize(onx)
    training = converted.training.entries(tensors) if converted.training is not None else []
    weights_bytes = weights_mod.serialize(tensors)
    header = weights_mod.parse_header(weights_bytes, len(weights_bytes))
    weights_mod.bind_external(onx, header)
    graph_bytes = onx.SerializeToString()
    inputs, outputs = io_specs(onx)
    opsets = {op.domain or "ai.onnx": op.version for op in onx.opset_import}
    model_name = name or type(model).__name__ if not isinstance(model, (str, os.PathLike)) \
        else name or os.path.splitext(os.path.basename(os.fspath(model)))[0]
    if not model_name:
        raise ConversionError("give the model a name")

    def make_manifest(files: list[FileEntry]) -> Manifest:
        return Manifest(
            model=ModelInfo(model_name, version, description, converted.task,
                            converted.framework, converted.framework_version,
                            converted.converter, converted.converter_version, precision),
            onnx=OnnxInfo(onx.ir_version, opsets,
                          min_onnxruntime(onx.ir_version, opsets.get("ai.onnx", 1))),
            inputs=inputs, outputs=outputs, files=tuple(files), methods=converted.methods,
            columns=converted.columns, parity=parity, metadata=dict(metadata or {}),
            created_by=f"model-bundle {__version__}", created=created)

    contents = [EntryData(GRAPH_NAME, graph_bytes, compress=True),
                EntryData(WEIGHTS_NAME, weights_bytes, align=True)]
    contents += [EntryData(n, data, compress=n.endswith(".json"), align=not n.endswith(".json"))
                 for n, data in training]
    return pack(path, contents, make_manifest, keys,
                {GRAPH_NAME: "graph", WEIGHTS_NAME: "weights",
                 **{n: "training_state" for n, _ in training}})


def _run_onnx(model: Any, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run an in-memory ONNX model on CPU; every output by name."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in model.graph.output]
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))
    except Exception as e:
        raise ConversionError(f"onnxruntime cannot run the converted model: "
                              f"{str(e).splitlines()[0]}") from e


def _open_verified(path: str | os.PathLike[str], trusted_keys: signing.TrustedKeys | None,
                   allow_unsigned: bool, weights_in_memory: bool | None,
                   threshold: int | None) -> Any:
    trust = signing.as_trust_store(trusted_keys) if trusted_keys is not None else None
    if trust is not None and threshold is not None:
        trust = signing.TrustStore(trust.keys, threshold=threshold)
    reader = ZipReader(path)
    try:
        if weights_in_memory is None:
            w = next((f for f in reader.entries.values() if f.name == WEIGHTS_NAME), None)
            weights_in_memory = w is None or w.size < ZERO_COPY_THRESHOLD
        return verify_archive(reader, trust, allow_unsigned=allow_unsigned,
                              weights_in_memory=weights_in_memory)
    except BaseException:
        reader.close()
        raise


def _check_content(vb: Any) -> tuple[Any, Any]:
    """Parse and check the verified weights header and graph."""
    from .graph import check_graph, parse_model
    from .weights import parse_header

    manifest = vb.report.manifest
    wfile = manifest.file("weights")
    head = vb.weights if vb.weights is not None else vb.weights_head
    header = parse_header(head, wfile.size, entry=wfile.path)
    gfile = manifest.file("graph")
    model = parse_model(vb.graph, gfile.path)
    check_graph(model, header, gfile.path)
    return model, header


def verify(path: str | os.PathLike[str], *, trusted_keys: signing.TrustedKeys | None = None,
           allow_unsigned: bool = False, threshold: int | None = None) -> VerifyReport:
    """Verify signature, structure, every byte and the graph; return who signed what.

    Raises a :class:`BundleError` subclass naming what failed. Nothing is executed.
    """
    vb = _open_verified(path, trusted_keys, allow_unsigned, False, threshold)
    try:
        _check_content(vb)
        return vb.report
    finally:
        vb.reader.close()


def load(path: str | os.PathLike[str], *, trusted_keys: signing.TrustedKeys | None = None,
         allow_unsigned: bool = False, device: str = "auto", threshold: int | None = None,
         zero_copy: bool | None = None, session_options: Any = None,
         provider_options: Mapping[str, Any] | None = None) -> Any:
    """Verify a bundle, then return a :class:`bundle.Model` ready to predict.

    ``device``: "auto" (CUDA when it really initialises, else CPU), "cpu", "cuda",
    "cuda:N" or "tensorrt"; an explicit GPU device that cannot run raises
    :class:`DeviceError`. ``provider_options`` pass through to the GPU provider.
    ``zero_copy`` (default: for weights of 64 MiB and more) lets onnxruntime read
    the weights straight from the bundle file rather than from the verified
    in-memory copy; see SECURITY.md for what that means for a local writer.
    """
    from .graph import inline_external, rebase_external
    from .runtime import Model, select_providers

    providers = select_providers(device, provider_options)
    in_memory = None if zero_copy is None else not zero_copy
    vb = _open_verified(path, trusted_keys, allow_unsigned, in_memory, threshold)
    try:
        model, _header = _check_content(vb)
        manifest = vb.report.manifest
        _check_runtime_version(manifest)
        import onnxruntime as ort

        so = session_options or ort.SessionOptions()
        so.log_severity_level = 3
        if vb.weights is not None:
            inline_external(model, vb.weights)
        else:
            entry = vb.reader.entries[manifest.file("weights").path]
            abspath = os.path.abspath(vb.reader.path)
            rebase_external(model, os.path.basename(abspath), entry.data_offset)
            so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                        os.path.dirname(abspath))
            so.add_session_config_entry("session.disable_prepacking", "1")
        try:
            session = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
        except Exception as e:
            raise FormatError(f"onnxruntime cannot load the verified graph: "
                              f"{str(e).splitlines()[0]}") from e
        return Model(session, manifest, vb.report)
    finally:
        vb.reader.close()


def restore(path: str | os.PathLike[str], model: Any, optimizer: Any = None,
            scheduler: Any = None, *, trusted_keys: signing.TrustedKeys | None = None,
            allow_unsigned: bool = False, threshold: int | None = None,
            rng: bool = True) -> VerifyReport:
    """Verify a bundle exactly as :func:`load` does, then load its training state.

    ``model`` (a PyTorch module of the same architecture) gets every parameter
    and buffer; ``optimizer`` and ``scheduler``, when given, get their saved
    states (the bundle must hold them); the saved RNG states are restored when
    present and ``rng``. Everything is checked first -- names, shapes, dtypes,
    optimizer class and param groups -- and an :class:`InputError` lists every
    mismatch; nothing is loaded unless all fit. Nothing is unpickled.
    """
    from .training import restore_verified

    vb = _open_verified(path, trusted_keys, allow_unsigned, True, threshold)
    try:
        _check_content(vb)
        report: VerifyReport = restore_verified(vb, model, optimizer, scheduler, rng=rng)
        return report
    finally:
        vb.reader.close()


def _check_runtime_version(manifest: Manifest) -> None:
    import onnxruntime as ort

    from ._writer import _ver

    need = manifest.onnx.min_onnxruntime
    have = ort.__version__.split("+")[0]
    try:
        too_old = _ver(".".join(have.split(".")[:3])) < _ver(need)
    except ValueError:
        return
    if too_old:
        raise FormatError(f"this bundle needs onnxruntime >= {need}; {have} is installed")


@dataclass(frozen=True)
class Inspection:
    """A bundle's manifest as it claims to be: NOT verified, for looking only."""

    path: str
    manifest: Manifest
    claimed_signers: tuple[str, ...]
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, marked unverified."""
        return {"path": self.path, "verified": False,
                "claimed_signers": list(self.claimed_signers),
                "manifest": self.manifest.to_dict()}


def inspect(path: str | os.PathLike[str]) -> Inspection:
    """Read a bundle's manifest WITHOUT checking signatures or hashes.

    The zip structure and the manifest schema are still checked; nothing else is
    read. Use :func:`verify` before trusting anything this returns.
    """
    with ZipReader(path) as reader:
        if MANIFEST_NAME not in reader.entries:
            raise FormatError("bundle has no manifest.json", entry=MANIFEST_NAME)
        manifest = Manifest.from_bytes(reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES))
        claimed = tuple(n.split("/")[1].removesuffix(".sig") for n in signature_entries(reader))
    return Inspection(os.fspath(path), manifest, claimed)


def sign(path: str | os.PathLike[str], signing_key: KeyLike | Sequence[KeyLike], *,
         passphrase: bytes | None = None,
         trusted_keys: signing.TrustedKeys | None = None) -> VerifyReport:
    """Add a signature to an existing bundle (atomically) after checking its integrity.

    With ``trusted_keys``, the bundle must already verify against them before it
    is countersigned; without, only its integrity is checked.
    """
    from ._writer import resign

    keys = _signing_keys(signing_key, passphrase)
    if not keys:
        raise KeyFileError("no signing key given")
    vb = _open_verified(path, trusted_keys, trusted_keys is None, False, None)
    try:
        _check_content(vb)
        reader = vb.reader
        manifest_bytes = reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
        existing = signature_entries(reader)
        w = reader.entries[WEIGHTS_NAME] if WEIGHTS_NAME in reader.entries else None
        if w is not None and w.data_offset % ALIGNMENT:
            raise FormatError("weights entry is not aligned; re-export the bundle")
        resign(path, reader, vb.report.manifest, manifest_bytes, keys, existing)
    finally:
        vb.reader.close()
    trust = signing.TrustStore([k.public_key for k in keys])
    return verify(path, trusted_keys=trust)

