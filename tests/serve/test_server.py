"""The v2 endpoints over real HTTP (uvicorn on 127.0.0.1): answers, headers, refusals."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import Bundles, Running, expected

from bundle.serve import FileSource, ServeOptions, create_app
from bundle.serve.sources import file_digest

X = np.array([[0.5, -1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]], np.float32)


def infer_body(x: np.ndarray = X, **over: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "X",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
                **over,
            }
        ]
    }


@pytest.fixture(scope="module")
def server(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("srv") / "tiny.mbundle"
    path.write_bytes(bundles.good[1].read_bytes())
    app = create_app(
        FileSource(path, trust=bundles.trust, poll_interval=0.2),
        options=ServeOptions(max_body_bytes=64 << 10, body_timeout=0.5),
    )
    with Running(app) as running:
        yield running


def test_infer_answers_what_the_model_computes_and_names_the_version(
    server: Running, bundles: Bundles
) -> None:
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", json={**infer_body(), "id": "q1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == "1"
    assert r.headers["x-model-digest"] == file_digest(bundles.good[1])
    body = r.json()
    assert body["id"] == "q1"
    assert body["model_version"] == "1"
    (out,) = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("Y", "FP32", [2, 3])
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), expected(1, X), rtol=1e-6)
    # the versioned path answers for the serving version only
    assert (
        httpx.post(f"{server.url}/v2/models/tiny/versions/1/infer", json=infer_body()).status_code
        == 200
    )
    r = httpx.post(f"{server.url}/v2/models/tiny/versions/7/infer", json=infer_body())
    assert r.status_code == 404
    assert "serving version '1', not '7'" in r.json()["error"]


def test_predict_takes_records_or_columns(server: Running) -> None:
    a = httpx.post(
        f"{server.url}/v2/models/tiny/predict", json={"records": [{"X": row} for row in X.tolist()]}
    )
    b = httpx.post(f"{server.url}/v2/models/tiny/predict", json={"columns": {"X": X.tolist()}})
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    np.testing.assert_allclose(np.array(a.json()["predictions"]), expected(1, X), rtol=1e-6)


def test_metadata_health_and_repository(server: Running) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/tiny").json()
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime"
    assert httpx.get(f"{server.url}/v2/models/tiny/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/nope").status_code == 404
    index = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
    assert index == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
    assert httpx.get(f"{server.url}/v2").json()["name"] == "model-bundle"


def test_unload_then_load(bundles: Bundles, tmp_path: Path) -> None:
    path = tmp_path / "tiny.mbundle"
    path.write_bytes(bundles.good[1].read_bytes())
    with Running(create_app(path, trust=bundles.trust)) as srv:
        r = httpx.post(f"{srv.url}/v2/repository/models/tiny/unload")
        assert r.status_code == 200
        assert httpx.get(f"{srv.url}/v2/models/tiny/ready").status_code == 503
        # unloaded on purpose: the server is ready with what it was asked to serve
        assert httpx.get(f"{srv.url}/v2/health/ready").status_code == 200
        assert httpx.post(f"{srv.url}/v2/models/tiny/infer", json=infer_body()).status_code == 503
        assert httpx.post(f"{srv.url}/v2/repository/index", json={"ready": True}).json() == []
        r = httpx.post(f"{srv.url}/v2/repository/models/tiny/load", timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.post(f"{srv.url}/v2/models/tiny/infer", json=infer_body()).status_code == 200
        # load of a version the trust policy refuses: 400 naming why, the old one serves on
        path.write_bytes(bundles.untrusted.read_bytes())
        r = httpx.post(f"{srv.url}/v2/repository/models/tiny/load", timeout=60)
        assert r.status_code == 400
        assert "SignatureError" in r.json()["error"]
        assert "version 1 still serving" in r.json()["error"]
        assert (
            httpx.post(f"{srv.url}/v2/models/tiny/infer", json=infer_body()).headers[
                "x-model-version"
            ]
            == "1"
        )


BAD_REQUESTS = [
    (b"{not json", "malformed JSON"),
    (
        b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [NaN, 1, 2, 3]}]}',
        "malformed JSON: NaN",
    ),
    (json.dumps(infer_body(name="x")).encode(), "inputs[0].name: the model has no input 'x'"),
    (
        json.dumps(infer_body(datatype="INT64")).encode(),
        "inputs[0].datatype: input 'X' takes FP32, got 'INT64'",
    ),
    (json.dumps(infer_body(shape=[4, 2])).encode(), "inputs[0].shape[1]"),
    (json.dumps(infer_body(data=[1, 2, 3])).encode(), "inputs[0].data: shape [2, 4] needs 8"),
    (b"[" * 30_000 + b"]" * 30_000, "malformed JSON"),
]


@pytest.mark.parametrize(
    ("raw", "reason"),
    BAD_REQUESTS,
    ids=["syntax", "nan", "name", "dtype", "shape", "count", "deep"],
)
def test_bad_input_is_a_400_naming_the_field(server: Running, raw: bytes, reason: str) -> None:
    r = httpx.post(
        f"{server.url}/v2/models/tiny/infer",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]
    assert r.headers["x-model-digest"].startswith("sha256:")
    assert httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body()).status_code == 200


def test_oversize_bodies_are_413_declared_or_streamed(server: Running) -> None:
    big = json.dumps(infer_body(np.zeros((10_000, 4), np.float32))).encode()
    assert len(big) > 64 << 10
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", content=big)
    assert r.status_code == 413
    assert "over the limit of 65536 bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(f"{server.url}/v2/models/tiny/infer", content=chunks())
    assert r.status_code == 413
    assert httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body()).status_code == 200


def test_a_slow_client_gets_408_and_others_are_served_meanwhile(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inp'
        )
        # while that client dawdles, another is answered
        assert (
            httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body()).status_code == 200
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 0.5 s" in reply


def test_openapi_request_schemas_come_from_the_signature(server: Running) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = httpx.get(f"{server.url}/openapi.json").json()
    post = doc["paths"]["/v2/models/tiny/infer"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(infer_body(), schema)
    bads: list[dict[str, Any]] = [
        infer_body(name="x"),
        infer_body(datatype="FP64"),
        infer_body(shape=[8]),
        {"inputs": []},
    ]
    for bad in bads:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    predict = doc["paths"]["/v2/models/tiny/predict"]["post"]["requestBody"]
    pschema = predict["content"]["application/json"]["schema"]
    jsonschema.validate({"records": [{"X": [1, 2, 3, 4]}]}, pschema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"records": [{"X": [1, 2, 3, 4], "Z": 1}]}, pschema)


def test_metrics_count_requests_errors_and_name_the_digest(
    server: Running, bundles: Bundles
) -> None:
    httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body())
    httpx.post(f"{server.url}/v2/models/tiny/infer", content=b"{")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'bundle_serve_requests_total{code="200",endpoint="infer",model="tiny"}' in text
    assert 'bundle_serve_errors_total{kind="input",model="tiny"}' in text
    assert 'bundle_serve_request_seconds_bucket{le="+Inf",model="tiny"}' in text
    digest = file_digest(bundles.good[1])
    assert f'bundle_serve_model_info{{digest="{digest}",model="tiny",version="1"}} 1.0' in text


def test_a_run_past_the_timeout_is_504_and_the_server_goes_on(tmp_path: Path) -> None:
    from helpers import spin_model

    import bundle

    path = tmp_path / "spin.mbundle"
    bundle.save(spin_model(), path, name="spin")
    app = create_app(
        path,
        trust=bundle.TrustPolicy(allow_unsigned=True),
        options=ServeOptions(request_timeout=0.2),
    )
    with Running(app) as srv:

        def call(n: int) -> httpx.Response:
            return httpx.post(
                f"{srv.url}/v2/models/spin/infer",
                timeout=60,
                json={"inputs": [{"name": "N", "datatype": "INT64", "shape": [1], "data": [n]}]},
            )

        started = time.monotonic()
        r = call(2**60)
        assert r.status_code == 504
        assert "did not finish within 0.2 s" in r.json()["error"]
        assert time.monotonic() - started < 30  # stopped, not run for ever
        r = call(3)
        assert r.status_code == 200
        assert r.json()["outputs"][0]["data"] == [3.0]
