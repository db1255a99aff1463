"""PyTorch ``nn.Module``s, through torch.export and the dynamo ONNX exporter.

The sample input decides the graph's inputs: a tensor or a tuple of tensors are
the positional arguments of ``forward()`` and take its parameter names; a dict
of tensors are keyword arguments and take their keys. Integer inputs (token
ids) keep their dtype. Outputs are named by their dict keys when ``forward()``
returns a dict, else ``output`` (one tensor) or ``output_0``, ``output_1``...
(a tuple); ``predict`` gives the first. Axis 0 of every input is dynamic
("batch") unless ``dynamic_axes`` says otherwise for that input. A sample of
size 1 on a dynamic axis (``torch.randn(1, 3, 224, 224)``) is exported on its
copy repeated to size 2 there, because torch.export would fix a size of 1;
parity is checked on the sample as given and on that copy.

Export runs in two steps so that failures can be explained: ``torch.export``
captures the module (a dynamic axis the code fixes to a constant, or a shape
that depends on tensor values, is reported here, naming the axis or the line),
then ``torch.onnx.export(..., dynamo=True)`` translates it (an operator without
an ONNX translation is reported with the module that calls it). When the dynamo
path fails for another reason, or an operator cannot be translated, the
TorchScript exporter is tried instead, with an :class:`bundle.ExportFallbackWarning`
that gives torch's reason (and carries its exception as ``cause``); the
manifest's ``model.converter`` says which one produced the graph.

The graph is exported without onnxscript's optimizer, so parameters and buffers
reach the ONNX initializers verbatim under their ``state_dict`` names
(onnxruntime does the constant folding and fusions itself when it loads the
graph). A name in ``weights.safetensors`` always means that parameter's exact
value. On the dynamo path the exporter names each initializer from torch.export's
graph signature and keeps the tensor itself as its value: the tensor's storage
(and its version counter, unchanged since the training state was captured)
proves which parameter it is, no bytes are compared, and the initializer leaves
the graph before it is serialized -- its bytes go from the tensor's memory
straight into the bundle (:attr:`bundle.export.Converted.buffers`), so no
ModelProto ever holds the weights, at any size. The TorchScript exporter gives no
such map: there, initializers bit-identical to a parameter but carrying an
exporter name (``onnx::MatMul_12``) are renamed to the parameter's name by
comparing values. On both paths one that carries a parameter's name but holds
something else (a fused or transposed weight, a buffer ``forward()`` updated) is
renamed away from it (``<name>.folded``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConversionError, ExportFallbackWarning
from ..format.manifest import Method
from . import Converted, axis_bounds, axis_names, check_dynamic_axes, named_outputs
from .onnx_graph import NonStandardOperatorError, adopt_state_names, rename_aside, tidy
from .options import TorchOptions

_INSTALL = "install the torch extra: pip install 'model-bundle[torch]'"
_INPUT_DTYPES = (
    "float32",
    "float64",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)


class _DynamoFailedError(Exception):
    """The dynamo path failed in a way the TorchScript exporter may not.

    Raised only inside ``_dynamo``, so that catching this type -- not reading
    messages -- decides whether exporter="auto" falls back; ``cause`` is the
    exception torch (or the graph check) raised.
    """

    def __init__(self, message: str, cause: BaseException | None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


def _import() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ConversionError(f"saving a PyTorch model needs torch; {_INSTALL}") from e
    return torch


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _first_line(e: BaseException, limit: int = 400) -> str:
    # torch colours parts of its messages for terminals; warnings and logs get plain text
    text = " ".join(_ANSI.sub("", str(e)).strip().split("\n")[0].split()) or type(e).__name__
    return text[:limit]


# --------------------------------------------------------------------------- inputs


def _as_tensor(torch: Any, value: Any, where: str) -> Any:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ConversionError(
            f"sample_input {where} is a {type(value).__name__}; give tensors "
            "(a tensor, a tuple of tensors or a dict of named tensors)"
        )
    dtype = str(value.dtype).removeprefix("torch.")
    if dtype not in _INPUT_DTYPES:
        raise ConversionError(
            f"sample_input {where} has dtype {value.dtype}; graph inputs may "
            f"be {', '.join(_INPUT_DTYPES)}"
        )
    return value


def _sample(
    torch: Any, module: Any, sample: Any
) -> tuple[tuple[Any, ...], dict[str, Any], list[str], list[Any]]:
    """Positional args, keyword args, input names and input tensors (in graph order)."""
    params = list(inspect.signature(module.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = next((p for p in params if p.kind == p.VAR_POSITIONAL), None)
    varkw = next((p for p in params if p.kind == p.VAR_KEYWORD), None)
    keywords = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if isinstance(sample, Mapping):
        kwargs = {}
        for key, value in sample.items():
            if not isinstance(key, str):
                raise ConversionError(f"sample_input keys must be strings, got {key!r}")
            if key not in keywords and varkw is None:
                raise ConversionError(
                    f"sample_input key {key!r} is not a parameter of "
                    f"{type(module).__name__}.forward{_sig(params)}"
                )
            kwargs[key] = _as_tensor(torch, value, repr(key))
        if not kwargs:
            raise ConversionError("sample_input is an empty dict")
        # forward()'s parameter order, then any **kwargs extras as given: both exporters
        # order the graph inputs this way
        order = [p.name for p in params if p.name in kwargs]
        order += [k for k in kwargs if k not in order]
        kwargs = {k: kwargs[k] for k in order}
        return (), kwargs, order, list(kwargs.values())
    items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
    if not items:
        raise ConversionError("sample_input is empty")
    if len(items) > len(positional) and varargs is None:
        raise ConversionError(
            f"sample_input gives {len(items)} positional inputs but "
            f"{type(module).__name__}.forward{_sig(params)} takes "
            f"{len(positional)}"
        )
    names = []
    for i, _ in enumerate(items):
        if i < len(positional):
            names.append(positional[i].name)
        else:
            assert varargs is not None  # more items than positionals was refused above
            names.append(f"{varargs.name}_{i - len(positional)}")
    args = tuple(_as_tensor(torch, v, f"input {n!r}") for v, n in zip(items, names, strict=True))
    return args, {}, names, list(args)


def _sig(params: Sequence[inspect.Parameter]) -> str:
    return "(" + ", ".join(str(p) for p in params) + ")"


def _axes(
    names: list[str], tensors: list[Any], dynamic_axes: Mapping[str, Any] | None
) -> dict[str, dict[int, str]]:
    """Dynamic axes per input: axis 0 ('batch') by default; ``dynamic_axes`` overrides.

    Size 1 is accepted (see :func:`_widened`); size 0 is not: there is nothing to repeat.
    """
    given = check_dynamic_axes(dynamic_axes, names)
    axes: dict[str, dict[int, str]] = {}
    sizes: dict[str, tuple[str, int, int]] = {}
    for name, t in zip(names, tensors, strict=True):
        out = axis_names(name, given.get(name, {0: "batch"} if t.dim() >= 1 else {}), t.dim())
        for axis, dim in out.items():
            size = int(t.shape[axis])
            if size < 1:
                raise ConversionError(
                    f"sample_input {name!r} has size {size} on dynamic axis {axis} ({dim!r}); "
                    "give a sample with at least 1 there (e.g. 1 row), or make the axis "
                    f"static with dynamic_axes={{{name!r}: {{}}}}"
                )
            if dim in sizes and sizes[dim][2] != size:
                other, oaxis, osize = sizes[dim]
                raise ConversionError(
                    f"dynamic axis {dim!r} is {osize} in {other!r} (axis {oaxis}) but {size} in "
                    f"{name!r} (axis {axis}); axes sharing a name must have the same size"
                )
            sizes.setdefault(dim, (name, axis, size))
        axes[name] = out
    return axes


def _widened(
    torch: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    tensors: list[Any],
    axes: dict[str, dict[int, str]],
) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]] | None:
    """The sample repeated to size 2 along each of its dynamic axes of size 1, or None.

    torch.export specializes a size-1 dimension to the constant 1 (and the
    TorchScript tracer would bake it into reshapes), so a batch-1 sample -- the
    one every tutorial uses -- is exported on its repetition instead, which the
    model computes the same way row by row; parity is then checked on both.
    """
    if not any(int(t.shape[a]) == 1 for n, t in zip(names, tensors, strict=True) for a in axes[n]):
        return None
    wide = []
    for n, t in zip(names, tensors, strict=True):
        for axis in axes[n]:
            if int(t.shape[axis]) == 1:
                t = torch.cat([t, t], dim=axis)
        wide.append(t)
    if kwargs:
        return (), dict(zip(names, wide, strict=True)), wide
    return tuple(wide), {}, wide


# --------------------------------------------------------------------------- outputs


def _outputs(torch: Any, out: Any) -> tuple[list[str], list[Any]]:
    return named_outputs(out, "forward()", lambda v: isinstance(v, torch.Tensor))


def _to_numpy(t: Any, where: str) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:
        raise ConversionError(
            f"{where} is bfloat16, which the bundle's inputs and outputs "
            "cannot carry; cast it to float32 in forward()"
        )
    return t.detach().to("cpu").numpy()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet(torch: Any, caught: list[warnings.WarningMessage]) -> Iterator[None]:
    """Keep the exporters' chatter (deprecations, tracer and logging noise) to ourselves."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                caught.extend(seen)
    finally:
        logger.setLevel(level)


