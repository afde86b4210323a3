"""The HTTP API (FastAPI): one model directory behind /v1/* endpoints, /healthz, /metrics,
/attention and the OpenAPI docs (/docs, /openapi.json).

A fine-tuned model's task is served at its `Task.route` (/v1/<task name>) with the request and
prediction models the task declares (`Task.serve_api`); fill-mask, embed and attention are the
encoder's. Only the endpoints the directory can answer are routed and documented; the others answer 404
with a JSON error that says why. Every error is JSON of one shape,
`{"error": {"status", "type", "message", "details"}}`:
- 413 for a body over `max_body_bytes` (refused before parsing), more than `max_items` inputs,
  or a text over `max_text_chars`;
- 422 for malformed JSON, wrong types, unknown fields, and inputs the model cannot use (a
  fill-mask text without [MASK]);
- 404/405 for unknown paths and methods, 503 while shutting down, 500 for bugs (logged).
"""

from __future__ import annotations

import inspect
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertforge import __version__
from bertforge.errors import BertforgeError
from bertforge.serve import schemas
from bertforge.serve.batching import MicroBatcher, ShuttingDown
from bertforge.serve.engine import Engine
from bertforge.serve.metrics import Registry
from bertforge.serve.settings import ServeSettings
from bertforge.tasks.task import RequestError, Task

logger = logging.getLogger("bertforge.serve")

ENCODER_ROUTES = {"fill-mask": "/v1/fill-mask", "embed": "/v1/embed", "attention": "/v1/attention"}
WHY_NOT = {
    "fill-mask": "the model has no masked-LM head (serve a pretrained model for fill-mask)",
    "attention": "attention maps need the PyTorch backend",
}
OPERATIONS = ("/healthz", "/metrics", "/attention", "/docs", "/openapi.json")


def routes() -> dict[str, str]:
    """Endpoint -> path: every registered task's (`Task.route`), then the encoder's."""
    from bertforge.tasks.registry import all_tasks

    return {**{task.name: task.route for task in all_tasks()}, **ENCODER_ROUTES}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, details: list[dict] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.details = status, kind, message, details


