"""The ASGI app: Open Inference Protocol v2 over the registry, plus predict, metrics, page.

Routes (``{v}``: a version label, answered only by that version)::

    GET  /v2  /v2/health/live  /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}]            metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer      v2 JSON tensors
    POST /v2/models/{name}/predict                   {"records": [...]} or {"columns": {...}}
    GET  /v2/models/{name}/status                    swap pipeline, probation, failures
    POST /v2/repository/index  /v2/repository/models/{name}/load|unload
    GET  /metrics  /openapi.json  /  /page.js

Every answer from a model carries ``X-Model-Name``, ``X-Model-Version`` and
``X-Model-Digest``: the version that actually ran, even across a swap. Bodies are
read with a size limit (413) and a time limit (408) before any parsing; JSON
parsing, checking and the run happen off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from .._version import __version__
from ..errors import InputError, RunTimeoutError
from ..trust.policy import TrustPolicy
from .openapi import openapi_document
from .page import CSP, PAGE_JS, render_page
from .protocol import (
    V2_DATATYPES,
    as_model_input,
    encode_outputs,
    parse_infer,
    parse_predict,
    to_jsonable,
)
from .registry import NotServing, Registry, ServeOptions, Version
from .sources import FileSource, Source

__all__ = ["create_app", "serve"]


class _Refused(Exception):  # noqa: N818 -- an HTTP answer, raised to unwind to the handler
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _no_constants(name: str) -> Any:
    raise InputError(f"malformed JSON: {name} is not a JSON number", entry="body")


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise InputError(
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", entry="body"
        ) from e
    except (UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"malformed JSON: {type(e).__name__}", entry="body") from e


def _headers(v: Version | None) -> dict[str, str]:
    if v is None:
        return {}
    return {"X-Model-Name": v.name, "X-Model-Version": v.version, "X-Model-Digest": v.digest}


def _metadata(v: Version) -> dict[str, Any]:
    def t(s: Any) -> dict[str, Any]:
        return {
            "name": s.name,
            "datatype": V2_DATATYPES[s.dtype],
            "shape": [d if isinstance(d, int) else -1 for d in s.shape],
        }

    m = v.manifest
    return {
        "name": v.name,
        "versions": [v.version],
        "platform": "onnxruntime",
        "inputs": [t(s) for s in m.inputs],
        "outputs": [t(s) for s in m.outputs],
        "parameters": {
            "digest": v.digest,
            "signers": [s["key_id"] for s in v.signers],
            "methods": sorted(m.methods),
            "columns": [c.to_dict() for c in m.columns],
        },
    }


def create_app(
    *models: str | os.PathLike[str] | Source,
    trust: TrustPolicy | None = None,
    options: ServeOptions | None = None,
    registry: Registry | None = None,
) -> Any:
    """An ASGI app (Starlette) serving ``models``: bundle paths (watched) or sources.

    ``trust`` (a :class:`bundle.TrustPolicy`) is required for bundle paths; a
    :class:`~bundle.serve.StoreSource` carries its store's. Or pass a ready
    ``registry``. Models are loaded (verified) at startup; the app's lifespan starts
    and stops the registry's polling. Run it with uvicorn (``model-bundle serve``).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    if registry is None:
        sources: list[Source] = []
        for m in models:
            if isinstance(m, (str, os.PathLike)):
                if trust is None:
                    raise TypeError(
                        "serving a bundle file needs trust= (a bundle.TrustPolicy; "
                        "TrustPolicy(allow_unsigned=True) to serve unsigned ones)"
                    )
                sources.append(FileSource(m, trust=trust))
            else:
                sources.append(m)
        registry = Registry(sources, options)
    elif models:
        raise TypeError("give models or registry=, not both")
    reg = registry
    opts = reg.options
    metrics = reg.metrics

    def answer(status: int, body: Any, v: Version | None = None) -> Response:
        return Response(
            body if isinstance(body, bytes) else _dumps(body),
            status,
            headers=_headers(v),
            media_type="application/json",
        )

    def error(status: int, message: str, v: Version | None = None) -> Response:
        return answer(status, {"error": message}, v)

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > opts.max_body_bytes):
            raise _Refused(
                413,
                f"request body of {length} bytes is over the limit of {opts.max_body_bytes} bytes",
            )
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > opts.max_body_bytes:
                    raise _Refused(
                        413, f"request body is over the limit of {opts.max_body_bytes} bytes"
                    )
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), opts.body_timeout)
        except asyncio.TimeoutError as e:
            raise _Refused(
                408,
                f"the request body did not arrive within "
                f"{opts.body_timeout:g} s ({size} bytes received)",
            ) from e
        return b"".join(chunks)

    def run_model(endpoint: str, name: str, version: str | None, raw: bytes) -> Response:
        """Parse, check, run and encode on a worker thread, on one counted-in version."""
        with reg.use(name, version) as v:
            model = v.model
            assert model is not None  # counted in: not released until we leave
            started = time.perf_counter()
            try:
                body = _loads(raw)
                if endpoint == "infer":
                    req = parse_infer(body, v.manifest)
                else:
                    cols, method = parse_predict(body, v.manifest)
            except InputError as e:
                metrics.errors.labels(name, "input").inc()
                return error(400, str(e), v)
            try:
                if endpoint == "infer":
                    values = model.run(
                        as_model_input(req.feeds, v.manifest),
                        req.outputs,
                        timeout=opts.request_timeout,
                    )
                    payload: dict[str, Any] = {
                        "model_name": name,
                        "model_version": v.version,
                        "outputs": encode_outputs(values, v.manifest),
                    }
                    if req.id is not None:
                        payload["id"] = req.id
                else:
                    payload = {"model_name": name, "model_version": v.version}
                    if method or v.manifest.methods:
                        fn = getattr(model, method or "predict")
                        out = fn(cols, timeout=opts.request_timeout)
                        payload["predictions"] = to_jsonable(out) if out.ndim <= 1 else out.tolist()
                    else:
                        values = model.run(cols, timeout=opts.request_timeout)
                        payload["outputs"] = {k: a.tolist() for k, a in values.items()}
                data = _dumps(payload)
            except RunTimeoutError as e:
                reg.record(v, time.perf_counter() - started, True)
                metrics.errors.labels(name, "timeout").inc()
                return error(504, str(e), v)
            except ValueError as e:  # NaN in a nested output list (to_jsonable handles flat)
                reg.record(v, time.perf_counter() - started, True)
                metrics.errors.labels(name, "run").inc()
                return error(500, f"the output cannot be written as JSON: {e}", v)
            except Exception as e:  # the input passed the signature checks: the model failed
                reg.record(v, time.perf_counter() - started, True)
                metrics.errors.labels(name, "run").inc()
                return error(
                    500, f"the model failed on this input: {' '.join(str(e).split())[:300]}", v
                )
            took = time.perf_counter() - started
            reg.record(v, took, False)
            metrics.latency.labels(name).observe(took)
            return answer(200, data, v)

    async def model_call(request: Request, endpoint: str) -> Response:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        try:
            raw = await read_body(request)
            response = await run_in_threadpool(run_model, endpoint, name, version, raw)
        except _Refused as e:
            response = error(e.status, str(e))
        except NotServing as e:
            response = error(e.status, str(e))
        if name in reg.slots:
            metrics.requests.labels(name, endpoint, str(response.status_code)).inc()
        return response

    async def infer(request: Request) -> Response:
        return await model_call(request, "infer")

    async def predict(request: Request) -> Response:
        return await model_call(request, "predict")

    async def server_metadata(request: Request) -> Response:
        return answer(
            200,
            {
                "name": "model-bundle",
                "version": __version__,
                "extensions": ["model_repository", "predict", "metrics"],
            },
        )

    async def live(request: Request) -> Response:
        return answer(200, {"live": True})

    async def ready(request: Request) -> Response:
        waiting = [s.name for s in reg.slots.values() if s.enabled and s.current is None]
        if waiting:
            return answer(503, {"ready": False, "not_ready": waiting})
        return answer(200, {"ready": True})

    def current(request: Request) -> Version:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        with reg.use(name, version) as v:
            return v

    async def model_metadata(request: Request) -> Response:
        try:
            v = current(request)
        except NotServing as e:
            return error(e.status, str(e))
        return answer(200, _metadata(v), v)

    async def model_ready(request: Request) -> Response:
        try:
            v = current(request)
        except NotServing as e:
            return error(e.status, str(e))
        return answer(200, {"name": v.name, "ready": True}, v)

    async def model_status(request: Request) -> Response:
        try:
            slot = reg.slot(request.path_params["name"])
        except NotServing as e:
            return error(e.status, str(e))
        return answer(200, slot.status())

    async def repository_index(request: Request) -> Response:
        try:
            raw = await read_body(request)
            body = _loads(raw) if raw.strip() else {}
        except _Refused as e:
            return error(e.status, str(e))
        except InputError as e:
            return error(400, str(e))
        if not isinstance(body, dict) or not isinstance(body.get("ready", False), bool):
            return error(400, "body: must be an object with an optional boolean 'ready'")
        return answer(200, reg.index(ready_only=body.get("ready", False)))

    async def repository_load(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            reg.slot(name)
        except NotServing as e:
            return error(e.status, str(e))
        asked = time.time()
        status = await run_in_threadpool(reg.refresh, name, True)
        fail = status["last_failure"]
        if fail is not None and fail["time"] >= asked:
            keeping = (
                f"; version {status['current']['version']} still serving"
                if status["current"]
                else ""
            )
            return error(400, f"{fail['stage']}: {fail['error']}{keeping}")
        return answer(200, status)

    async def repository_unload(request: Request) -> Response:
        try:
            reg.unload(request.path_params["name"])
        except NotServing as e:
            return error(e.status, str(e))
        return answer(200, {"name": request.path_params["name"], "state": "unloaded"})

    async def metrics_endpoint(request: Request) -> Response:
        text, content_type = metrics.render()
        return Response(text, 200, media_type=content_type)

    async def openapi(request: Request) -> Response:
        manifests = {n: s.current.manifest for n, s in reg.slots.items() if s.current is not None}
        return JSONResponse(openapi_document(manifests))

    def page_models() -> list[tuple[dict[str, Any], Any, list[dict[str, Any]]]]:
        out = []
        for slot in reg.slots.values():
            status = slot.status()
            cur = slot.current
            try:
                history = slot.source.history()
            except Exception as e:  # the page still shows what serves
                history = [{"action": f"history unavailable: {type(e).__name__}: {e}"}]
            out.append((status, cur.manifest if cur else None, history))
        return out

    async def page(request: Request) -> Response:
        text = render_page(await run_in_threadpool(page_models))
        return HTMLResponse(text, headers={"Content-Security-Policy": CSP})

    async def page_js(request: Request) -> Response:
        return Response(
            PAGE_JS, media_type="text/javascript", headers={"Content-Security-Policy": CSP}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await run_in_threadpool(reg.start)
        try:
            yield
        finally:
            await run_in_threadpool(reg.stop)

    m = "/v2/models/{name}"
    mv = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/", page),
        Route("/page.js", page_js),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route(m, model_metadata),
        Route(mv, model_metadata),
        Route(f"{m}/ready", model_ready),
        Route(f"{mv}/ready", model_ready),
        Route(f"{m}/infer", infer, methods=["POST"]),
        Route(f"{mv}/infer", infer, methods=["POST"]),
        Route(f"{m}/predict", predict, methods=["POST"]),
        Route(f"{m}/status", model_status),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.registry = reg
    return app


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    graceful_timeout: int = 30,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM; running requests get
    ``graceful_timeout`` seconds to finish."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=graceful_timeout,
        lifespan="on",
    )
