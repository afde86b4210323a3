"""An extra fine-tuning task that lives outside the package: do two texts match?

It proves that a task is one registered unit: importing this module registers `pair_match`, and
with no source file of bertforge changed, `bertforge finetune --task pair_match`, predict, ONNX
export and serve all run it. It declares everything a task declares:

- settings (`PairMatchSettings`): the JSON keys of the two texts and the label, the decision threshold;
- a head of its own (`BertForPairMatching`: pooler -> one logit) with its Hugging Face key map;
- a reader of JSON lines {"first": ..., "second": ..., "match": 0 | 1};
- features that are not single (T,) rows: each text is tokenized alone and packed apart, and
  the task's own collate joins them into `[CLS] first [SEP] second [SEP]` at batching time;
- a metric (accuracy and F1 of "match"), prediction records, ONNX outputs (`match_logits`) and
  a serve request/response schema (`pairs: [{first, second}]`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertModel, BertPreTrainedModel
from bertforge.tasks.features import Features
from bertforge.tasks.reading import read_lines
from bertforge.tasks.registry import register
from bertforge.tasks.running import run_model
from bertforge.tasks.settings import TaskSettings
from bertforge.tasks.task import Evaluation, RequestError, ServeApi, ServeCall, Task
from bertforge.tasks.windows import encode_windows


@dataclass
class PairMatchSettings(TaskSettings):
    """`format`: auto | jsonl."""

    first_key: str = "first"
    second_key: str = "second"
    label_key: str = "match"
    threshold: float = 0.5
    """A pair matches when its probability is at least this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.threshold < 1.0:
            raise BertforgeError(f"settings.threshold must be in (0, 1), got {self.threshold}")


