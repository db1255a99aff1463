"""Migration of legacy model files: a static scan, then conversion of exactly what was approved.

    scan:    file --opcodes walked, never run--> imports, calls, verdict   (scanner.py, opcodes.py)
    approve: the user names exactly the globals the scan listed
    migrate: tensors-only torch -> torch weights-only load into model=    (pipeline.py)
             object pickle / .keras -> sandboxed child (sandbox.py, child.py):
                 restricted unpickler (unpickler.py) or Keras safe mode, export, parity
             -> parent verifies the unsigned bundle, checks its migration record, signs

``bundle.migrate`` is :func:`bundle.legacy.pipeline.migrate` and ``bundle.scan``
:func:`bundle.legacy.scanner.scan`, both imported on first use. Nothing on a bundle's
load path imports this package.
"""

from __future__ import annotations

from .pipeline import approvals_from_scan, migrate
from .sandbox import Limits
from .scanner import ScanReport, scan, scan_bytes

__all__ = ["Limits", "ScanReport", "approvals_from_scan", "migrate", "scan", "scan_bytes"]
