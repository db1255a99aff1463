"""model-bundle: signed, portable, pickle-free ML model bundles.

The pipeline, end to end::

    save:   model --convert--> ONNX graph + tensors        (bundle.export.*, lazily)
                  --split-----> model.onnx + weights.safetensors (one copy, aligned)
                  --describe--> manifest.json (files + SHA-256, I/O, parity)
                  --sign------> signatures/<key id>.sig (DSSE + in-toto, OMS v1.0)
                  --pack------> one deterministic zip, written atomically

    load:   zip --check directory--> --verify signature--> --hash every entry-->
                --parse safetensors header + ONNX graph (checked)--> onnxruntime

Nothing on the load path unpickles, evals, or imports a training framework.

    >>> import bundle
    >>> bundle.save(clf, "iris.mbundle", sample_input=X[:20], signing_key="me.key")
    >>> m = bundle.load("iris.mbundle", trusted_keys="me.pub")
    >>> m.predict(X)
"""

from typing import TYPE_CHECKING

from ._version import __version__
from .api import (
    CheckReport,
    Inspection,
    Verified,
    check,
    convert_opset,
    inspect,
    load,
    repair,
    restore,
    save,
    sign,
    verified,
    verify,
)
from .errors import (
    ApprovalError,
    BundleError,
    CompatibilityError,
    ConversionError,
    DeviceError,
    ExportFallbackWarning,
    FetchError,
    FormatError,
    FreshnessError,
    InputError,
    IntegrityError,
    KeyFileError,
    LimitError,
    RunTimeoutError,
    SelfTestError,
    SignatureError,
    StoreConflictError,
    StoreError,
    StoreLogError,
    StoreNotFoundError,
    UntrustedContentError,
)
from .format.manifest import Manifest
from .runtime.model import Model
from .trust.policy import TrustPolicy
from .trust.signing import (
    PrivateKey,
    PublicKey,
    TrustStore,
    generate_key,
    load_private_key,
    load_public_key,
)
from .trust.verify import Signer, VerifyReport

if TYPE_CHECKING:  # at run time imported on first use (see __getattr__ below)
    from .export.options import SklearnOptions, TensorFlowOptions, TorchOptions
    from .export.pack import pack_directory
    from .legacy import ScanReport, migrate, scan
    from .store import Store

__all__ = [
    "ApprovalError",
    "BundleError",
    "CheckReport",
    "CompatibilityError",
    "ConversionError",
    "DeviceError",
    "ExportFallbackWarning",
    "FetchError",
    "FormatError",
    "FreshnessError",
    "InputError",
    "Inspection",
    "IntegrityError",
    "KeyFileError",
    "LimitError",
    "Manifest",
    "Model",
    "PrivateKey",
    "PublicKey",
    "RunTimeoutError",
    "ScanReport",
    "SelfTestError",
    "SignatureError",
    "Signer",
    "SklearnOptions",
    "Store",
    "StoreConflictError",
    "StoreError",
    "StoreLogError",
    "StoreNotFoundError",
    "TensorFlowOptions",
    "TorchOptions",
    "TrustPolicy",
    "TrustStore",
    "UntrustedContentError",
    "Verified",
    "VerifyReport",
    "__version__",
    "check",
    "convert_opset",
    "generate_key",
    "inspect",
    "load",
    "load_private_key",
    "load_public_key",
    "migrate",
    "pack_directory",
    "repair",
    "restore",
    "save",
    "scan",
    "sign",
    "verified",
    "verify",
]


# Names whose modules the load path does not need: imported on first use, so that
# ``import bundle`` + ``bundle.load`` costs little more than onnxruntime's own import
# (benchmarks: the import row) and loading a local bundle imports neither the store nor
# the migration package.
_LAZY = {
    "scan": "legacy",
    "migrate": "legacy",
    "ScanReport": "legacy",
    "Store": "store",
    "SklearnOptions": "export.options",
    "TensorFlowOptions": "export.options",
    "TorchOptions": "export.options",
    "pack_directory": "export.pack",
}


def __getattr__(name: str) -> object:
    """The names of ``_LAZY``, imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
