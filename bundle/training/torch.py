"""Training state: what a bundle needs to resume training, stored without pickle.

Two entries, both of role ``training_state`` in the manifest (listed, hashed and
signed like every file):

``training/state.safetensors``
    Every tensor of the training state that is not already in
    ``weights.safetensors``: optimizer moments and step counters, RNG states,
    and any model parameter or buffer that the ONNX graph does not hold
    verbatim (a buffer the graph never reads, such as BatchNorm's
    ``num_batches_tracked``, or a weight the exporter folded or transposed).

``training/state.json``
    Canonical JSON describing everything else::

        {"format": "model-bundle/training-state", "version": 1,
         "framework": {"name": "pytorch", "version": "..."},
         "model": {"class": "pkg.Net", "tensors": [
             {"name": "fc.weight", "dtype": "float32", "shape": [3, 6],
              "source": "weights", "key": "fc.weight"}, ...]},
         "optimizer": null | {"class": "torch.optim.adam.Adam",
             "param_groups": [{"params": ["fc.weight", ...], "options": <value>}],
             "state": {"fc.weight": <value>, ...}},
         "scheduler": null | {"class": "...", "state": <value>},
         "rng": null | <value>}

    ``model.tensors`` lists the module's ``state_dict`` in order; each entry says
    where its exact bytes are: ``"source": "weights"`` (a tensor of
    ``weights.safetensors``, usually under the same name) or ``"training"`` (a
    tensor of ``training/state.safetensors``). Optimizer state is keyed by
    parameter *name*, never by index.

A ``<value>`` is a typed tree: every node is an object with a ``type``:
``none``; ``bool``/``int``/``str`` with a ``value``; ``float`` with a JSON number,
or the string ``"inf"``, ``"-inf"`` or ``"nan"``; ``list``/``tuple`` with
``items``; ``dict`` with ``items`` as ``[key, value]`` pairs (keys typed too, so
``1`` and ``"1"`` stay apart and order is kept); ``tensor``/``ndarray`` with the
``key`` of a tensor in ``training/state.safetensors``; ``dtype`` with a torch
dtype name. Nothing else is representable: a function, a lambda or any other
object in a state is refused at save time, naming its key.

Keras models use the same two entries with ``"framework": {"name": "keras"}`` and
their own ``model``/``optimizer`` listings (:mod:`bundle.training.keras`).

Saving captures the state when ``bundle.save`` is called, without copying what
export leaves alone: parameters and optimizer/scheduler/RNG tensors on the CPU are
referenced (their version counters are checked before they are written, and one
changed in place meanwhile is refused with :class:`ConversionError`), buffers are
copied (``forward()``, which export runs, may update them), GPU tensors are copied
to the CPU. ``training/state.safetensors`` is then streamed from those tensors like
the weights, never assembled in memory.

Restoring (:func:`restore`) reads both entries from the verified archive,
checks the given model, optimizer and scheduler against them completely, and
only then assigns anything.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError, FormatError, InputError
from ..format import canonical_json as _json

if TYPE_CHECKING:
    from ..trust.verify import VerifiedBundle, VerifyReport

from .codec import (
    DTYPE_OF_SAFETENSORS,
    FORMAT,
    MAX_DEPTH,
    SAFETENSORS_DTYPE,
    STATE_JSON,
    STATE_TENSORS,
    VERSION,
    few,
    object_with,
    read_state,
    same_tensor,
    strings,
)

__all__ = [
    "STATE_JSON",
    "STATE_TENSORS",
    "TrainingState",
    "as_numpy",
    "byte_view",
    "capture",
    "restore_verified",
    "storage_key",
]


def _where(path: tuple[Any, ...]) -> str:
    head, *rest = path
    return str(head) + "".join(f"[{p!r}]" for p in rest)


class _Encoder:
    """Turns a state into a typed JSON tree, collecting its tensors by key."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self.watched: list[tuple[Any, int, str]] = []

    def key_for(self, path: tuple[Any, ...]) -> str:
        base = "/".join(str(p) for p in path)
        key, n = base, 1
        while key in self.tensors:
            n += 1
            key = f"{base}#{n}"
        return key

    def add_tensor(self, path: tuple[Any, ...], tensor: Any) -> str:
        key = self.key_for(path)
        # Referenced, not copied: nothing in an export runs the optimizer, and the
        # version counter proves at write time that nothing changed the tensor.
        self.tensors[key] = _cpu_tensor(tensor, _where(path), self.watched)
        return key

    def encode(self, value: Any, path: tuple[Any, ...], depth: int = 0) -> dict[str, Any]:
        import torch

        if depth > MAX_DEPTH:
            raise ConversionError(f"{_where(path)}: nested more than {MAX_DEPTH} levels deep")
        if value is None:
            return {"type": "none"}
        if isinstance(value, (bool, np.bool_)):
            return {"type": "bool", "value": bool(value)}
        if isinstance(value, (int, np.integer)):
            return {"type": "int", "value": int(value)}
        if isinstance(value, float):  # np.float64 too
            v = float(value)
            if math.isnan(v):
                return {"type": "float", "value": "nan"}
            if math.isinf(v):
                return {"type": "float", "value": "inf" if v > 0 else "-inf"}
            return {"type": "float", "value": v}
        if isinstance(value, np.floating):
            return self.encode(float(value), path, depth)
        if isinstance(value, str):
            return {"type": "str", "value": value}
        if isinstance(value, torch.Tensor):
            return {"type": "tensor", "key": self.add_tensor(path, value)}
        if isinstance(value, np.ndarray):
            if value.dtype.name not in SAFETENSORS_DTYPE:
                raise ConversionError(
                    f"{_where(path)}: numpy array of dtype {value.dtype} cannot be stored"
                )
            key = self.add_tensor(path, torch.from_numpy(np.ascontiguousarray(value)))
            return {"type": "ndarray", "key": key}
        if isinstance(value, torch.dtype):
            name = str(value).removeprefix("torch.")
            if name not in SAFETENSORS_DTYPE:
                raise ConversionError(f"{_where(path)}: dtype {value} cannot be stored")
            return {"type": "dtype", "value": name}
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            if kind == "tuple" and type(value) is not tuple:  # namedtuple and friends
                raise ConversionError(
                    f"{_where(path)} is a {type(value).__qualname__}; only plain tuples, "
                    "lists, dicts, numbers, strings, None and tensors can be stored"
                )
            return {
                "type": kind,
                "items": [self.encode(v, (*path, i), depth + 1) for i, v in enumerate(value)],
            }
        if isinstance(value, dict):
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool, type(None))):
                    raise ConversionError(
                        f"{_where(path)} has a key of type "
                        f"{type(k).__qualname__}; keys must be str, int, "
                        "float, bool or None"
                    )
                items.append(
                    [
                        self.encode(k, (*path, "<key>"), depth + 1),
                        self.encode(v, (*path, k), depth + 1),
                    ]
                )
            return {"type": "dict", "items": items}
        what = "a function or lambda" if callable(value) else f"a {type(value).__qualname__}"
        raise ConversionError(
            f"{_where(path)} is {what}, which cannot be stored without pickle; only None, "
            "bool, int, float, str, lists, tuples, dicts and tensors can. Remove it from the "
            "state (e.g. use a scheduler whose lr function is not stored in its state_dict)"
        )