_CONSTRAINT = re.compile(
    r"You marked (\w+) as dynamic but your code specialized it to be a "
    r"constant \((-?\d+)\)"
)
_OPOVERLOAD = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")
_TARGET = re.compile(r"target=torch\.ops\.([\w.]+)")


def _user_frame(msg: str) -> str:
    """The user code line an export error points at, when the message has one."""
    m = re.search(
        r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line "
        r"(\d+), in (\w+)\s*\n\s*(.+)",
        msg,
    )
    if m:
        return f" at {m.group(1)}:{m.group(2)} in {m.group(3)}(): `{m.group(4).strip()}`"
    m = re.search(r"File \"([^\"]+)\", line (\d+), in (\w+)", msg)
    return f" at {m.group(1)}:{m.group(2)} in {m.group(3)}()" if m else ""


def _capture(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    axes: dict[str, dict[int, str]],
    bounds: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> Any:
    """torch.export the module; explain dynamic-shape failures (which are not retried)."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    safe: dict[str, str] = {}

    def dim(name: str) -> Any:
        if name not in dims:
            ident = name if name.isidentifier() else f"dim{len(dims)}"
            low, high = (bounds or {}).get(name, (None, None))
            dims[name] = Dim(ident, min=low, max=high)
            safe[ident] = name
        return dims[name]

    specs = [{axis: dim(d) for axis, d in axes[n].items()} or None for n in names]
    bound = inspect.signature(module.forward).bind(*args, **kwargs).arguments
    by_name = dict(zip(names, specs, strict=True))
    dynamic: dict[str, Any] = {}
    positional = iter(specs[: len(args)])
    params = inspect.signature(module.forward).parameters
    for pname, value in bound.items():
        kind = params[pname].kind
        if kind == inspect.Parameter.VAR_POSITIONAL:
            dynamic[pname] = tuple(next(positional) for _ in value)
        elif kind == inspect.Parameter.VAR_KEYWORD:
            dynamic[pname] = {k: by_name[k] for k in value}
        elif pname in kwargs:
            dynamic[pname] = by_name[pname]
        else:
            dynamic[pname] = next(positional)
    where = {d: (n, a) for n in names for a, d in axes[n].items()}
    stderr = io.StringIO()  # torch.export prints a partial graph there when it fails
    try:
        with contextlib.redirect_stderr(stderr):
            ep = torch.export.export(module, args, kwargs, dynamic_shapes=dynamic, strict=False)
        sys.stderr.write(stderr.getvalue())
        return ep
    except Exception as e:
        msg = str(e)
        m = _CONSTRAINT.search(msg)
        if m or "Constraints violated" in msg:
            if m:
                d = safe.get(m.group(1), m.group(1))
                inp, axis = where.get(d, ("?", "?"))
                raise ConversionError(
                    f"input {inp!r} axis {axis} ({d!r}) was declared dynamic, but "
                    f"{type(module).__name__} fixes it to {m.group(2)} (a reshape/view or a loop "
                    "with a hard-coded size?). Make the model independent of that size, or "
                    f"export it as fixed with dynamic_axes={{{inp!r}: {{}}}}"
                ) from e
            raise ConversionError(
                f"a dynamic axis cannot stay dynamic: {_constraint_reason(msg, where)}"
            ) from e
        if (
            type(e).__name__
            in ("GuardOnDataDependentSymNode", "DataDependentErrorOperatorNotSupported")
            or "data-dependent" in msg
        ):
            sym = re.search(r"data-dependent expression ([^\s(]+(?: [<>=!]+ [^\s(]+)?)", msg)
            expr = f" ({sym.group(1)})" if sym else ""
            raise ConversionError(
                f"{type(module).__name__} has a shape or control flow that depends on tensor "
                f"values{expr}{_user_frame(msg)}: torch.export cannot capture a size that is "
                "only known from the data (e.g. int(x.sum()), x.nonzero() sizes used in "
                "Python, or `if tensor:`). Compute that dimension from input shapes, or use "
                "torch.cond / torch._check to bound it"
            ) from e
        raise _DynamoFailedError(
            f"torch.export could not capture {type(module).__name__}: {_first_line(e)}", e
        ) from e


def _constraint_reason(msg: str, where: Mapping[str, tuple[str, Any]]) -> str:
    """torch's reason and suggested fix for a violated constraint, in bundle.save's terms.

    ``Constraints violated (seq)! ... Not all values of seq ... satisfy the generated
    guard 2 <= ... <= 64 ... Suggested fixes: seq = Dim('seq', max=64)`` becomes the
    guard and ``dynamic_axes={'input_ids': {1: ('seq', None, 64)}}``.
    """
    text = _ANSI.sub("", msg)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    reason = [ln.lstrip("- ") for ln in lines if ln.startswith(("- Not all values", "- "))]
    fixes = re.findall(r"(\w+) = Dim\('([^']+)'(?:, min=(\d+))?(?:, max=(\d+))?\)", text)
    out = lines[0].split("!")[0][:200] if lines else "constraints violated"
    if reason:
        out += f": {reason[0][:400]}"
    hints = []
    for ident, dim, low, high in fixes:
        inp, axis = where.get(dim, where.get(ident, ("?", "?")))
        bounds = (dim, int(low) if low else None, int(high) if high else None)
        hints.append(f"dynamic_axes={{{inp!r}: {{{axis}: {bounds!r}}}}}")
    if hints:
        out += (
            f". torch suggests bounding the axis: give it as {'; '.join(hints)} (every "
            "input sharing the axis name shares the bounds)"
        )
    return out


def _unsupported_op(e: BaseException, ep: Any) -> str | None:
    """'operator X (called from module 'a.b' (pkg.Cls))' for a missing ONNX translation."""
    texts: list[str] = []
    cur: BaseException | None = e
    while cur is not None and len(texts) < 8:
        texts.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    text = "\n".join(texts)
    if "No ONNX function found" not in text and "not supported" not in text.lower():
        return None
    m = _OPOVERLOAD.search(text)
    op = f"{m.group(1)}.{m.group(2)}" if m else None
    if op is None:
        t = _TARGET.search(text)
        op = t.group(1) if t else None
    if op is None:
        return None
    where = ""
    base = op.rsplit(".", 1)[0]
    for node in ep.graph.nodes:
        target = str(getattr(node, "target", ""))
        if node.op == "call_function" and (target == op or target.startswith(base + ".")):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                cls = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
                where = f" (called from module {path or '<root>'!r}, {cls})"
            break
    return f"operator {op}{where}"


def _dynamo(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    out_names: list[str],
    axes: dict[str, dict[int, str]],
    opset: int | None,
    bounds: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> Any:
    ep = _capture(torch, module, args, kwargs, names, axes, bounds)
    try:
        program = torch.onnx.export(
            ep,
            dynamo=True,
            optimize=False,
            verbose=False,
            input_names=names,
            output_names=out_names,
            opset_version=opset,
        )
    except Exception as e:
        op = _unsupported_op(e, ep)
        if op:
            raise _DynamoFailedError(
                f"{op} has no ONNX translation in the dynamo exporter", e
            ) from e
        raise _DynamoFailedError(
            f"the dynamo exporter could not translate {type(module).__name__}: {_first_line(e)}", e
        ) from e
    tensors, moved = _hold_tensors(torch, program)
    model = program.model_proto  # without the moved tensors' bytes: see _hold_tensors
    _rename_dims(model, names, axes)
    try:
        tidy(model)
    except NonStandardOperatorError as e:
        raise _DynamoFailedError(str(e), e) from e
    return model, tensors, moved


def _hold_tensors(torch: Any, program: Any) -> tuple[dict[str, Any], set[str]]:
    """The torch tensors behind the ONNX program's initializers, by initializer name,
    and the names of those taken out of the graph.

    The exporter names each initializer made from a parameter, buffer or lifted
    constant after it, from torch.export's graph signature (``inputs_to_parameters``,
    ``inputs_to_buffers``, ``inputs_to_lifted_tensor_constants``), and keeps the
    tensor itself as its value. Every one of a type ``weights.safetensors`` holds
    becomes an external reference to :data:`IN_MEMORY` before the program is
    serialized, so the ModelProto never holds their bytes (at any model size) and
    they are written from the tensors themselves.
    """
    from onnxscript import ir  # the IR torch.onnx builds the program in (onnx_ir today)

    from ..format.weights import IN_MEMORY, moves_onnx_type

    tensors: dict[str, Any] = {}
    moved: set[str] = set()
    for name, value in program.model.graph.initializers.items():
        const = value.const_value
        raw = getattr(const, "raw", None)
        if not isinstance(raw, torch.Tensor) or raw.is_sparse or raw.is_quantized:
            continue
        tensors[name] = raw
        if raw.numel() == 0 or not moves_onnx_type(const.dtype.value) or sys.byteorder != "little":
            continue  # stays in the graph, as the exporter wrote it
        value.const_value = ir.ExternalTensor(
            IN_MEMORY,
            offset=None,
            length=raw.numel() * raw.element_size(),
            dtype=const.dtype,
            shape=const.shape,
            name=name,
        )
        moved.add(name)
    return tensors, moved


def _same_bytes(torch: Any, a: Any, b: Any) -> bool:
    """Bit-identical tensors (dtype, shape, every byte); for the rare initializer whose
    storage does not prove it."""
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    flat = [t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
    return bool(torch.equal(flat[0], flat[1]))


def _bind_tensors(
    torch: Any,
    onx: Any,
    tensors: dict[str, Any],
    moved: set[str],
    module: Any,
    state: Any,
) -> dict[str, Any]:
    """Name the dynamo graph's initializers by proof, and say where each moved one's
    bytes come from; returns :attr:`Converted.buffers`.

    An initializer carrying a ``state_dict`` name keeps it when its tensor is that
    state tensor -- the same storage, unchanged since the training state was
    captured (or, without one, the module's live tensor). The graph signature gives
    the names; storage identity proves the values, so no bytes are compared. Only
    where storage does not prove it are the bytes compared (an exporter that copied
    a tensor), and one that differs is renamed ``<name>.folded``. With a training
    state, each state tensor proven to be a weights tensor is recorded in
    ``state.proven`` and the weights are written from the captured tensor itself.
    """
    from ..format.weights import IN_MEMORY
    from ..training.torch import byte_view, storage_key

    if state is not None:
        current = {n: origin[0] for n, origin in state.origins.items()}
    else:
        current = dict(module.state_dict(keep_vars=True))
    proven: dict[str, str] = {}
    aside: set[str] = set()
    for init in onx.graph.initializer:
        name = init.name
        if name not in current:
            continue
        t = tensors.get(name)
        if t is None:  # an exporter constant under a state name: not that tensor
            aside.add(name)
        elif state is not None and state.unchanged(name, t):
            proven[name] = name
        elif state is None and storage_key(t) == storage_key(current[name]):
            pass
        elif _same_bytes(torch, t, state.model[name] if state is not None else current[name]):
            proven[name] = name  # compared just now
        else:
            aside.add(name)
    if state is not None:
        # tied or aliased state tensors: proven by the storage of a moved initializer
        by_storage: dict[tuple[Any, ...], str] = {}
        for name in sorted(moved - aside):
            by_storage.setdefault(storage_key(tensors[name]), name)
        for name, (_, key, _) in state.origins.items():
            other = by_storage.get(key)
            if name not in proven and other is not None and state.unchanged(name, tensors[other]):
                proven[name] = other
        state.proven = {n: w for n, w in proven.items() if w in moved}
    source: dict[str, Any] = {}
    for name, weights_name in proven.items():
        if weights_name in moved:
            source.setdefault(weights_name, state.model[name] if state is not None else None)
    renamed = rename_aside(onx, aside)
    if state is not None and state.proven is not None:
        state.proven = {n: renamed.get(w, w) for n, w in state.proven.items()}
    buffers: dict[str, Any] = {}
    for name in moved:
        captured = source.get(name)
        t = tensors[name]
        if captured is not None:
            get = lambda c=captured: byte_view(c)  # noqa: E731
        elif t.device.type == "cpu" and t.is_contiguous():
            get = lambda t=t: byte_view(t)  # noqa: E731
        else:  # off a GPU (or strided): one tensor's copy at a time, while it is written
            get = lambda t=t: byte_view(t.detach().to("cpu").contiguous())  # noqa: E731
        buffers[renamed.get(name, name)] = get
    for init in onx.graph.initializer:
        if init.name in buffers:
            location = {e.key: e.value for e in init.external_data}.get("location")
            assert location == IN_MEMORY, init.name
    return buffers


def _torchscript(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    out_names: list[str],
    axes: dict[str, dict[int, str]],
    opset: int | None,
) -> Any:
    import onnx

    f = io.BytesIO()
    torch.onnx.export(
        module,
        args,
        f,
        kwargs=kwargs or None,
        dynamo=False,
        input_names=names,
        output_names=out_names,
        dynamic_axes={n: dict(a) for n, a in axes.items() if a},
        opset_version=opset,
        do_constant_folding=False,
        verbose=False,
    )
    return onnx.load_from_string(f.getvalue())


def _rename_dims(model: Any, names: list[str], axes: dict[str, dict[int, str]]) -> None:
    """Give the exporter's dimension symbols (s52...) the names the caller chose."""
    symbols: dict[str, str] = {}
    inputs = {vi.name: vi for vi in model.graph.input}
    for n in names:
        vi = inputs.get(n)
        if vi is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, d in axes[n].items():
            if axis < len(dims) and dims[axis].dim_param and dims[axis].dim_param != d:
                symbols.setdefault(dims[axis].dim_param, d)
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: symbols[m.group(1)], d.dim_param)


