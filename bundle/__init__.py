"""model-bundle: signed, portable, pickle-free ML model bundles.

The pipeline, end to end::

    save:   model --convert--> ONNX graph + tensors        (bundle.convert.*, lazily)
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

from ._version import __version__
from .api import Inspection, inspect, load, restore, save, sign, verify
from .errors import (
    BundleError,
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
    SignatureError,
    UntrustedContentError,
)
from .export.pack import pack_directory
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

__all__ = [
    "BundleError",
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
    "SignatureError",
    "Signer",
    "TrustPolicy",
    "TrustStore",
    "UntrustedContentError",
    "VerifyReport",
    "__version__",
    "generate_key",
    "inspect",
    "load",
    "load_private_key",
    "load_public_key",
    "pack_directory",
    "restore",
    "save",
    "sign",
    "verify",
]
