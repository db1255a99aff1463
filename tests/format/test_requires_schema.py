"""The requires / smoke / derived_from additions: schema and strict parser agree."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from test_schema import VECTORS, manifest_json, schema_errors

from bundle.errors import FormatError
from bundle.format import canonical_json as _json
from bundle.format.manifest import Manifest

Doc = dict[str, Any]
BASE = VECTORS / "valid-requires-smoke.mbundle"
DERIVED = {"manifest_sha256": "ab" * 32, "name": "gemm", "version": "3", "change": "opset 17 -> 13"}


def _base() -> Doc:
    doc: Doc = manifest_json(BASE)
    return doc


def _edit(fn: Callable[[Doc], None]) -> Doc:
    doc = copy.deepcopy(_base())
    fn(doc)
    return doc


REFUSED_BY_BOTH: dict[str, Callable[[Doc], None]] = {
    "requires-unknown-field": lambda d: d["requires"].update(extra=1),
    "requires-missing-min-opsets": lambda d: d["requires"].pop("min_opsets"),
    "requires-ort-not-a-version": lambda d: d["requires"].update(onnxruntime="v1.20"),
    "requires-no-providers": lambda d: d["requires"].update(execution_providers=[]),
    "requires-bad-provider": lambda d: d["requires"].update(execution_providers=["CPU"]),
    "smoke-unknown-field": lambda d: d["smoke"].update(extra=1),
    "smoke-bfloat16": lambda d: d["smoke"]["inputs"][0].update(dtype="bfloat16"),
    "smoke-value-object": lambda d: d["smoke"]["inputs"][0]["values"].__setitem__(0, {}),
    "smoke-no-outputs": lambda d: d["smoke"].update(outputs=[]),
    "derived-bad-digest": lambda d: d.update(derived_from={**DERIVED, "manifest_sha256": "x"}),
    "derived-missing-change": lambda d: d.update(
        derived_from={k: v for k, v in DERIVED.items() if k != "change"}
    ),
}

REFUSED_BY_PARSER: dict[str, Callable[[Doc], None]] = {  # FORMAT.md 5.9 rules 8-9
    "requires-ir-differs": lambda d: d["requires"].update(ir_version=9),
    "requires-ort-differs": lambda d: d["requires"].update(onnxruntime="1.20"),
    "requires-min-above-stamp": lambda d: d["requires"]["min_opsets"].update({"ai.onnx": 18}),
    "requires-min-other-domain": lambda d: d["requires"]["min_opsets"].update({"ai.onnx.ml": 1}),
    "smoke-unknown-input": lambda d: d["smoke"]["inputs"][0].update(name="Z"),
    "smoke-unknown-output": lambda d: d["smoke"]["outputs"][0].update(name="Z"),
    "smoke-dtype-differs": lambda d: d["smoke"]["inputs"][0].update(dtype="float64"),
    "smoke-count-differs": lambda d: d["smoke"]["inputs"][0]["values"].pop(),
    "smoke-int-for-float": lambda d: d["smoke"]["inputs"][0]["values"].__setitem__(0, 1),
    "smoke-unknown-word": lambda d: d["smoke"]["inputs"][0]["values"].__setitem__(0, "big"),
}


def test_base_has_the_additions_and_is_valid() -> None:
    doc = _base()
    assert {"requires", "smoke"} <= doc.keys()
    assert schema_errors(doc) == []
    Manifest.from_bytes(_json.dumps(doc))
    with_derived = _edit(lambda d: d.update(derived_from=DERIVED))
    assert schema_errors(with_derived) == []
    assert Manifest.from_bytes(_json.dumps(with_derived)).derived_from is not None


@pytest.mark.parametrize("name", sorted(REFUSED_BY_BOTH))
def test_refused_by_schema_and_parser(name: str) -> None:
    doc = _edit(REFUSED_BY_BOTH[name])
    assert schema_errors(doc), f"the schema accepts {name}"
    with pytest.raises(FormatError):
        Manifest.from_bytes(_json.dumps(doc))


@pytest.mark.parametrize("name", sorted(REFUSED_BY_PARSER))
def test_rules_beyond_the_schema(name: str) -> None:
    doc = _edit(REFUSED_BY_PARSER[name])
    with pytest.raises(FormatError):
        Manifest.from_bytes(_json.dumps(doc))


def test_nan_and_inf_are_words() -> None:
    doc = _edit(lambda d: d["smoke"]["outputs"][0]["values"][:3].__len__())
    doc["smoke"]["outputs"][0]["values"][:3] = ["nan", "inf", "-inf"]
    assert schema_errors(doc) == []
    smoke = Manifest.from_bytes(_json.dumps(doc)).smoke
    assert smoke is not None
    assert smoke.outputs[0].values[:3] == ("nan", "inf", "-inf")
