"""Save's second half: a converted model becomes a signed bundle.

Precision variant, lowest IR and opset stamps, the weights split out and streamed
into the zip, the graph run as written (a bundle this machine cannot load is never
written), smoke vectors and parity measured on exactly those bytes, then the
manifest described, signed and packed (:mod:`bundle.export.writer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..errors import ConversionError
from ..format.archive import EntryData
from ..format.manifest import FileEntry, Manifest, ModelInfo, OnnxInfo, is_deflated
from ..format.versions import release_tuple
from ..format.weights import WEIGHTS_NAME
from ..trust import signing

__all__ = ["Written", "requires_of", "run_onnx", "write_converted"]


def write_converted(
    converted: Any,
    path: str | os.PathLike[str],
    keys: list[signing.PrivateKey],
    *,
    name: str,
    version: str,
    description: str,
    metadata: Mapping[str, str] | None,
    tolerance: tuple[float, float] | None,
    accept_mismatch: bool,
    created: str | None,
    precision: str,
    expires_at: str | None,
    apply_precision: bool = True,
    derived_from: Any = None,
    restamp: bool = True,
) -> Manifest:
    """Split, measure, describe, sign and pack a converted model (save's second half)."""
    from ..format import compat
    from ..format import weights as weights_mod
    from ..format.graph import io_specs
    from ..runtime import smoke as smoke_mod
    from . import parity as parity_mod
    from . import precision as precision_mod
    from .writer import GRAPH_NAME, StreamEntry, pack

    buffers = converted.buffers
    if precision != "fp32" and apply_precision:
        # The converters work on tensors in memory: read external data in first.
        weights_mod.inline_external_data(converted.model, buffers)
        buffers = {}  # the new graph's initializers are its own
        if getattr(converted.training, "proven", None) is not None:
            # The exporter proved which weights are which parameters for the fp32
            # graph; the training state is matched against the new weights by value.
            converted.training.proven = None
        if not converted.reference and converted.feeds is not None:
            # Plain ONNX has no original framework: the fp32 graph is the reference.
            converted.reference = run_onnx(converted.model, converted.feeds)
        converted.model = precision_mod.apply(converted.model, precision)
    onx = converted.model
    atol, rtol = tolerance or precision_mod.DEFAULT_TOLERANCE[precision]
    if restamp:
        try:
            compat.restamp_opsets(onx)
        except KeyError as e:
            raise ConversionError(f"the graph cannot be resolved: {e.args[0]}") from e
    # The lowest IR version the opsets and types allow, never higher: a higher stamp only
    # shuts out older runtimes (onnx.helper.make_model stamps its own newest).
    onx.ir_version = compat.lowest_ir_version(onx)
    requires = requires_of(onx)

    # The weights go straight from the model into the bundle (no serialized copy);
    # parity is then measured on the graph and weights as written.
    split = weights_mod.split_weights(onx, buffers)
    # A training entry comes as bytes, or as a TensorFile streamed like the weights.
    training = converted.training.entries(split.arrays) if converted.training is not None else []
    graph_bytes = split.model.SerializeToString()
    inputs, outputs = io_specs(onx)
    opsets = {op.domain or "ai.onnx": op.version for op in onx.opset_import}
    model_name = name
    if not model_name:
        raise ConversionError("give the model a name")

    parity = None
    smoke = None
    dtypes = {s.name: s.dtype for s in (*inputs, *outputs)}

    def measure_parity(written: str, offsets: dict[str, int]) -> None:
        nonlocal parity, smoke
        graph = Written(split, written, offsets[WEIGHTS_NAME])
        # Every save runs what it wrote on this machine's onnxruntime: a bundle the
        # exporting machine cannot load is never written.
        run_onnx(graph, None)
        if converted.feeds is not None:
            # Rows can be cut only where every input's first axis is dynamic.
            cut = all(s.shape and not isinstance(s.shape[0], int) for s in inputs)
            smoke = smoke_mod.encode(
                converted.feeds, lambda f: run_onnx(graph, f), dtypes, atol, rtol, cut=cut
            )
        if converted.feeds is not None and converted.reference:
            rows = len(next(iter(converted.feeds.values())))
            measured = [
                parity_mod.measure(
                    run_onnx(graph, feeds),
                    reference,
                    converted.methods,
                    atol=atol,
                    rtol=rtol,
                    rows=rows,
                )
                for feeds, reference in (
                    (converted.feeds, converted.reference),
                    *converted.extra_checks,
                )
            ]
            parity = parity_mod.check(parity_mod.worst(measured), accept_mismatch)

    def make_manifest(files: list[FileEntry]) -> Manifest:
        return Manifest(
            model=ModelInfo(
                model_name,
                version,
                description,
                converted.task,
                converted.framework,
                converted.framework_version,
                converted.converter,
                converted.converter_version,
                precision,
            ),
            onnx=OnnxInfo(onx.ir_version, opsets, requires.onnxruntime),
            requires=requires,
            smoke=smoke,
            inputs=inputs,
            outputs=outputs,
            files=tuple(files),
            methods=converted.methods,
            columns=converted.columns,
            parity=parity,
            metadata=dict(metadata or {}),
            created_by=f"model-bundle {__version__}",
            created=created,
            expires=expires_at,
            derived_from=derived_from,
        )

    contents = [EntryData(GRAPH_NAME, graph_bytes, compress=True)]
    streams = [StreamEntry(WEIGHTS_NAME, split.size, split.chunks)]
    for n, data in training:
        if isinstance(data, weights_mod.TensorFile):
            streams.append(StreamEntry(n, data.size, data.chunks))
        elif isinstance(data, bytes):
            deflated = is_deflated(n, "training_state")
            contents.append(EntryData(n, data, compress=deflated, align=not deflated))
        else:
            raise TypeError(f"training entry {n}: {type(data).__name__}, not bytes or TensorFile")
    return pack(
        path,
        contents,
        make_manifest,
        keys,
        {
            GRAPH_NAME: "graph",
            WEIGHTS_NAME: "weights",
            **{n: "training_state" for n, _ in training},
        },
        streams=streams,
        before_manifest=measure_parity,
    )


class Written:
    """The graph as written into an unfinished bundle file, its weights mapped from there.

    One session, made on first use, serves every run of the export.
    """

    def __init__(self, split: Any, path: str, weights_offset: int) -> None:
        self.split, self.path, self.weights_offset = split, path, weights_offset
        self._session: Any = None

    def run(self, feeds: Mapping[str, Any] | None) -> dict[str, Any]:
        """Run on CPU; every output by name (None: only create the session)."""
        import onnx

        from ..runtime.session import create_session

        if self._session is None:
            graph = onnx.ModelProto()
            graph.CopyFrom(self.split.model)
            self._session, _ = create_session(
                graph,
                self.split.header,
                self.path,
                self.weights_offset,
                None,
                ["CPUExecutionProvider"],
                prepack=False,
            )
        if feeds is None:
            return {}
        names = [o.name for o in self.split.model.graph.output]
        return dict(zip(names, self._session.run(names, dict(feeds)), strict=True))


def requires_of(onx: Any) -> Any:
    """The ``requires`` block of a graph about to be written (its stamps already lowest)."""
    import onnxruntime as ort

    from ..format import compat
    from ..format.manifest import Requires

    opsets = {op.domain or "ai.onnx": op.version for op in onx.opset_import}
    try:
        effective = compat.effective_opsets(onx)
    except KeyError as e:
        raise ConversionError(f"the graph cannot be resolved: {e.args[0]}") from e
    # Stamped newer than every release measured: the onnxruntime running it here (save
    # runs it) is the oldest release known to load it.
    oldest = compat.min_onnxruntime(onx.ir_version, opsets) or ".".join(
        str(x) for x in release_tuple(ort.__version__)[:2]
    )
    return Requires(oldest, onx.ir_version, opsets, effective, ("CPUExecutionProvider",))


def run_onnx(model: Any, feeds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run an ONNX model on CPU (in memory, or as written into a bundle); outputs by name."""
    import onnxruntime as ort

    try:
        if isinstance(model, Written):
            return model.run(feeds)
        assert feeds is not None
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in model.graph.output]
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))
    except Exception as e:
        raise ConversionError(
            f"onnxruntime cannot run the converted model: {str(e).splitlines()[0]}"
        ) from e
