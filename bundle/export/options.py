"""Export options per framework: one typed, validated object each, never a bag of
keywords that means different things to different converters.

``bundle.save(model, ..., options=TorchOptions(...))`` passes one explicitly;
``save``'s keyword shortcuts (``dynamic_axes=``, ``optimizer=``, ...) build the
object for the model's framework and refuse a keyword that framework does not
take. A wrong value is the caller's mistake: ``ValueError``/``TypeError`` when the
object is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["EXPORTERS", "TensorFlowOptions", "TorchOptions", "options_for"]

EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass(frozen=True)
class TorchOptions:
    """How a PyTorch ``nn.Module`` is exported.

    ``dynamic_axes``: ``{input: {axis: "name"}}`` beyond the batch axis (axis 0 of
    each input is dynamic unless this says otherwise). ``exporter``: "auto" (dynamo,
    falling back to TorchScript with an :class:`~bundle.ExportFallbackWarning`),
    "dynamo" or "torchscript". ``training_state``: keep every parameter and buffer
    for :func:`bundle.restore` (default: yes at fp32, no at reduced precision);
    ``optimizer``, ``scheduler`` and ``include_rng`` add their states.
    """

    dynamic_axes: Mapping[str, Any] | None = None
    exporter: str = "auto"
    optimizer: Any = None
    scheduler: Any = None
    include_rng: bool = False
    training_state: bool | None = None

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter {self.exporter!r}: use 'auto', 'dynamo' or "
                             "'torchscript'")
        _check_common(self)
        if not isinstance(self.include_rng, bool):
            raise TypeError("include_rng must be True or False")
        if self.training_state is False and (self.optimizer is not None
                                             or self.scheduler is not None
                                             or self.include_rng):
            raise ValueError("training_state=False contradicts optimizer/scheduler/"
                             "include_rng: those are training state")

    @property
    def wants_training_state(self) -> bool:
        """Whether the caller asked for training state explicitly (any precision)."""
        return bool(self.training_state or self.optimizer is not None
                    or self.scheduler is not None or self.include_rng)


@dataclass(frozen=True)
class TensorFlowOptions:
    """How a Keras 3 model, a ``tf.Module`` or a SavedModel directory is exported.

    ``dynamic_axes``: as for :class:`TorchOptions` (axis 0 and every ``None`` axis of a
    ``keras.Input`` are dynamic by default). ``signature``: the tf.Module method
    (default ``__call__``) or the SavedModel signature (default ``serving_default``).
    ``training_state``: keep a Keras model's variables for :func:`bundle.restore`;
    ``optimizer`` (``model.optimizer``) adds the optimizer's.
    """

    dynamic_axes: Mapping[str, Any] | None = None
    optimizer: Any = None
    training_state: bool | None = None
    signature: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        if self.signature is not None and (not isinstance(self.signature, str)
                                           or not self.signature):
            raise TypeError("signature must be a non-empty string")
        if self.training_state is False and self.optimizer is not None:
            raise ValueError("training_state=False contradicts optimizer: the optimizer's "
                             "variables are training state")

    @property
    def wants_training_state(self) -> bool:
        """Whether the caller asked for training state explicitly (any precision)."""
        return bool(self.training_state or self.optimizer is not None)


def _check_common(options: TorchOptions | TensorFlowOptions) -> None:
    if options.dynamic_axes is not None and not isinstance(options.dynamic_axes, Mapping):
        raise TypeError("dynamic_axes must be a mapping {input name: {axis: name}}")
    if options.training_state is not None and not isinstance(options.training_state, bool):
        raise TypeError("training_state must be True, False or None")


_BY_CONVERTER: dict[str, type[TorchOptions] | type[TensorFlowOptions]] = {
    "torch": TorchOptions, "tensorflow": TensorFlowOptions}


def options_for(converter: str, options: TorchOptions | TensorFlowOptions | None,
                shortcuts: Mapping[str, Any]) -> TorchOptions | TensorFlowOptions | None:
    """The options object for ``converter``: ``options`` as given, or built from the
    keyword shortcuts that were set; refuses one that does not fit the framework."""
    given = {k: v for k, v in shortcuts.items() if v is not None}
    wanted = _BY_CONVERTER.get(converter)
    if options is not None:
        if given:
            raise TypeError(f"give options= or {', '.join(sorted(given))}, not both")
        if wanted is None or not isinstance(options, wanted):
            what = wanted.__name__ if wanted else "no options"
            raise TypeError(f"{type(options).__name__} does not apply to this model: it takes "
                            f"{what}")
        return options
    if wanted is None:
        if given:
            raise TypeError(f"{', '.join(sorted(given))} cannot be used with this model: they "
                            "apply to PyTorch modules and TensorFlow/Keras models")
        return None
    accepted = {f.name for f in fields(wanted)}
    wrong = sorted(set(given) - accepted)
    if wrong:
        raise TypeError(f"{', '.join(wrong)} cannot be used with this model ({wanted.__name__} "
                        f"takes {', '.join(sorted(accepted))})")
    return wanted(**given)
