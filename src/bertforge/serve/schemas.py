"""Request and response bodies of the HTTP API (pydantic) that are not a task's: fill-mask,
embeddings, attention, health and errors (each task declares its own, `Task.serve_api`).
Requests forbid unknown fields, so a typo is an error instead of a silently ignored option, and
their fields are strict (`"normalize": 0` is not a boolean, `"top_k": "5"` not an integer); no
field is ever a path on the server."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MASK = "[MASK]"


def _has_mask(text: str) -> str:
    if MASK not in text:
        raise ValueError(f"a fill-mask text needs a {MASK} token")
    return text


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
"""An integer as JSON Schema means it: 5 or 5.0, never "5" or true."""

VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"
"""A character that is no white space, neither in Python's sense (str.strip) nor in JSON Schema's
(ECMA-262 white space): the pattern means the same under both."""


def _not_blank(text: str) -> str:
    if re.search(VISIBLE, text) is None:
        raise ValueError("the text is empty (only white space)")
    return text


VisibleText = Annotated[StrictStr, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": VISIBLE})]
"""A text with at least one character that is not white space (the schema says so with a pattern)."""

MaskedText = Annotated[StrictStr, AfterValidator(_has_mask), Field(json_schema_extra={"pattern": r"\[MASK\]"})]
"""A text holding [MASK] (the schema says so with a pattern, so a schema-driven client knows)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FillMaskRequest(_Request):
    texts: list[MaskedText] = Field(min_length=1, description="texts with one or more [MASK] tokens, the first "
                                                                "within the tokens the model reads (else 413)")
    top_k: JsonInt = Field(5, ge=1, le=100, description="candidates per [MASK]")


class EmbedRequest(_Request):
    texts: list[StrictStr] = Field(min_length=1)
    pooling: Literal["mean", "cls"] = Field("mean", description="mean of the last hidden states, or [CLS]'s")
    normalize: StrictBool = Field(False, description="scale each vector to unit length")


class AttentionRequest(_Request):
    text: VisibleText
    text_pair: StrictStr | None = None


class TokenScore(BaseModel):
    token: str
    token_id: int
    score: float


class MaskFill(BaseModel):
    position: int = Field(description="token index of the [MASK]")
    predictions: list[TokenScore]


class FillMaskPrediction(BaseModel):
    text: str
    sequence: str = Field(description="the text with every [MASK] replaced by its best token")
    masks: list[MaskFill]


class FillMaskResponse(BaseModel):
    model: str
    predictions: list[FillMaskPrediction]


class EmbedResponse(BaseModel):
    model: str
    pooling: str
    dimensions: int
    embeddings: list[list[float]]


class AttentionResponse(BaseModel):
    model: str
    text: str
    text_pair: str | None
    tokens: list[str]
    layers: int
    heads: int
    weights: list[list[list[list[float]]]] = Field(description="[layer][head][query token][key token]")


class Health(BaseModel):
    status: Literal["ok", "draining"]
    model: str
    kind: str
    backend: str
    endpoints: list[str]
    micro_batching: bool


class ErrorBody(BaseModel):
    status: int
    type: str = Field(description="validation_error, payload_too_large, unprocessable_input, not_found, ...")
    message: str
    details: list[dict] | None = Field(None, description="per-field validation errors (422), else null")


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {
    400: "a malformed request line or header (Content-Length not a number)",
    413: "a body over the byte limit, or more inputs, characters or tokens than the server takes",
    422: "not JSON, not UTF-8, wrong types, unknown fields, lone surrogates, or inputs the model cannot use",
    500: "a bug on the server (logged)",
    503: "the server is shutting down",
}
"""Every error status a POST endpoint can answer, and why (all with the body `ErrorResponse`)."""


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for `statuses` (default: all of `ERRORS`), each the JSON error body."""
    return {status: {"model": ErrorResponse, "description": ERRORS[status]} for status in statuses or ERRORS}
