"""The ``model-bundle`` command line: parse arguments, call the library, print.

Exit codes (one per class of failure, documented in README.md; the table is
:data:`EXIT_CODES`): 0 ok, 1 unexpected error, 2 usage, 3 format, 4 integrity,
5 signature, 6 untrusted content, 7 conversion, 8 input, 9 key file, 10 device,
11 run timeout, 12 compatibility (the runtime cannot run the bundle), 13 self-test
(smoke vectors give other outputs on this runtime), 14 a legacy file needs more than
was approved (scan/migrate), 15 store, 16 not found in the store, 17 store conflict,
18 fetch (a bundle could not be fetched).
"""

from __future__ import annotations

from . import bundles, legacy, serving, store  # noqa: F401 (each registers its commands)
from .app import (
    EXIT_CODES,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    PASSPHRASE_ENV,
    cli,
    exit_code_of,
    main,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "PASSPHRASE_ENV",
    "cli",
    "exit_code_of",
    "main",
]