@dataclass
class PairMatchOutput:
    loss: torch.Tensor | None
    match_logits: torch.Tensor
    """(B,)"""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BertForPairMatching(BertPreTrainedModel):
    """BERT + pooler + one linear unit: the logit that the pair matches."""

    architecture = "BertForPairMatching"
    hf_key_map = {"scorer": "match_scorer"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        self.scorer = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, match_labels: torch.Tensor | None = None, *,
                output_attentions: bool = False, output_hidden_states: bool = False) -> PairMatchOutput:
        encoded = self.bert(input_ids, token_type_ids, attention_mask, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        logits = self.scorer(encoded.pooler_output).squeeze(-1)  # (B,)
        loss = None if match_labels is None else F.binary_cross_entropy_with_logits(logits.float(),
                                                                                    match_labels.float())
        return PairMatchOutput(loss, logits, encoded.hidden_states, encoded.attentions)


@dataclass
class PairExample:
    first: str
    second: str
    match: int | None
    line: int


@dataclass
class PairFeatures:
    """Each text packed on its own (with [CLS]/[SEP]); `lengths` are the joined lengths."""

    first: Features
    second: Features
    labels: np.ndarray | None

    def __post_init__(self) -> None:
        self.lengths = self.first.lengths + self.second.lengths - 1  # the second [CLS] is dropped

    def __len__(self) -> int:
        return len(self.lengths)


@register
class PairMatchTask(Task):
    name = "pair_match"
    help = "do two texts match (binary, JSON lines)"
    settings_class = PairMatchSettings
    model_class = BertForPairMatching
    primary_metric = "accuracy"
    onnx_outputs = ("match_logits",)
    needs_id2label = False
    serve_title = "pair matcher"

    def read(self, path: str | Path, settings: PairMatchSettings) -> list[PairExample]:
        return self._read(path, settings, labeled=True)

    def read_inputs(self, path: str | Path, settings: PairMatchSettings) -> list[PairExample]:
        return self._read(path, settings, labeled=False)

    def _read(self, path: str | Path, settings: PairMatchSettings, labeled: bool) -> list[PairExample]:
        if settings.format not in ("auto", "jsonl"):
            raise BertforgeError(f"unknown pair_match format {settings.format!r}; use auto or jsonl")
        examples = []
        for number, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            label = record.get(settings.label_key) if labeled else None
            if labeled and label not in (0, 1, True, False):
                raise BertforgeError(f"{settings.label_key!r} must be 0 or 1", path=Path(path), line=number)
            examples.append(PairExample(str(record[settings.first_key]), str(record[settings.second_key]),
                                        None if label is None else int(label), number))
        return examples

    def label_names(self, examples: list[PairExample], settings: PairMatchSettings) -> None:
        return None

    def configure(self, config: BertConfig, labels: list[str] | None, settings: PairMatchSettings) -> BertConfig:
        return config

    def featurize(self, examples: list[PairExample], tokenizer: Any, config: BertConfig,
                  settings: PairMatchSettings, training: bool) -> PairFeatures:
        half = settings.max_length // 2
        packed = []
        for texts in ([e.first for e in examples], [e.second for e in examples]):
            windows = encode_windows(tokenizer, texts, max_length=half, overflow=False, details=False)
            packed.append(Features.pack([w.ids for w in windows], [w.type_ids for w in windows],
                                        [w.sample for w in windows]))
        labels = None
        if all(example.match is not None for example in examples):
            labels = np.array([example.match for example in examples], dtype=np.float32)
        return PairFeatures(packed[0], packed[1], labels)

    def collate(self, features: PairFeatures, indices: np.ndarray, pad_token_id: int) -> dict[str, torch.Tensor]:
        """`[CLS] first [SEP]` + `second [SEP]` (its [CLS] dropped), type ids 0 then 1, padded."""
        rows = [np.concatenate([features.first.tokens(i), features.second.tokens(i)[1:]]) for i in indices]
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, (index, ids) in enumerate(zip(indices, rows)):
            input_ids[row, :len(ids)] = ids
            token_type_ids[row, features.first.lengths[index]:len(ids)] = 1
            attention_mask[row, :len(ids)] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
                 "attention_mask": torch.from_numpy(attention_mask)}
        if features.labels is not None:
            batch["match_labels"] = torch.from_numpy(features.labels[np.asarray(indices)])
        return batch

    def _probabilities(self, model: Any, tokenizer: Any, examples: list[PairExample], settings: PairMatchSettings,
                       batch_size: int) -> np.ndarray:
        features = self.featurize(examples, tokenizer, model.config, settings, training=False)
        outputs = run_model(model, features, tokenizer.pad_token_id, batch_size,
                            lambda output, batch: {"logits": output.match_logits}, collate=self.collate)
        logits = np.array(outputs.get("logits", []), dtype=np.float64).reshape(-1)
        return 1.0 / (1.0 + np.exp(-logits))

    def _records(self, examples: list[PairExample], probabilities: np.ndarray,
                 settings: PairMatchSettings) -> list[dict[str, Any]]:
        return [{"first": e.first, "second": e.second, "match": bool(p >= settings.threshold), "score": float(p)}
                | ({} if e.match is None else {"gold": e.match}) for e, p in zip(examples, probabilities)]

    def evaluate(self, model: Any, tokenizer: Any, examples: list[PairExample], settings: PairMatchSettings,
                 batch_size: int = 64, features: Any = None) -> Evaluation:
        probabilities = self._probabilities(model, tokenizer, examples, settings, batch_size)
        gold = np.array([example.match for example in examples])
        predicted = (probabilities >= settings.threshold).astype(np.int64)
        true_positive = float(((predicted == 1) & (gold == 1)).sum())
        denominator = float(predicted.sum() + gold.sum())
        metrics = {"accuracy": float((predicted == gold).mean()),
                   "f1": 2 * true_positive / denominator if denominator else 0.0, "examples": float(len(examples))}
        return Evaluation(metrics, self._records(examples, probabilities, settings))

    def inputs_from_texts(self, texts: list[str], settings: PairMatchSettings, *, context: str | None = None,
                          text_pair: str | None = None) -> list[PairExample]:
        if text_pair is None:
            raise BertforgeError("pair_match needs a second text: pass --text-pair TEXT")
        return [PairExample(text, text_pair, None, index) for index, text in enumerate(texts, start=1)]

    def predict(self, model: Any, tokenizer: Any, inputs: list[PairExample], settings: PairMatchSettings,
                batch_size: int = 64) -> list[dict[str, Any]]:
        unlabeled = [PairExample(e.first, e.second, None, e.line) for e in inputs]
        return self._records(unlabeled, self._probabilities(model, tokenizer, unlabeled, settings, batch_size),
                             settings)

    def serve_api(self) -> ServeApi:
        return _serve_api()

    def serve_inputs(self, body: Any, settings: PairMatchSettings) -> ServeCall:
        if any(not pair.first.strip() or not pair.second.strip() for pair in body.pairs):
            raise RequestError("every pair needs two non-empty texts")
        inputs = [PairExample(pair.first, pair.second, None, index) for index, pair in enumerate(body.pairs, start=1)]
        return ServeCall(inputs, (), [[pair.first for pair in body.pairs], [pair.second for pair in body.pairs]])


@functools.cache
def _serve_api() -> ServeApi:
    from pydantic import BaseModel, ConfigDict, Field

    class Pair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        first: str
        second: str

    class PairMatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pairs: list[Pair] = Field(min_length=1)

    class PairMatchPrediction(BaseModel):
        first: str
        second: str
        match: bool
        score: float = Field(description="probability that the two texts match")

    return ServeApi(PairMatchRequest, PairMatchPrediction, "do the two texts of each pair match?")
