"""The exception hierarchy: every failure model-bundle reports is a BundleError.

One class per kind of failure, so a caller (and the CLI, which maps each class
to an exit code in :mod:`bundle.cli`) can tell them apart without reading
messages. Lower level errors (zlib, protobuf, json, cryptography) are always
wrapped with ``raise ... from e`` so the message says what was wrong in bundle
terms. A caller's wrong *argument value* (a threshold of 0, a malformed
``min_version``) is a ``ValueError`` or ``TypeError``, not one of these: these
describe files, keys, models and data.
"""

from __future__ import annotations

__all__ = [
    "ApprovalError",
    "BundleError",
    "CompatibilityError",
    "ConversionError",
    "DeviceError",
    "ExportFallbackWarning",
    "FetchError",
    "FormatError",
    "FreshnessError",
    "InputError",
    "IntegrityError",
    "KeyFileError",
    "LimitError",
    "RunTimeoutError",
    "SelfTestError",
    "SignatureError",
    "StoreConflictError",
    "StoreError",
    "StoreLogError",
    "StoreNotFoundError",
    "UntrustedContentError",
]


class BundleError(Exception):
    """Root of every error raised by model-bundle.

    ``entry`` names the bundle entry (or file) concerned, when there is one.
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry

    def one_line(self) -> str:
        """A single-line diagnosis for a terminal."""
        text = " ".join(str(self).split())
        if not text.isprintable():  # names from a hostile file: no terminal escapes
            text = "".join(
                c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
            )
        return f"{type(self).__name__}: {text}"


class FormatError(BundleError):
    """The file is not a well-formed bundle: zip structure, names, manifest schema."""


class LimitError(FormatError):
    """A size, count or ratio limit of the format was exceeded."""


class IntegrityError(BundleError):
    """Content does not match what the manifest (or signed statement) records."""


class SignatureError(BundleError):
    """Unsigned, badly signed, or not signed by any trusted key."""


class FreshnessError(SignatureError):
    """Signed, but not acceptable now: expired, older than the required minimum
    version, or older than a version already accepted (rollback)."""


class UntrustedContentError(BundleError):
    """Signed content that the loader refuses anyway (custom ops, stray paths...)."""


class ConversionError(BundleError):
    """A model could not be exported, or its ONNX form disagrees with the original."""


class InputError(BundleError):
    """Data given to predict/run does not fit the model's input signature."""


class KeyFileError(BundleError):
    """A key file could not be read, decrypted, or is of an unsupported type."""


class DeviceError(BundleError):
    """The requested execution device cannot run this session."""


class RunTimeoutError(BundleError):
    """A run did not finish within the caller's ``timeout``; onnxruntime stopped it.

    The model stays usable: the next call runs normally.
    """


class CompatibilityError(BundleError):
    """The runtime cannot run this bundle: its IR version or an opset is newer than the
    runtime knows, or it needs an operator domain the runtime lacks. The message says
    which release would do and whether an opset conversion can help."""


class SelfTestError(BundleError):
    """The bundle's smoke vectors, re-run on this runtime, give other outputs than the
    exporting runtime recorded (beyond their tolerance)."""


class ApprovalError(BundleError):
    """A legacy file needs more than was approved: an import or custom object not
    approved, a known way to run code (never approvable), or something a static scan
    cannot resolve. Raised before anything from the file runs (see bundle.migrate)."""


class StoreError(BundleError):
    """A model store (:class:`bundle.Store`) could not do what was asked: its backend
    failed or cannot create objects exclusively, or an object in it is malformed."""


class StoreNotFoundError(StoreError):
    """No such model name, version, alias or blob in the store."""


class StoreConflictError(StoreError):
    """The store already maps this name and version to other bytes (versions are
    immutable), or a writer could not win a sequence number in time."""


class StoreLogError(SignatureError):
    """An alias log that does not verify as one signed chain: a gap, a fork, a record
    that is not where its signed content says, or one whose "previous" is not the
    record before it. (Unsigned or untrusted records are :class:`SignatureError`;
    a replayed, frozen or expired alias is :class:`FreshnessError`.)"""


class FetchError(BundleError):
    """A bundle could not be fetched from where it was said to be (a missing file, an
    unreachable or refusing object store, a store reference with no store to ask).

    Nothing about the bundle's content is claimed: content that arrives but does not
    verify is an :class:`IntegrityError` or :class:`SignatureError` as usual.
    """


class ExportFallbackWarning(UserWarning):
    """An exporter's first route failed and a fallback produced the graph instead.

    PyTorch: the dynamo exporter failed and the TorchScript exporter was used.
    Keras: tracing with the variables as graph inputs failed and the variables
    were frozen into constants. The parity check runs on the result either way.
    ``cause`` is the exception the first route failed with, when there is one.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
