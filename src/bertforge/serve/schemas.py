"""Request and response bodies of the HTTP API (pydantic) that are not a task's: fill-mask,
embeddings, attention, health and errors (each task declares its own, `Task.serve_api`).
Requests forbid unknown fields, so a typo is an error instead of a silently ignored option; no
field is ever a path on the server."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FillMaskRequest(_Request):
    texts: list[str] = Field(min_length=1, description="texts with one or more [MASK] tokens")
    top_k: int = Field(5, ge=1, le=100, description="candidates per [MASK]")


class EmbedRequest(_Request):
    texts: list[str] = Field(min_length=1)
    pooling: Literal["mean", "cls"] = Field("mean", description="mean of the last hidden states, or [CLS]'s")
    normalize: bool = Field(False, description="scale each vector to unit length")


class AttentionRequest(_Request):
    text: str = Field(min_length=1)
    text_pair: str | None = None


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
    type: str
    message: str
    details: list[dict] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