def _cpu_tensor(tensor: Any, where: str, watched: list[tuple[Any, int, str]] | None) -> Any:
    """The tensor on the CPU, contiguous: a view of it where it already is so and
    ``watched`` is given (its version counter is recorded there, so that a change
    before it is written is caught), else a copy.

    A view keeps a multi-gigabyte state from being held twice; the copies are what a
    GPU tensor needs anyway, and what a buffer that ``forward()`` may update needs.
    """
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in SAFETENSORS_DTYPE:
        raise ConversionError(f"{where}: tensor of dtype {tensor.dtype} cannot be stored")
    if tensor.is_sparse or getattr(tensor, "is_quantized", False):
        raise ConversionError(f"{where}: sparse and quantized tensors cannot be stored")
    version = _version(tensor)
    if watched is not None and version is not None and tensor.device.type == "cpu":
        view = tensor.detach()
        if view.is_contiguous():
            watched.append((tensor, version, where))
            return view
    return tensor.detach().to("cpu", copy=True).contiguous()


def _version(tensor: Any) -> int | None:
    """The tensor's version counter (bumped by every in-place change), if it has one."""
    try:
        return int(tensor._version)
    except (RuntimeError, AttributeError):  # inference-mode tensors have none
        return None


def storage_key(tensor: Any) -> tuple[Any, ...]:
    """What makes two tensors the same bytes by construction: device, dtype, storage
    address, offset, shape and strides."""
    return (
        str(tensor.device),
        tensor.dtype,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def byte_view(tensor: Any) -> np.ndarray:
    """A contiguous CPU tensor's bytes as a flat uint8 array sharing its memory (any
    dtype, bfloat16 included; little-endian on the machines torch runs on)."""
    import torch

    view: np.ndarray = tensor.detach().reshape(-1).view(torch.uint8).numpy()
    return view


class _Decoder:
    """Rebuilds values from a typed tree; every tensor key must exist."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        self.tensors = tensors
        self.used: set[str] = set()

    def tensor(self, key: Any, where: str) -> Any:
        if not isinstance(key, str) or key not in self.tensors:
            raise FormatError(
                f"{STATE_JSON}: {where} refers to tensor {key!r}, which "
                f"{STATE_TENSORS} does not hold",
                entry=STATE_JSON,
            )
        self.used.add(key)
        return self.tensors[key]

    def decode(self, node: Any, where: str, depth: int = 0) -> Any:
        import torch

        def fields(*names: str) -> dict[str, Any]:
            if not isinstance(node, dict) or set(node) != {"type", *names}:
                raise FormatError(
                    f"{STATE_JSON}: {where}: malformed {node.get('type')!r} "
                    f"node (fields {sorted(node)})",
                    entry=STATE_JSON,
                )
            return node

        if depth > MAX_DEPTH:
            raise FormatError(f"{STATE_JSON}: {where}: nested too deep", entry=STATE_JSON)
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise FormatError(f"{STATE_JSON}: {where}: expected a typed node", entry=STATE_JSON)
        kind = node["type"]
        bad = FormatError(f"{STATE_JSON}: {where}: invalid {kind} node", entry=STATE_JSON)
        if kind == "none":
            fields()
            return None
        if kind in ("bool", "int", "str", "float", "dtype"):
            v = fields("value")["value"]
            if kind == "bool" and isinstance(v, bool):
                return v
            if kind == "int" and isinstance(v, int) and not isinstance(v, bool):
                return v
            if kind == "str" and isinstance(v, str):
                return v
            if kind == "float":
                if isinstance(v, str) and v in ("inf", "-inf", "nan"):
                    return float(v)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return float(v)
            if kind == "dtype" and isinstance(v, str) and v in SAFETENSORS_DTYPE:
                return getattr(torch, v)
            raise bad
        if kind in ("list", "tuple"):
            items = fields("items")["items"]
            if not isinstance(items, list):
                raise bad
            out = [self.decode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
            return out if kind == "list" else tuple(out)
        if kind == "dict":
            items = fields("items")["items"]
            if not isinstance(items, list):
                raise bad
            result: dict[Any, Any] = {}
            for pair in items:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise bad
                k = self.decode(pair[0], f"{where}.<key>", depth + 1)
                if not isinstance(k, (str, int, float, bool, type(None))) or k in result:
                    raise FormatError(
                        f"{STATE_JSON}: {where}: invalid or duplicate key {k!r}", entry=STATE_JSON
                    )
                result[k] = self.decode(pair[1], f"{where}[{k!r}]", depth + 1)
            return result
        if kind == "tensor":
            return self.tensor(fields("key")["key"], where)
        if kind == "ndarray":
            t = self.tensor(fields("key")["key"], where)
            return t.numpy().copy()
        raise FormatError(f"{STATE_JSON}: {where}: unknown node type {kind!r}", entry=STATE_JSON)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _param_names(module: Any) -> dict[int, str]:
    """id(parameter) -> its first name in the module."""
    return {id(p): name for name, p in module.named_parameters()}


def as_numpy(tensor: Any) -> np.ndarray | None:
    """A CPU tensor as numpy (sharing memory), or None for dtypes numpy lacks (bfloat16)."""
    import torch

    if tensor.dtype == torch.bfloat16:
        return None
    arr: np.ndarray = tensor.numpy()
    return arr


@dataclass
class TrainingState:
    """A snapshot of a module's (and optionally its optimizer's...) state, taken at save."""

    module_class: str
    framework_version: str
    model: dict[str, Any]
    """state_dict name -> CPU copy of the tensor, in state_dict order."""
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: Any = None
    tensors: dict[str, Any] = field(default_factory=dict)
    """Tensors of the optimizer/scheduler/rng trees by key."""
    origins: dict[str, tuple[Any, tuple[Any, ...], int | None]] = field(default_factory=dict)
    """state_dict name -> (the module's tensor, its :func:`storage_key`, its version
    at capture): what :meth:`unchanged` checks."""
    watched: list[tuple[Any, int, str]] = field(default_factory=list)
    """Tensors captured as views, not copies, with their versions at capture."""
    proven: dict[str, str] | None = None
    """Set by the exporter: state_dict name -> the ``weights.safetensors`` tensor that
    holds exactly its bytes because it is written from the very tensor captured here
    (same storage, unchanged since). With it, :meth:`entries` compares nothing by value."""

    def unchanged(self, name: str, tensor: Any) -> bool:
        """Whether ``tensor`` is the module tensor captured as ``name`` (same storage),
        not changed in place since: then its bytes are the captured ones."""
        origin = self.origins.get(name)
        if origin is None or origin[2] is None or storage_key(tensor) != origin[1]:
            return False
        return _version(origin[0]) == origin[2]

    def check_unchanged(self) -> None:
        """Refuse to write a state whose viewed tensors changed since capture."""
        for tensor, version, where in self.watched:
            if _version(tensor) != version:
                raise ConversionError(
                    f"{where} changed in place while the model was being saved (forward() "
                    "or another thread modified it); the training state would not be the "
                    "one captured. Save again without modifying it, or with "
                    "training_state=False"
                )

    def entries(self, weights: Mapping[str, np.ndarray]) -> list[tuple[str, Any]]:
        """The two entries, given the final ``weights.safetensors`` tensors by name:
        ``state.json`` as bytes and ``state.safetensors`` as a
        :class:`bundle.format.weights.TensorFile` streamed from the tensors.

        A model tensor in :attr:`proven` is referenced in the weights without
        looking at its bytes. Otherwise (the TorchScript exporter, which gives no
        such map) one bit-identical to a weights tensor is referenced there (by its
        own name when it has one, else any identical tensor). Every other is stored
        once in the training tensors (tied parameters share one copy).
        """
        self.check_unchanged()
        proven = self.proven
        by_layout: dict[tuple[str, tuple[int, ...]], list[str]] = {}
        if proven is None:
            for name, w in weights.items():
                by_layout.setdefault((w.dtype.str, w.shape), []).append(name)
        tensors = dict(self.tensors)
        stored: dict[tuple[str, tuple[int, ...]], list[str]] = {}
        same_storage: dict[tuple[Any, ...], str] = {}
        listing = []
        for name, t in self.model.items():
            entry: dict[str, Any] = {
                "name": name,
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
            }
            source = key = None
            if proven is not None:
                if name in proven:
                    source, key = "weights", proven[name]
                else:
                    skey = storage_key(t)
                    if skey in same_storage:  # tied: stored once
                        source, key = "training", same_storage[skey]
                    else:
                        source, key = "training", f"model/{name}"
                        tensors[key] = t
                        same_storage[skey] = key
                listing.append({**entry, "source": source, "key": key})
                continue
            arr = as_numpy(t)
            if arr is not None:
                if name in weights and same_tensor(weights[name], arr):
                    source, key = "weights", name
                else:
                    for other in by_layout.get((arr.dtype.str, arr.shape), []):
                        if same_tensor(weights[other], arr):
                            source, key = "weights", other
                            break
                if source is None:
                    layout = (arr.dtype.str, arr.shape)
                    for other in stored.get(layout, []):
                        if same_tensor(as_numpy(tensors[other]), arr):  # type: ignore[arg-type]
                            source, key = "training", other
                            break
            if source is None:
                source, key = "training", f"model/{name}"
                tensors[key] = t
                if arr is not None:
                    stored.setdefault((arr.dtype.str, arr.shape), []).append(key)
            listing.append({**entry, "source": source, "key": key})
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "framework": {"name": "pytorch", "version": self.framework_version},
            "model": {"class": self.module_class, "tensors": listing},
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
        }
        return [(STATE_JSON, _json.dumps(doc)), (STATE_TENSORS, _tensor_file(tensors))]


def _tensor_file(tensors: Mapping[str, Any]) -> Any:
    """``state.safetensors`` to be streamed from the tensors themselves (the bytes
    ``safetensors.torch.save`` makes, without its in-memory copy of them all)."""
    from ..format.weights import TensorSource, buffer_chunks, tensor_file

    sources = [
        TensorSource(
            key,
            SAFETENSORS_DTYPE[str(t.dtype).removeprefix("torch.")],
            tuple(int(d) for d in t.shape),
            t.numel() * t.element_size(),
            buffer_chunks(lambda t=t: byte_view(t)),
        )
        for key, t in tensors.items()
    ]
    return tensor_file(sources)


def capture(
    module: Any, optimizer: Any = None, scheduler: Any = None, include_rng: bool = False
) -> TrainingState:
    """Snapshot the training state now (before export runs anything)."""
    import torch

    enc = _Encoder()
    # Parameters are viewed (the bulk of a large model); buffers are copied, because
    # forward() -- which export runs -- may update them (running statistics, counters)
    # and the state is the one before it ran.
    model: dict[str, Any] = {}
    origins: dict[str, tuple[Any, tuple[Any, ...], int | None]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        where = f"model state {name!r}"
        watch = enc.watched if isinstance(t, torch.nn.Parameter) else None
        model[name] = _cpu_tensor(t, where, watch)
        origins[name] = (t, storage_key(t), _version(t))
    opt_doc = None
    if optimizer is not None:
        opt_doc = _encode_optimizer(module, optimizer, enc)
    sched_doc = None
    if scheduler is not None:
        if not callable(getattr(scheduler, "state_dict", None)):
            raise ConversionError(f"scheduler {type(scheduler).__qualname__} has no state_dict()")
        sched_doc = {
            "class": _qualname(scheduler),
            "state": enc.encode(scheduler.state_dict(), ("scheduler",)),
        }
    rng_doc = None
    if include_rng:
        import random

        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(legacy=False),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            rng["cuda"] = list(torch.cuda.get_rng_state_all())
        rng_doc = enc.encode(rng, ("rng",))
    return TrainingState(
        _qualname(module),
        torch.__version__.split("+")[0],
        model,
        opt_doc,
        sched_doc,
        rng_doc,
        enc.tensors,
        origins,
        enc.watched,
    )


def _encode_optimizer(module: Any, optimizer: Any, enc: _Encoder) -> dict[str, Any]:
    names = _param_names(module)
    sd = optimizer.state_dict()
    groups = []
    index_to_name: dict[int, str] = {}
    for g, (live, saved) in enumerate(zip(optimizer.param_groups, sd["param_groups"], strict=True)):
        group_names = []
        strangers = 0
        for p, idx in zip(live["params"], saved["params"], strict=True):
            name = names.get(id(p))
            if name is None:
                strangers += 1
                continue
            group_names.append(name)
            index_to_name[idx] = name
        if strangers:
            raise ConversionError(
                f"optimizer param group {g} holds {strangers} parameter(s) "
                "that are not parameters of the module being saved"
            )
        options = {k: v for k, v in saved.items() if k != "params"}
        groups.append(
            {
                "params": group_names,
                "options": enc.encode(options, ("optimizer", "param_groups", g)),
            }
        )
    state = {}
    for idx, st in sd["state"].items():
        name = index_to_name.get(idx)
        if name is None:
            raise ConversionError(
                f"optimizer state entry {idx} belongs to no parameter of the module"
            )
        state[name] = enc.encode(st, ("optimizer", name))
    return {"class": _qualname(optimizer), "param_groups": groups, "state": state}


def _tensors_of(data: bytes | bytearray | mmap.mmap, entry: str) -> dict[str, Any]:
    """Every tensor of verified safetensors bytes, as torch tensors (copies)."""
    import torch

    from ..format.weights import header_size, parse_header

    view = memoryview(data)
    # only the header is parsed from a copy: bytes(data) would copy every tensor once more
    header = parse_header(bytes(view[: header_size(bytes(view[:8]))]), len(data), entry=entry)
    out = {}
    for name, info in header.tensors.items():
        dtype = getattr(torch, DTYPE_OF_SAFETENSORS[info.dtype])
        begin, end = header.data_start + info.begin, header.data_start + info.end
        if begin == end:
            out[name] = torch.empty(info.shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(view[begin:end]), dtype=dtype).reshape(
                info.shape
            )
    return out


def restore_verified(
    vb: VerifiedBundle, model: Any, optimizer: Any = None, scheduler: Any = None, rng: bool = True
) -> VerifyReport:
    """Load a verified bundle's training state into ``model`` (and the others).

    Every mismatch between the objects and the saved state is found first and
    reported together (:class:`InputError`); nothing is assigned unless all fit.
    """
    import torch

    doc, tensor_bytes = read_state(vb)
    framework = doc["framework"].get("name") if isinstance(doc["framework"], dict) else None
    if framework != "pytorch":
        raise InputError(
            f"{vb.report.path} holds {framework!r} training state; restore it into "
            f"a {framework} model, not a PyTorch module"
        )
    training = _tensors_of(tensor_bytes, STATE_TENSORS)
    assert vb.weights is not None, "restore reads the weights in memory"
    weights = _tensors_of(vb.weights, vb.report.manifest.file("weights").path)
    dec = _Decoder(training)

    problems: list[str] = []

    # -- model
    mdoc = object_with(doc["model"], "model", {"class", "tensors"})
    if not isinstance(mdoc["tensors"], list):
        raise FormatError(f"{STATE_JSON}: model.tensors must be a list", entry=STATE_JSON)
    saved: dict[str, Any] = {}
    for i, t in enumerate(mdoc["tensors"]):
        t = object_with(t, f"model.tensors[{i}]", {"name", "dtype", "shape", "source", "key"})
        name, source, key = t["name"], t["source"], t["key"]
        pool = weights if source == "weights" else training if source == "training" else None
        if pool is None or not isinstance(name, str) or key not in pool or name in saved:
            raise FormatError(
                f"{STATE_JSON}: model tensor {name!r} refers to {source}:{key!r}, "
                "which is not there (or is listed twice)",
                entry=STATE_JSON,
            )
        value = pool[key]
        if source == "training":
            dec.used.add(key)
        if str(value.dtype).removeprefix("torch.") != t["dtype"] or list(value.shape) != t["shape"]:
            raise FormatError(
                f"{STATE_JSON}: model tensor {name!r} is recorded as "
                f"{t['dtype']} {t['shape']} but {source}:{key!r} is "
                f"{value.dtype} {list(value.shape)}",
                entry=STATE_JSON,
            )
        saved[name] = value
    target = model.state_dict()
    missing = [n for n in target if n not in saved]
    unexpected = [n for n in saved if n not in target]
    if missing:
        problems.append(f"the model has {len(missing)} tensor(s) the bundle lacks: {few(missing)}")
    if unexpected:
        problems.append(
            f"the bundle has {len(unexpected)} tensor(s) the model lacks: {few(unexpected)}"
        )
    for name, have in target.items():
        if name not in saved:
            continue
        want = saved[name]
        if tuple(have.shape) != tuple(want.shape):
            problems.append(
                f"{name}: shape {list(have.shape)} in the model, {list(want.shape)} in the bundle"
            )
        elif have.dtype != want.dtype:
            problems.append(f"{name}: dtype {have.dtype} in the model, {want.dtype} in the bundle")

    # -- optimizer
    opt_sd = None
    if optimizer is not None:
        if doc["optimizer"] is None:
            problems.append("an optimizer was given but the bundle holds no optimizer state")
        else:
            opt_sd = _optimizer_state(doc["optimizer"], model, optimizer, dec, problems)
    sched_state = None
    if scheduler is not None:
        if doc["scheduler"] is None:
            problems.append("a scheduler was given but the bundle holds no scheduler state")
        else:
            s = object_with(doc["scheduler"], "scheduler", {"class", "state"})
            if s["class"] != _qualname(scheduler):
                problems.append(
                    f"scheduler: the bundle holds a {s['class']} state, the given "
                    f"scheduler is a {_qualname(scheduler)}"
                )
            sched_state = dec.decode(s["state"], "scheduler")
    rng_state = dec.decode(doc["rng"], "rng") if rng and doc["rng"] is not None else None
    if problems:
        raise InputError(
            "the given objects do not match the bundle's training state; nothing "
            "was loaded:\n  - " + "\n  - ".join(problems)
        )

    # -- everything fits: assign
    with torch.no_grad():
        model.load_state_dict(saved, strict=True)
    if opt_sd is not None:
        optimizer.load_state_dict(opt_sd)
    if sched_state is not None:
        scheduler.load_state_dict(sched_state)
    if rng_state is not None:
        _set_rng(rng_state)
    return vb.report


def _optimizer_state(
    odoc: Any, model: Any, optimizer: Any, dec: _Decoder, problems: list[str]
) -> dict[str, Any] | None:
    odoc = object_with(odoc, "optimizer", {"class", "param_groups", "state"})
    if odoc["class"] != _qualname(optimizer):
        problems.append(
            f"optimizer: the bundle holds a {odoc['class']} state, the given "
            f"optimizer is a {_qualname(optimizer)}"
        )
        return None
    groups = odoc["param_groups"]
    if not isinstance(groups, list):
        raise FormatError(f"{STATE_JSON}: optimizer.param_groups must be a list", entry=STATE_JSON)
    names = _param_names(model)
    live = optimizer.param_groups
    if len(groups) != len(live):
        problems.append(f"optimizer: {len(live)} param group(s) given, {len(groups)} saved")
        return None
    index: dict[str, int] = {}
    out_groups = []
    ok = True
    for g, (saved, group) in enumerate(zip(groups, live, strict=True)):
        saved = object_with(saved, f"optimizer.param_groups[{g}]", {"params", "options"})
        want = strings(saved["params"], f"optimizer.param_groups[{g}].params")
        have = [names.get(id(p), "<not a parameter of the model>") for p in group["params"]]
        if have != want:
            ok = False
            gone = [n for n in want if n not in have]
            new = [n for n in have if n not in want]
            detail = (f"missing {few(gone)}; " if gone else "") + (
                f"not saved {few(new)}; " if new else ""
            )
            problems.append(
                f"optimizer param group {g}: parameters differ ({detail or ''}"
                f"saved order {few(want, 5)}, given {few(have, 5)})"
            )
            continue
        options = dec.decode(saved["options"], f"optimizer.param_groups[{g}]")
        if not isinstance(options, dict) or "params" in options:
            raise FormatError(
                f"{STATE_JSON}: optimizer.param_groups[{g}].options is invalid", entry=STATE_JSON
            )
        ids = []
        for n in want:
            index.setdefault(n, len(index))
            ids.append(index[n])
        out_groups.append({**options, "params": ids})
    state_doc = odoc["state"]
    if not isinstance(state_doc, dict):
        raise FormatError(f"{STATE_JSON}: optimizer.state must be an object", entry=STATE_JSON)
    if not ok:
        return None
    state = {}
    for name, node in state_doc.items():
        if name not in index:
            problems.append(f"optimizer: saved state for {name!r}, which is in no param group")
            continue
        value = dec.decode(node, f"optimizer.state[{name!r}]")
        if not isinstance(value, dict):
            raise FormatError(
                f"{STATE_JSON}: optimizer.state[{name!r}] is not a dict", entry=STATE_JSON
            )
        state[index[name]] = value
    return {"state": state, "param_groups": out_groups}


def _set_rng(state: Any) -> None:
    import random
    import warnings

    import torch

    if not isinstance(state, dict):
        raise FormatError(f"{STATE_JSON}: rng must be a dict", entry=STATE_JSON)
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cuda" in state:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(
                "the bundle holds CUDA RNG states for "
                f"{len(state['cuda'])} device(s); they cannot be restored here",
                RuntimeWarning,
                stacklevel=3,
            )
