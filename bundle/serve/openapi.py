"""The OpenAPI document: the v2 dataplane, with request schemas from each bundle's signature.

Each served model gets its own ``/v2/models/<name>/infer`` and ``/predict`` paths
whose request bodies name its inputs, datatypes and shapes, so a generated client
(or a reader) sees what the model takes. The document describes the versions
serving when it is requested.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..format.manifest import Manifest, TensorSpec
from .protocol import V2_DATATYPES

__all__ = ["openapi_document"]

_JSON_TYPES = {"string": "string", "bool": "boolean"}


def _scalar(dtype: str) -> dict[str, Any]:
    if dtype in _JSON_TYPES:
        return {"type": _JSON_TYPES[dtype]}
    return {"type": "integer"} if dtype.startswith(("int", "uint")) else {"type": "number"}


def _tensor_schema(spec: TensorSpec) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0},
        "description": "["
        + ", ".join(str(d) if isinstance(d, int) else str(d or "N") for d in spec.shape)
        + "]",
    }
    if spec.shape:
        shape |= {"minItems": len(spec.shape), "maxItems": len(spec.shape)}
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": [spec.name]},
            "datatype": {"type": "string", "enum": [V2_DATATYPES[spec.dtype]]},
            "shape": shape,
            "data": {
                "type": "array",
                "description": "row-major values (flat or nested)",
                "items": {},
            },
            "parameters": {"type": "object"},
        },
    }


def _infer_schema(m: Manifest) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": len(m.inputs),
                "maxItems": len(m.inputs),
                "items": {"oneOf": [_tensor_schema(s) for s in m.inputs]},
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": [o.name for o in m.outputs]}},
                },
            },
        },
    }


def _predict_schema(m: Manifest) -> dict[str, Any]:
    specs = {s.name: s for s in m.inputs}
    fields: dict[str, Any] = {}
    if m.columns:
        for c in m.columns:
            fields[c.name] = _scalar(specs[c.input].dtype)
    else:
        for s in m.inputs:
            row: dict[str, Any] = _scalar(s.dtype)
            for _ in s.shape[1:]:
                row = {"type": "array", "items": row}
            fields[s.name] = row
    names = list(fields)
    record = {
        "type": "object",
        "required": names,
        "additionalProperties": False,
        "properties": fields,
    }
    columns = {
        "type": "object",
        "required": names,
        "additionalProperties": False,
        "properties": {n: {"type": "array", "items": f} for n, f in fields.items()},
    }
    method = {"type": "string", "enum": sorted(m.methods)} if m.methods else {"type": "string"}
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["records"],
                "additionalProperties": False,
                "properties": {
                    "records": {"type": "array", "items": record, "minItems": 1},
                    "method": method,
                },
            },
            {
                "type": "object",
                "required": ["columns"],
                "additionalProperties": False,
                "properties": {"columns": columns, "method": method},
            },
        ]
    }


_ERROR = {
    "description": "Refused; ``error`` says which field and why",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}


def _get(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}


def openapi_document(models: dict[str, Manifest]) -> dict[str, Any]:
    """OpenAPI 3.0 for the server, with one infer/predict path per served model."""
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata"),
        "/v2/health/live": _get("Server live"),
        "/v2/health/ready": _get("Server ready: every model has a version serving"),
        "/v2/repository/index": {
            "post": {"summary": "Repository index", "responses": {"200": {"description": "OK"}}}
        },
        "/metrics": _get("Prometheus metrics"),
    }
    for name, m in sorted(models.items()):
        base = f"/v2/models/{name}"
        headers = {
            h: {"schema": {"type": "string"}, "description": d}
            for h, d in (
                ("X-Model-Version", "the version that answered"),
                ("X-Model-Digest", "sha256 of the bundle that answered"),
            )
        }
        ok = {"description": "OK", "headers": headers}
        paths[base] = _get(f"{name}: metadata")
        paths[f"{base}/ready"] = _get(f"{name}: ready")
        paths[f"{base}/infer"] = {
            "post": {
                "summary": f"{name}: inference (v2 JSON tensors)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _infer_schema(m)}},
                },
                "responses": {
                    "200": ok,
                    "400": _ERROR,
                    "404": _ERROR,
                    "413": _ERROR,
                    "500": _ERROR,
                    "503": _ERROR,
                    "504": _ERROR,
                },
            }
        }
        paths[f"{base}/predict"] = {
            "post": {
                "summary": f"{name}: predict on records or columns",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _predict_schema(m)}},
                },
                "responses": {"200": ok, "400": _ERROR, "413": _ERROR, "500": _ERROR},
            }
        }
        for verb in ("load", "unload"):
            paths[f"/v2/repository/models/{name}/{verb}"] = {
                "post": {
                    "summary": f"{name}: {verb}",
                    "responses": {"200": {"description": "OK"}, "400": _ERROR},
                }
            }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "model-bundle server (Open Inference Protocol v2)",
            "version": __version__,
        },
        "paths": paths,
    }