# --------------------------------------------------------------------------- entry point


def convert(
    model: Any,
    sample_input: Any,
    *,
    target_opset: int | None = None,
    options: TorchOptions | None = None,
) -> Converted:
    """Export an ``nn.Module`` (see the module docstring)."""
    opts = options or TorchOptions()
    dynamic_axes, exporter = opts.dynamic_axes, opts.exporter
    optimizer, scheduler = opts.optimizer, opts.scheduler
    include_rng, training_state = opts.include_rng, opts.training_state
    torch = _import()
    from ..training import torch as training_mod

    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__qualname__}")
    name = type(model).__name__
    if sample_input is None:
        raise ConversionError(
            "sample_input is required: a tensor, a tuple of tensors or a dict "
            "of named tensors, as forward() takes them"
        )
    args, kwargs, names, tensors = _sample(torch, model, sample_input)
    axes = _axes(names, tensors, dynamic_axes)
    widened = _widened(torch, args, kwargs, names, tensors, axes)
    ex_args, ex_kwargs = (widened[0], widened[1]) if widened else (args, kwargs)
    # Snapshot the training state first: nothing below may change it, but RNG and
    # buffers are captured as the caller left them.
    state = (
        None
        if training_state is False
        else training_mod.capture(model, optimizer, scheduler, include_rng)
    )

    stack = contextlib.ExitStack()
    modes = {m: m.training for m in model.modules()}
    caught: list[warnings.WarningMessage] = []
    used = "dynamo" if exporter != "torchscript" else "torchscript"
    fallback: _DynamoFailedError | None = None
    notes: list[str] = []
    try:
        model.train(False)
        stack.enter_context(_without_kv_cache(model, notes))
        stack.enter_context(_without_fast_path(torch, model, notes))
        try:
            with torch.no_grad():
                out = model(*args, **kwargs)
        except Exception as e:
            raise ConversionError(
                f"{name}.forward() fails on sample_input: {_first_line(e)} "
                "(wrong dtype? torch modules usually want float32 "
                "inputs)"
            ) from e
        out_names, out_values = _outputs(torch, out)
        clash = set(out_names) & set(names)
        if clash:
            raise ConversionError(
                f"output name(s) {sorted(clash)} are also input names; rename the dict keys"
            )
        reference = {
            n: _to_numpy(v, f"output {n!r}") for n, v in zip(out_names, out_values, strict=True)
        }
        checks = []
        if widened is not None:
            try:
                with torch.no_grad():
                    wide_out = model(*ex_args, **ex_kwargs)
            except Exception as e:
                raise ConversionError(
                    f"{name}.forward() works on sample_input but fails on it repeated to size 2 "
                    f"along its dynamic axes of size 1, which torch.export needs: "
                    f"{_first_line(e)}. Give a sample of 2 or more rows"
                ) from e
            wide_values = _outputs(torch, wide_out)[1]
            checks.append(
                (
                    {
                        n: _to_numpy(t, f"input {n!r}")
                        for n, t in zip(names, widened[2], strict=True)
                    },
                    {
                        n: _to_numpy(v, f"output {n!r}")
                        for n, v in zip(out_names, wide_values, strict=True)
                    },
                )
            )
        onx = None
        held: dict[str, Any] = {}
        moved: set[str] = set()
        if used == "dynamo":
            try:
                with _quiet(torch, caught):
                    onx, held, moved = _dynamo(
                        torch,
                        model,
                        ex_args,
                        ex_kwargs,
                        names,
                        out_names,
                        axes,
                        target_opset,
                        axis_bounds(dynamic_axes),
                    )
            except _DynamoFailedError as e:
                if exporter == "dynamo":
                    raise ConversionError(f"cannot export {name}: {e.message}") from e.cause
                fallback, used = e, "torchscript"
        if onx is None:
            caught.clear()
            try:
                with _quiet(torch, caught):
                    onx = _torchscript(
                        torch, model, ex_args, ex_kwargs, names, out_names, axes, target_opset
                    )
                    tidy(onx)
            except Exception as e:
                if fallback is not None:
                    raise ConversionError(
                        f"cannot export {name}: {fallback.message}; the TorchScript exporter "
                        f"also failed: {_first_line(e)}"
                    ) from e
                raise ConversionError(
                    f"the TorchScript exporter cannot export {name}: {_first_line(e)}"
                ) from e
            if fallback is not None:
                tracer = [
                    str(w.message).split("\n")[0]
                    for w in caught
                    if type(w.message).__name__ == "TracerWarning"
                ]
                note = (
                    f" TorchScript tracing warned: {tracer[0][:300]}"
                    + (f" (and {len(tracer) - 1} more)" if len(tracer) > 1 else "")
                    if tracer
                    else ""
                )
                warnings.warn(
                    ExportFallbackWarning(
                        f"{name}: the dynamo exporter failed ({fallback.message}); exported "
                        "with the "
                        "TorchScript exporter (torch.onnx.export(dynamo=False)) instead, recorded "
                        "as converter 'torch.onnx.torchscript'. Check the recorded parity; pass "
                        f"exporter='dynamo' to make this an error.{note}",
                        fallback.cause,
                    ),
                    stacklevel=4,
                )
    finally:
        stack.close()
        for m, mode in modes.items():
            m.training = mode

    buffers: dict[str, Any] = {}
    if used == "dynamo":
        buffers = _bind_tensors(torch, onx, held, moved, model, state)
    else:
        # The TorchScript exporter gives no map from initializers to parameters (and
        # names some after the operator): they are matched to parameters by value.
        if state is not None:
            snapshot = {k: training_mod.as_numpy(t) for k, t in state.model.items()}
        else:
            snapshot = {
                k: training_mod.as_numpy(t.detach().to("cpu"))
                for k, t in model.state_dict().items()
            }
        adopt_state_names(onx, snapshot)
    graph_inputs = [i.name for i in onx.graph.input]
    if graph_inputs != names:
        raise ConversionError(
            f"the exported graph's inputs {graph_inputs} are not the sample's "
            f"{names} (an input forward() ignores?)"
        )
    feeds = {n: _to_numpy(t, f"input {n!r}") for n, t in zip(names, tensors, strict=True)}
    version = torch.__version__.split("+")[0]
    return Converted(
        model=onx,
        task="generic",
        framework="pytorch",
        framework_version=version,
        converter=f"torch.onnx.{used}",
        converter_version=version,
        feeds=feeds,
        reference=reference,
        methods={"predict": Method(out_names[0])},
        training=state,
        extra_checks=tuple(checks),
        notes=tuple(notes),
        buffers=buffers,
    )


