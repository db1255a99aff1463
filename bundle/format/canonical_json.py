"""Canonical JSON: the one byte form of a JSON value that the format signs.

Canonical means: UTF-8, object keys sorted by code point, no insignificant
whitespace, no NaN/Infinity, floats written as Python's shortest round-trip
``repr``, non-ASCII characters written as themselves. Parsing is strict:
duplicate keys, NaN/Infinity and non-UTF-8 bytes are refused, and
:func:`loads_canonical` also refuses a document that is valid JSON but not in
canonical form, so two different byte strings can never mean the same manifest.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import FormatError


def dumps(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes, *, what: str) -> Any:
    """Parse JSON strictly (UTF-8, no duplicate keys, no NaN). ``what`` names the source."""
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8: {e}", entry=what) from e
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{what} is not valid JSON: {e}", entry=what) from e


def loads_canonical(data: bytes, *, what: str) -> Any:
    """Parse JSON and insist that ``data`` is exactly its canonical encoding."""
    value = loads(data, what=what)
    try:
        canonical = dumps(value)
    except (ValueError, UnicodeEncodeError) as e:  # a lone surrogate such as "\ud800"
        raise FormatError(
            f"{what} holds a value with no canonical encoding: {e}", entry=what
        ) from e
    if canonical != data:
        raise FormatError(
            f"{what} is valid JSON but not canonical (sorted keys, no whitespace, UTF-8); "
            "it was changed after it was written",
            entry=what,
        )
    return value
