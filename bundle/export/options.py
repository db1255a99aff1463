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

__all__ = ["EXPORTERS", "SklearnOptions", "TensorFlowOptions", "TorchOptions", "options_for"]

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
            raise ValueError(f"exporter {self.exporter!r}: use 'auto', 'dynamo' or 'torchscript'")
        _check_common(self)
        if not isinstance(self.include_rng, bool):
            raise TypeError("include_rng must be True or False")
        if self.training_state is False and (
            self.optimizer is not None or self.scheduler is not None or self.include_rng
        ):
            raise ValueError(
                "training_state=False contradicts optimizer/scheduler/"
                "include_rng: those are training state"
            )

    @property
    def wants_training_state(self) -> bool:
        """Whether the caller asked for training state explicitly (any precision)."""
        return bool(
            self.training_state
            or self.optimizer is not None
            or self.scheduler is not None
            or self.include_rng
        )


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
        if self.signature is not None and (
            not isinstance(self.signature, str) or not self.signature
        ):
            raise TypeError("signature must be a non-empty string")
        if self.training_state is False and self.optimizer is not None:
            raise ValueError(
                "training_state=False contradicts optimizer: the optimizer's "
                "variables are training state"
            )

    @property
    def wants_training_state(self) -> bool:
        """Whether the caller asked for training state explicitly (any precision)."""
        return bool(self.training_state or self.optimizer is not None)


@dataclass(frozen=True)
class SklearnOptions:
    """How a scikit-learn estimator or pipeline (or an XGBoost/LightGBM model) is exported.

    ``converter_options``: skl2onnx's per-estimator options, ``{estimator class or
    fitted estimator: {option: value}}`` (e.g. ``{SVC: {"raw_scores": True}}``),
    merged over the defaults model-bundle sets: no ZipMap on classifiers that take
    the option, and ``text_locale`` on text vectorizers. ``zipmap`` cannot be
    turned on: it outputs a sequence of maps, and a bundle's outputs are tensors.
    ``text_locale``: the locale onnxruntime lowercases text in (``StringNormalizer``);
    ``"C.UTF-8"`` is built into glibc, where ``en_US.UTF-8`` (onnxruntime's default)
    is missing on most containers. ``training_state``: keep an incremental
    estimator's fitted state (``partial_fit`` estimators and Pipelines of them, see
    :mod:`bundle.training.sklearn`) for :func:`bundle.restore`; None (default): kept
    when the model is one, True: required, False: never.
    """

    converter_options: Mapping[Any, Mapping[str, Any]] | None = None
    text_locale: str = "C.UTF-8"
    training_state: bool | None = None

    def __post_init__(self) -> None:
        if self.training_state is not None and not isinstance(self.training_state, bool):
            raise TypeError("training_state must be True, False or None")
        if not isinstance(self.text_locale, str) or not self.text_locale:
            raise TypeError("text_locale must be a non-empty string, e.g. 'C.UTF-8'")
        if self.converter_options is None:
            return
        if not isinstance(self.converter_options, Mapping):
            raise TypeError(
                "converter_options must be a mapping {estimator class or object: {option: value}}"
            )
        for key, opts in self.converter_options.items():
            label = key.__name__ if isinstance(key, type) else type(key).__name__
            if isinstance(key, (str, int)):
                raise TypeError(
                    f"converter_options key {key!r}: give the estimator class or "
                    "the fitted estimator object"
                )
            if not isinstance(opts, Mapping) or not all(isinstance(k, str) for k in opts):
                raise TypeError(
                    f"converter_options[{label}] must be a mapping of option names to values"
                )
            if opts.get("zipmap", False) not in (False,):
                raise ValueError(
                    f"converter_options[{label}]: zipmap must stay False; ZipMap "
                    "outputs a sequence of maps and bundle outputs are tensors"
                )


def _check_common(options: TorchOptions | TensorFlowOptions) -> None:
    if options.dynamic_axes is not None and not isinstance(options.dynamic_axes, Mapping):
        raise TypeError("dynamic_axes must be a mapping {input name: {axis: name}}")
    if options.training_state is not None and not isinstance(options.training_state, bool):
        raise TypeError("training_state must be True, False or None")


AnyOptions = TorchOptions | TensorFlowOptions | SklearnOptions

_BY_CONVERTER: dict[str, type[TorchOptions] | type[TensorFlowOptions] | type[SklearnOptions]] = {
    "torch": TorchOptions,
    "tensorflow": TensorFlowOptions,
    "sklearn": SklearnOptions,
}


def options_for(
    converter: str, options: AnyOptions | None, shortcuts: Mapping[str, Any]
) -> AnyOptions | None:
    """The options object for ``converter``: ``options`` as given, or built from the
    keyword shortcuts that were set; refuses one that does not fit the framework.
    None when nothing was given for scikit-learn (whose converter has no shortcuts)."""
    given = {k: v for k, v in shortcuts.items() if v is not None}
    wanted = _BY_CONVERTER.get(converter)
    if (
        wanted is SklearnOptions
        and options is None
        and not set(given) - {"training_state"}
        and given.get("training_state") is None
    ):
        return None
    if options is not None:
        if given:
            raise TypeError(f"give options= or {', '.join(sorted(given))}, not both")
        if wanted is None or not isinstance(options, wanted):
            what = wanted.__name__ if wanted else "no options"
            raise TypeError(
                f"{type(options).__name__} does not apply to this model: it takes {what}"
            )
        return options
    if wanted is None:
        if given:
            raise TypeError(
                f"{', '.join(sorted(given))} cannot be used with this model: they "
                "apply to PyTorch modules and TensorFlow/Keras models"
            )
        return None
    accepted = {f.name for f in fields(wanted)}
    wrong = sorted(set(given) - accepted)
    if wrong:
        raise TypeError(
            f"{', '.join(wrong)} cannot be used with this model ({wanted.__name__} "
            f"takes {', '.join(sorted(accepted))})"
        )
    return wanted(**given)
