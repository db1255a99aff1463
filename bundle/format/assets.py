"""Assets: extra signed files, allowed only in structures this package can check.

An asset (role ``asset``) is never used by ``load``; it travels with the model for
the user's own code (a vocabulary, a label map, tokenizer settings). So that a
bundle cannot carry a pickle or any other opaque executable blob -- not even one
named ``notes.txt`` -- each asset must *parse* as one of a few data formats, chosen
by its extension. A structural refusal, not a scan for dangerous bytes:

- ``.json``: strict UTF-8 JSON (no duplicate keys, no NaN);
- ``.txt``, ``.md``, ``.csv``, ``.tsv``: UTF-8 text without control characters
  other than tab, newline and carriage return;
- ``.safetensors``: a well-formed safetensors header whose tensors tile the entry.

A binary pickle (protocols 2-5, what pickle, joblib and torch.save write) cannot be
any of these. A protocol-0 pickle is printable ASCII and so is valid text: nothing
in this package ever unpickles, and a text file is only text (SECURITY.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import FormatError, LimitError, UntrustedContentError
from . import canonical_json as _json

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["MAX_TEXT_ASSET_BYTES", "TEXT_EXTENSIONS", "check_assets"]

MAX_TEXT_ASSET_BYTES = 64 << 20
"""JSON and text assets are read whole to be checked; larger ones belong in safetensors."""

TEXT_EXTENSIONS = (".txt", ".md", ".csv", ".tsv")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_assets(manifest: Manifest, verified: Mapping[str, bytes]) -> None:
    """Refuse any asset that is not one of the allowed data formats (see module doc).

    ``verified`` holds the bytes verification hashed, by path: whole JSON and text
    assets, and at least the header of a safetensors asset. The file is not read.
    """
    for f in manifest.files:
        if f.role == "asset":
            _check_one(f.path, f.size, verified)


def _check_one(path: str, size: int, verified: Mapping[str, bytes]) -> None:
    name = path.lower()
    if name.endswith(".safetensors"):
        from .weights import parse_header

        parse_header(verified[path], size, entry=path)
        return
    if not name.endswith((".json", *TEXT_EXTENSIONS)):
        raise UntrustedContentError(
            f"asset {path!r}: only .json, {', '.join(TEXT_EXTENSIONS)} and .safetensors "
            "assets are allowed (an opaque file could be a pickle or a program)",
            entry=path,
        )
    if size > MAX_TEXT_ASSET_BYTES:
        raise LimitError(
            f"entry {path!r} is {size} bytes; the limit is {MAX_TEXT_ASSET_BYTES}", entry=path
        )
    data = verified[path]
    if name.endswith(".json"):
        try:
            _json.loads(data, what=path)
        except FormatError as e:
            raise UntrustedContentError(f"asset {path!r} is not JSON: {e}", entry=path) from e
        return
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise UntrustedContentError(
            f"asset {path!r} is not UTF-8 text (binary data such as "
            f"a pickle): {e.reason} at byte {e.start}",
            entry=path,
        ) from e
    bad = _CONTROL.search(text)
    if bad is not None:
        raise UntrustedContentError(
            f"asset {path!r} is not text: control character "
            f"U+{ord(bad.group()):04X} at character {bad.start()}",
            entry=path,
        )
