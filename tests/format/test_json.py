"""Canonical JSON edge cases that must end in FormatError, never a raw exception."""

from __future__ import annotations

import pytest

from bundle import FormatError
from bundle.format import canonical_json as _json


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"a":"\\ud800"}', "no canonical encoding"),  # lone surrogate: valid JSON, not Unicode
        (b'{"a":1e400}', "out of range"),  # overflows to infinity
        (b'{"a":-1e400}', "out of range"),
        (b'{"a":NaN}', "not valid JSON"),
        (b'{"a":1,"a":1}', "duplicate key"),
        (b'{"a":1} ', "not canonical"),
        (b'{"b":1,"a":2}', "not canonical"),
        (b"\xff", "not valid UTF-8"),
        (b"[" * 100_000, "not valid JSON"),  # deep nesting: RecursionError inside json
        (b"1" * 5000, "not valid JSON"),  # int over Python's digit limit
    ],
)
def test_hostile_json_is_a_format_error(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        _json.loads_canonical(data, what="manifest.json")


def test_canonical_round_trip() -> None:
    value = {"z": [1, 2.5, "é", None, True], "a": {"k": -0.0}}
    data = _json.dumps(value)
    assert data == '{"a":{"k":-0.0},"z":[1,2.5,"é",null,true]}'.encode()
    assert _json.loads_canonical(data, what="x") == value
