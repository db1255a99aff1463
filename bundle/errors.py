"""The exception hierarchy: every failure model-bundle reports is a BundleError.

Each class carries the CLI exit code for its class of failure, so the command
line can print one line and pick a code without knowing the details. Lower
level errors (zlib, protobuf, json, cryptography) are always wrapped with
``raise ... from e`` so the message says what was wrong in bundle terms.
:class:`ExportFallbackWarning` is the one warning class the exporters emit.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConversionError",
    "DeviceError",
    "ExportFallbackWarning",
    "FormatError",
    "InputError",
    "IntegrityError",
    "KeyFileError",
    "LimitError",
    "SignatureError",
    "UntrustedContentError",
]


class BundleError(Exception):
    """Root of every error raised by model-bundle.

    ``entry`` names the bundle entry (or file) concerned, when there is one.
    ``exit_code`` is what the CLI exits with for this class of failure.
    """

    exit_code = 1

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry

    def one_line(self) -> str:
        """A single-line diagnosis for a terminal."""
        text = " ".join(str(self).split())
        if not text.isprintable():  # names from a hostile file: no terminal escapes
            text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                           for c in text)
        return f"{type(self).__name__}: {text}"


class FormatError(BundleError):
    """The file is not a well-formed bundle: zip structure, names, manifest schema."""

    exit_code = 3


class LimitError(FormatError):
    """A size, count or ratio limit of the format was exceeded."""

    exit_code = 3


class IntegrityError(BundleError):
    """Content does not match what the manifest (or signed statement) records."""

    exit_code = 4


class SignatureError(BundleError):
    """Unsigned, badly signed, or not signed by any trusted key."""

    exit_code = 5


class UntrustedContentError(BundleError):
    """Signed content that the loader refuses anyway (custom ops, stray paths...)."""

    exit_code = 6


class ConversionError(BundleError):
    """A model could not be exported, or its ONNX form disagrees with the original."""

    exit_code = 7


class InputError(BundleError):
    """Data given to predict/run does not fit the model's input signature."""

    exit_code = 8


class KeyFileError(BundleError):
    """A key file could not be read, decrypted, or is of an unsupported type."""

    exit_code = 9


class DeviceError(BundleError):
    """The requested execution device cannot run this session."""

    exit_code = 10


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
