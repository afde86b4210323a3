"""The HTTP API (FastAPI): one model directory behind /v1/* endpoints, /healthz, /metrics,
/attention and the OpenAPI docs (/docs, /openapi.json).

Only the endpoints the directory can answer are routed and documented; the others answer 404
with a JSON error that says why. Every error is JSON of one shape,
`{"error": {"status", "type", "message", "details"}}`:
- 413 for a body over `max_body_bytes` (refused before parsing), more than `max_items` inputs,
  or a text over `max_text_chars`;
- 422 for malformed JSON, wrong types, unknown fields, and inputs the model cannot use (a
  fill-mask text without [MASK]);
- 404/405 for unknown paths and methods, 503 while shutting down, 500 for bugs (logged).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertforge import __version__
from bertforge.errors import BertforgeError
from bertforge.serve import schemas
from bertforge.serve.batching import MicroBatcher, ShuttingDown
from bertforge.serve.engine import ENDPOINTS, Engine
from bertforge.serve.metrics import Registry
from bertforge.serve.settings import ServeSettings

logger = logging.getLogger("bertforge.serve")

ROUTES = {"classify": "/v1/classify", "ner": "/v1/ner", "qa": "/v1/qa", "fill-mask": "/v1/fill-mask",
          "embed": "/v1/embed", "attention": "/v1/attention"}
WHY_NOT = {
    "classify": "the model is not a fine-tuned classifier",
    "ner": "the model is not a fine-tuned token classifier (NER)",
    "qa": "the model is not a fine-tuned question-answering model",
    "fill-mask": "the model has no masked-LM head (serve a pretrained model for fill-mask)",
    "attention": "attention maps need the PyTorch backend",
}


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
        self.known = set(ROUTES.values()) | {"/healthz", "/metrics", "/attention", "/docs", "/openapi.json"}

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

    model_name = engine.directory.name
    app = FastAPI(title="bertforge", version=__version__, lifespan=lifespan,
                  description=f"Model `{model_name}` ({engine.kind}, {engine.backend} backend). "
                              f"Endpoints: {', '.join(engine.endpoints)}.",
                  responses={413: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}})
    app.state.engine, app.state.batcher, app.state.metrics, app.state.settings = engine, batcher, metrics, settings

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

    def check_sizes(texts: list[str]) -> None:
        if len(texts) > settings.max_items:
            raise ApiError(413, "payload_too_large",
                           f"{len(texts)} inputs in one request; the limit is {settings.max_items}")
        for index, text in enumerate(texts):
            if len(text) > settings.max_text_chars:
                raise ApiError(413, "payload_too_large",
                               f"input {index} has {len(text)} characters; the limit is {settings.max_text_chars}")

    async def call(endpoint: str, params: tuple, items: list[Any]) -> list[Any]:
        try:
            return await batcher.call(endpoint, params, items)
        except ShuttingDown:
            raise ApiError(503, "shutting_down", "the server is shutting down") from None
        except BertforgeError as error:
            raise ApiError(422, "unprocessable_input", str(error)) from None

    offered = set(engine.endpoints)

    if "classify" in offered:
        @app.post(ROUTES["classify"], response_model=schemas.ClassifyResponse, tags=["tasks"],
                  summary="classify texts (or text pairs) with the fine-tuned classifier")
        async def classify(body: schemas.ClassifyRequest) -> dict[str, Any]:
            pairs = body.text_pairs
            if pairs is not None and len(pairs) != len(body.texts):
                raise ApiError(422, "validation_error",
                               f"text_pairs has {len(pairs)} items but texts has {len(body.texts)}")
            check_sizes(body.texts + (pairs or []))
            items = list(zip(body.texts, pairs or [None] * len(body.texts)))
            # Paired and single inputs never share a batch (see Engine.classify).
            predictions = await call("classify", (pairs is not None,), items)
            return {"model": model_name, "predictions": predictions}

    if "ner" in offered:
        @app.post(ROUTES["ner"], response_model=schemas.NerResponse, tags=["tasks"],
                  summary="named entities in texts, with character offsets")
        async def ner(body: schemas.NerRequest) -> dict[str, Any]:
            check_sizes(body.texts)
            return {"model": model_name, "predictions": await call("ner", (), list(body.texts))}

    if "qa" in offered:
        @app.post(ROUTES["qa"], response_model=schemas.QaResponse, tags=["tasks"],
                  summary="extract the answer to each question from its context")
        async def qa(body: schemas.QaRequest) -> dict[str, Any]:
            check_sizes([item.question for item in body.items])
            check_sizes([item.context for item in body.items])
            items = [(item.question, item.context) for item in body.items]
            return {"model": model_name, "predictions": await call("qa", (), items)}

    if "fill-mask" in offered:
        @app.post(ROUTES["fill-mask"], response_model=schemas.FillMaskResponse, tags=["encoder"],
                  summary="the likeliest tokens for each [MASK]")
        async def fill_mask(body: schemas.FillMaskRequest) -> dict[str, Any]:
            check_sizes(body.texts)
            for index, text in enumerate(body.texts):
                try:
                    engine.check_fill_mask(text)
                except BertforgeError as error:
                    raise ApiError(422, "unprocessable_input", f"input {index}: {error}") from None
            predictions = await call("fill-mask", (body.top_k,), list(body.texts))
            return {"model": model_name, "predictions": predictions}

    if "embed" in offered:
        @app.post(ROUTES["embed"], response_model=schemas.EmbedResponse, tags=["encoder"],
                  summary="sentence embeddings: mean-pooled or [CLS]")
        async def embed(body: schemas.EmbedRequest) -> dict[str, Any]:
            check_sizes(body.texts)
            vectors = await call("embed", (body.pooling, body.normalize), list(body.texts))
            return {"model": model_name, "pooling": body.pooling, "dimensions": engine.config.hidden_size,
                    "embeddings": vectors}

    if "attention" in offered:
        @app.post(ROUTES["attention"], response_model=schemas.AttentionResponse, tags=["explain"],
                  summary="attention probabilities of every layer and head for one text")
        async def attention(body: schemas.AttentionRequest) -> dict[str, Any]:
            check_sizes([body.text] + ([body.text_pair] if body.text_pair is not None else []))
            maps = (await call("attention", (), [(body.text, body.text_pair)]))[0]
            return {"model": model_name, **maps}

        @app.get("/attention", response_class=HTMLResponse, tags=["explain"],
                 summary="interactive attention maps (HTML page)")
        async def attention_page(text: str = "The quick brown fox jumps over the lazy dog.") -> HTMLResponse:
            from bertforge.export.attention import render_html

            return HTMLResponse(render_html(api_url=ROUTES["attention"], default_text=text[:settings.max_text_chars]))

    for endpoint in ENDPOINTS:
        if endpoint not in offered:
            app.add_api_route(ROUTES[endpoint], _not_served(endpoint), methods=["POST"], include_in_schema=False)

    @app.get("/healthz", response_model=schemas.Health, tags=["operations"], summary="liveness and what is served")
    async def healthz() -> dict[str, Any]:
        return {"status": "draining" if state["draining"] else "ok", "model": model_name, "kind": engine.kind,
                "backend": engine.backend, "endpoints": engine.endpoints, "micro_batching": settings.micro_batching}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)
    return app


def _not_served(endpoint: str) -> Callable[[], Awaitable[JSONResponse]]:
    async def not_served() -> JSONResponse:
        return error_response(404, "not_served", f"{ROUTES[endpoint]} is not served: {WHY_NOT[endpoint]}")

    return not_served