def error_response(status: int, kind: str, message: str, details: list[dict] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"status": status, "type": kind, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413 before anyone parses it,
    whether it declares its length or streams in chunks."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            if length > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        response = error_response(413, "payload_too_large", f"the request body exceeds {self.max_bytes} bytes",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


class Observe:
    """ASGI middleware: request counts by endpoint and status, latency, requests in flight."""

    def __init__(self, app: Any, metrics: Registry):
        self.app, self.metrics = app, metrics
        self.known = set(routes().values()) | set(OPERATIONS)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.known else "other"
        status = 500
        started = time.perf_counter()

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc(amount=1)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.in_flight.inc(amount=-1)
            self.metrics.requests.inc(endpoint, str(status))
            self.metrics.latency.observe(time.perf_counter() - started, endpoint)


def _validation_details(error: RequestValidationError) -> list[dict]:
    details = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        details.append({"location": location, "message": item.get("msg", ""), "type": item.get("type", "")})
    return details


class _Api:
    """What the route handlers of one app share: the engine, the limits and the micro-batcher."""

    def __init__(self, engine: Engine, settings: ServeSettings, batcher: MicroBatcher):
        self.engine, self.settings, self.batcher = engine, settings, batcher
        self.model_name = engine.directory.name

    def check_sizes(self, texts: list[str]) -> None:
        if len(texts) > self.settings.max_items:
            raise ApiError(413, "payload_too_large",
                           f"{len(texts)} inputs in one request; the limit is {self.settings.max_items}")
        for index, text in enumerate(texts):
            if len(text) > self.settings.max_text_chars:
                raise ApiError(413, "payload_too_large", f"input {index} has {len(text)} characters; "
                                                         f"the limit is {self.settings.max_text_chars}")

    async def call(self, endpoint: str, params: tuple, items: list[Any]) -> list[Any]:
        try:
            return await self.batcher.call(endpoint, params, items)
        except ShuttingDown:
            raise ApiError(503, "shutting_down", "the server is shutting down") from None
        except BertforgeError as error:
            raise ApiError(422, "unprocessable_input", str(error)) from None


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The application for `engine`; its lifespan starts and drains the micro-batcher."""
    settings = settings or ServeSettings()
    metrics = Registry()
    metrics.info.set(1, engine.directory.name, engine.kind, engine.backend, str(settings.micro_batching).lower())

    def run(endpoint: str, params: tuple, items: list[Any]) -> list[Any]:
        if endpoint == "attention":
            return [engine.attention(text, pair, settings.max_attention_tokens) for text, pair in items]
        return engine.runner(endpoint)(params, items)

    batcher = MicroBatcher(run, enabled=settings.micro_batching, max_batch_items=settings.batch_size,
                           max_wait_ms=settings.max_wait_ms, metrics=metrics)
    state = {"draining": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            state["draining"] = True
            await batcher.close()

    app = FastAPI(title="bertforge", version=__version__, lifespan=lifespan,
                  description=f"Model `{engine.directory.name}` ({engine.kind}, {engine.backend} backend). "
                              f"Endpoints: {', '.join(engine.endpoints)}.",
                  responses={413: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}})
    app.state.engine, app.state.batcher, app.state.metrics, app.state.settings = engine, batcher, metrics, settings
    api = _Api(engine, settings, batcher)
    _add_error_handlers(app)
    if engine.loaded.task is not None:
        _add_task_route(app, api, engine.loaded.task)
    _add_encoder_routes(app, api)
    _add_unserved_routes(app, set(engine.endpoints))

    @app.get("/healthz", response_model=schemas.Health, tags=["operations"], summary="liveness and what is served")
    async def healthz() -> dict[str, Any]:
        return {"status": "draining" if state["draining"] else "ok", "model": api.model_name, "kind": engine.kind,
                "backend": engine.backend, "endpoints": engine.endpoints, "micro_batching": settings.micro_batching}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": {"status", "type", "message", "details"}}` (see the module docstring)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.kind, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = _validation_details(error)
        first = details[0] if details else {"location": [], "message": "invalid request", "type": ""}
        where = ".".join(part for part in first["location"] if part != "body")
        if first["type"] == "json_invalid":
            message = f"the body is not valid JSON (at character {where or 0})"
        elif first["type"] == "model_attributes_type" and first["location"] == ["body"]:
            message = "the body must be a JSON object, sent with Content-Type: application/json"
        else:
            message = f"{where}: {first['message']}" if where else first["message"]
        return error_response(422, "validation_error", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return error_response(error.status_code, kinds.get(error.status_code, "http_error"), str(error.detail),
                              headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return error_response(500, "internal_error", "internal server error")


def _add_task_route(app: FastAPI, api: _Api, task: Task) -> None:
    """POST task.route: the task's request body -> {"model", "predictions": [task's prediction]}."""
    spec = task.serve_api()
    name = spec.request.__name__.removesuffix("Request")
    response = create_model(f"{name}Response", model=(str, ...), predictions=(list[spec.prediction], ...))

    async def predict(body: Any) -> dict[str, Any]:
        try:
            call = task.serve_inputs(body, api.engine.loaded.settings)
        except RequestError as error:
            raise ApiError(422, "validation_error", str(error)) from None
        for texts in call.texts:
            api.check_sizes(texts)
        return {"model": api.model_name, "predictions": await api.call(task.name, call.params, call.items)}

    # FastAPI reads the body's model from the signature; the task's model is known only now.
    body = inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=spec.request)
    predict.__signature__ = inspect.Signature([body], return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    predict.__name__ = task.name.replace("-", "_")
    app.post(task.route, response_model=response, tags=["tasks"], summary=spec.summary)(predict)


def _add_encoder_routes(app: FastAPI, api: _Api) -> None:
    """fill-mask, embed and attention (with its HTML page), where the engine offers them."""
    offered, engine, settings = set(api.engine.endpoints), api.engine, api.settings

    if "fill-mask" in offered:
        @app.post(ENCODER_ROUTES["fill-mask"], response_model=schemas.FillMaskResponse, tags=["encoder"],
                  summary="the likeliest tokens for each [MASK]")
        async def fill_mask(body: schemas.FillMaskRequest) -> dict[str, Any]:
            api.check_sizes(body.texts)
            for index, text in enumerate(body.texts):
                try:
                    engine.check_fill_mask(text)
                except BertforgeError as error:
                    raise ApiError(422, "unprocessable_input", f"input {index}: {error}") from None
            predictions = await api.call("fill-mask", (body.top_k,), list(body.texts))
            return {"model": api.model_name, "predictions": predictions}

    if "embed" in offered:
        @app.post(ENCODER_ROUTES["embed"], response_model=schemas.EmbedResponse, tags=["encoder"],
                  summary="sentence embeddings: mean-pooled or [CLS]")
        async def embed(body: schemas.EmbedRequest) -> dict[str, Any]:
            api.check_sizes(body.texts)
            vectors = await api.call("embed", (body.pooling, body.normalize), list(body.texts))
            return {"model": api.model_name, "pooling": body.pooling, "dimensions": engine.config.hidden_size,
                    "embeddings": vectors}

    if "attention" in offered:
        @app.post(ENCODER_ROUTES["attention"], response_model=schemas.AttentionResponse, tags=["explain"],
                  summary="attention probabilities of every layer and head for one text")
        async def attention(body: schemas.AttentionRequest) -> dict[str, Any]:
            api.check_sizes([body.text] + ([body.text_pair] if body.text_pair is not None else []))
            maps = (await api.call("attention", (), [(body.text, body.text_pair)]))[0]
            return {"model": api.model_name, **maps}

        @app.get("/attention", response_class=HTMLResponse, tags=["explain"],
                 summary="interactive attention maps (HTML page)")
        async def attention_page(text: str = "The quick brown fox jumps over the lazy dog.") -> HTMLResponse:
            from bertforge.explain.attention import render_html

            return HTMLResponse(render_html(api_url=ENCODER_ROUTES["attention"],
                                            default_text=text[:settings.max_text_chars]))


def _add_unserved_routes(app: FastAPI, offered: set[str]) -> None:
    """Every known endpoint the model does not offer answers 404 saying why (hidden from the docs)."""
    from bertforge.tasks.registry import all_tasks

    why = {**{task.name: f"the model is not a fine-tuned {task.serve_title or task.name + ' model'}"
              for task in all_tasks()}, **WHY_NOT}
    for endpoint, path in routes().items():
        if endpoint not in offered:
            app.add_api_route(path, _not_served(path, why[endpoint]), methods=["POST"], include_in_schema=False)


def _not_served(path: str, why: str) -> Callable[[], Awaitable[JSONResponse]]:
    async def not_served() -> JSONResponse:
        return error_response(404, "not_served", f"{path} is not served: {why}")

    return not_served
