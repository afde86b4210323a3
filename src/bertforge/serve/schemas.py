"""Request and response bodies of the HTTP API (pydantic). Requests forbid unknown fields, so a
typo is an error instead of a silently ignored option; no field is ever a path on the server."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Request):
    texts: list[str] = Field(min_length=1, description="texts to classify")
    text_pairs: list[str] | None = Field(None, description="second texts, one per text, for models trained on pairs")


class NerRequest(_Request):
    texts: list[str] = Field(min_length=1, description="texts to tag; words are split as at fine-tuning")


class QaItem(_Request):
    question: str
    context: str


class QaRequest(_Request):
    items: list[QaItem] = Field(min_length=1, description="questions, each with the context it is asked about")


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


class ClassifyPrediction(BaseModel):
    text: str
    text_pair: str | None = None
    label: str | None = Field(None, description="the best label (absent for regression)")
    score: float = Field(description="the best label's probability, or the regression value")
    probabilities: dict[str, float] | None = None


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[ClassifyPrediction]


class Entity(BaseModel):
    type: str
    text: str
    start: int | None = Field(None, description="character offset in the text")
    end: int | None = None
    word_start: int
    word_end: int
    score: float


class NerPrediction(BaseModel):
    text: str
    tags: list[str] = Field(description="one tag per word")
    entities: list[Entity]


class NerResponse(BaseModel):
    model: str
    predictions: list[NerPrediction]


class Span(BaseModel):
    text: str
    start: int
    end: int
    score: float


class QaPrediction(BaseModel):
    question: str
    answer: str = Field(description='the answer cut from the context ("" when unanswerable)')
    start: int = Field(description="character offset of the answer in the context (-1: none)")
    end: int
    score: float
    n_best: list[Span]


class QaResponse(BaseModel):
    model: str
    predictions: list[QaPrediction]


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
