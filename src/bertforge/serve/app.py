"""The HTTP API (FastAPI): one model directory behind /v1/* endpoints, /healthz, /metrics,
/attention and the OpenAPI docs (/docs, /openapi.json).

A fine-tuned model's task is served at its `Task.route` (/v1/<task name>) with the request and
prediction models the task declares (`Task.serve_api`); fill-mask, embed and attention are the
encoder's. Only the endpoints the directory can answer are routed and documented; the others answer 404
with a JSON error that says why. Every error is JSON of one shape,
`{"error": {"status", "type", "message", "details"}}`, and every status a route can answer is
declared in the OpenAPI schema with that body (`schemas.ERRORS`):
- 413 for a body over `max_body_bytes` (refused before parsing), more than `max_items` inputs,
  a text over `max_text_chars`, or more than `max_request_tokens` tokens in all (counted with the
  fast tokenizer before the model runs);
- 422 for a body that is not UTF-8 or not JSON, wrong (strict) types, unknown fields, strings
  with a lone surrogate, and inputs the model cannot use (a fill-mask text without [MASK]);
- 404/405 for unknown paths and methods, 503 while shutting down, 500 for bugs (logged).
/metrics counts a request whose client hung up before the answer as status 499, not 500.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertforge.version import __version__
from bertforge.errors import BertforgeError
from bertforge.serve import schemas
from bertforge.serve.batching import MicroBatcher, ShuttingDown
from bertforge.serve.engine import Engine
from bertforge.serve.metrics import CONTENT_TYPE, Registry
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
    return JSONResponse(_encodable(body), status_code=status, headers=headers)


def _encodable(value: Any) -> Any:
    """`value` with every lone surrogate written as `\\udXXX` text: an error may quote what the
    client sent (an unknown field's name), and UTF-8 cannot carry a lone surrogate."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(item) for item in value]
    return value


def lone_surrogate(value: Any, where: tuple = ()) -> str | None:
    """The dotted location ("texts.0") of the first string in `value` (a request model, or
    JSON-like dicts, lists and strings) that holds a lone surrogate, which JSON's `\\ud800` escapes can carry but no
    tokenizer (nor UTF-8) can; None when there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ".".join(str(part) for part in where) or "body"
        return None
    if isinstance(value, BaseModel):
        items = ((name, getattr(value, name)) for name in type(value).model_fields)
    else:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = lone_surrogate(item, (*where, key))
        if found is not None:
            return found
    return None


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
        not_utf8 = _not_utf8(bytes(body))
        if not_utf8 is not None:
            await not_utf8(scope, receive, send)
            return
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


def _not_utf8(body: bytes) -> JSONResponse | None:
    """The 422 for a body that is not UTF-8, or None. JSON travels as UTF-8 (RFC 8259); FastAPI
    would answer other bytes with a 400 the API does not document."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return error_response(422, "validation_error", f"the body is not valid UTF-8 (byte {error.start})",
                              [{"location": ["body"], "message": "not valid UTF-8", "type": "utf8_invalid"}])
    return None


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
        status: int | None = None
        hung_up = False
        started = time.perf_counter()

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def listen() -> dict:
            nonlocal hung_up
            message = await receive()
            hung_up = hung_up or message["type"] == "http.disconnect"
            return message

        self.metrics.in_flight.inc(amount=1)
        try:
            await self.app(scope, listen, watch)
        finally:
            # No answer started: the client closed the connection first (499, nginx's code), or a bug.
            if status is None:
                status = 499 if hung_up else 500
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

    @staticmethod
    def check_unicode(body: Any) -> None:
        """A lone surrogate anywhere in the (validated) body is a 422 naming where it is."""
        where = lone_surrogate(body)
        if where is not None:
            raise ApiError(422, "validation_error", f"{where}: not valid Unicode (lone surrogate)",
                           [{"location": ["body", *where.split(".")], "message": "lone surrogate",
                             "type": "unicode_invalid"}])

    async def admit(self, body: Any, groups: list[list[str]]) -> None:
        """`check_unicode(body)`, then `check_limits(groups)`."""
        self.check_unicode(body)
        await self.check_limits(groups)

    async def check_limits(self, groups: list[list[str]]) -> None:
        """413 before the model runs: a group of strings over the item or character limit, or all
        of them together over the token limit."""
        for texts in groups:
            self.check_sizes(texts)
        await self.check_tokens([text for texts in groups for text in texts])

    async def check_tokens(self, texts: list[str]) -> None:
        limit = self.settings.max_request_tokens
        # A WordPiece token holds at least one character of the normalized text, and a character
        # normalizes (NFD) to at most four: the tokenizer runs only for requests near the limit.
        if 4 * sum(len(text) for text in texts) <= limit:
            return
        ids = await asyncio.to_thread(self.engine.tokenizer.encode_batch_ids, texts)
        tokens = sum(len(piece) for piece in ids)
        if tokens > limit:
            raise ApiError(413, "payload_too_large", f"the request holds {tokens} tokens; the limit is {limit}")

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
                  responses=schemas.error_responses(422, 500))
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
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

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
        api.check_unicode(body)
        try:
            call = task.serve_inputs(body, api.engine.loaded.settings)
        except RequestError as error:
            raise ApiError(422, "validation_error", str(error)) from None
        await api.check_limits(call.texts)
        return {"model": api.model_name, "predictions": await api.call(task.name, call.params, call.items)}

    # FastAPI reads the body's model from the signature; the task's model is known only now.
    body = inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=spec.request)
    predict.__signature__ = inspect.Signature([body], return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    predict.__name__ = task.name.replace("-", "_")
    app.post(task.route, response_model=response, tags=["tasks"], summary=spec.summary,
             responses=schemas.error_responses())(predict)


def _add_encoder_routes(app: FastAPI, api: _Api) -> None:
    """fill-mask, embed and attention (with its HTML page), where the engine offers them."""
    offered, engine, settings = set(api.engine.endpoints), api.engine, api.settings
    errors = schemas.error_responses()

    if "fill-mask" in offered:
        @app.post(ENCODER_ROUTES["fill-mask"], responses=errors, response_model=schemas.FillMaskResponse,
                  tags=["encoder"], summary="the likeliest tokens for each [MASK]")
        async def fill_mask(body: schemas.FillMaskRequest) -> dict[str, Any]:
            await api.admit(body, [body.texts])
            for index, text in enumerate(body.texts):
                try:
                    engine.check_fill_mask(text)
                except BertforgeError as error:
                    # The text holds [MASK] (validated): only its length keeps the model from it.
                    raise ApiError(413, "payload_too_large", f"input {index}: {error}") from None
            predictions = await api.call("fill-mask", (body.top_k,), list(body.texts))
            return {"model": api.model_name, "predictions": predictions}

    if "embed" in offered:
        @app.post(ENCODER_ROUTES["embed"], responses=errors, response_model=schemas.EmbedResponse,
                  tags=["encoder"], summary="sentence embeddings: mean-pooled or [CLS]")
        async def embed(body: schemas.EmbedRequest) -> dict[str, Any]:
            await api.admit(body, [body.texts])
            vectors = await api.call("embed", (body.pooling, body.normalize), list(body.texts))
            return {"model": api.model_name, "pooling": body.pooling, "dimensions": engine.config.hidden_size,
                    "embeddings": vectors}

    if "attention" in offered:
        @app.post(ENCODER_ROUTES["attention"], responses=errors, response_model=schemas.AttentionResponse,
                  tags=["explain"], summary="attention probabilities of every layer and head for one text")
        async def attention(body: schemas.AttentionRequest) -> dict[str, Any]:
            await api.admit(body, [[body.text] + ([body.text_pair] if body.text_pair is not None else [])])
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