@contextlib.contextmanager
def _without_kv_cache(model: Any, notes: list[str]) -> Iterator[None]:
    """A Hugging Face model whose config asks for a KV cache is exported without one.

    With ``use_cache`` (the default of GPT-2, Llama and every causal LM) forward()
    also returns a ``DynamicCache`` object, which is no tensor a graph can output.
    The bundle computes the logits of the whole sequence per call instead; the
    config is restored afterwards, and the manifest notes it.
    """
    is_hf = any((c.__module__ or "").split(".")[0] == "transformers" for c in type(model).__mro__)
    # every config that asks for a cache: T5's encoder and decoder stacks hold copies
    configs: dict[int, Any] = {}
    for m in model.modules() if is_hf else ():
        config = getattr(m, "config", None)
        if getattr(config, "use_cache", False) is True:
            configs[id(config)] = config
    if not configs:
        yield
        return
    for config in configs.values():
        config.use_cache = False
    notes.append(
        "exported without the KV cache (config.use_cache=False): each call "
        "recomputes attention over the whole input sequence"
    )
    try:
        yield
    finally:
        for config in configs.values():
            config.use_cache = True


@contextlib.contextmanager
def _without_fast_path(torch: Any, model: Any, notes: list[str]) -> Iterator[None]:
    """``nn.TransformerEncoder``/``MultiheadAttention`` run without PyTorch's fast path.

    In eval mode PyTorch's fused "fast path" turns a padded batch into a nested
    tensor and gives zeros at padded positions, while the exported graph (and the
    same module with the fast path off) computes them like any other position:
    the outputs differ exactly where the padding mask is set. The reference and
    the export both run with the fast path off, so parity compares like with like;
    the values at non-padded positions are the same either way.
    """
    kinds = (
        torch.nn.TransformerEncoder,
        torch.nn.TransformerEncoderLayer,
        torch.nn.MultiheadAttention,
    )
    mha = getattr(torch.backends, "mha", None)
    if (
        mha is None
        or not any(isinstance(m, kinds) for m in model.modules())
        or not mha.get_fastpath_enabled()
    ):
        yield
        return
    mha.set_fastpath_enabled(False)
    notes.append(
        "exported with PyTorch's attention fast path off: positions a padding mask "
        "hides are computed, not zeroed as the fast path does in eval mode"
    )
    try:
        yield
    finally:
        mha.set_fastpath_enabled(True)
