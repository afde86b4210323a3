"""Named-entity recognition as token classification.

Reader: CoNLL files, one word a line with its tag in a column, a blank line between sentences:
CoNLL-2003's four space-separated columns (`word POS chunk NER`, `-DOCSTART-` lines skipped)
and MSRA's two tab-separated columns (one Chinese character a line). A line with a tab is split
on tabs only, so a full-width space (U+3000) stays a word of its own.
Settings (`NerSettings`): format, token_column, tag_column, tag_scheme, max_length, stride, word_split.

Features: words go to the tokenizer pre-split; the first sub-token of each word carries the
word's tag and the other sub-tokens IGNORE_INDEX (as in the BERT paper, section 4.3). A sentence
longer than max_length is cut into windows that share `stride` tokens; at prediction time each
word takes its tag from the window where it sits farthest from an edge. Words are reassembled
at prediction time: an entity's character span runs from its first word's start to its last
word's end in the original text.

Head: dropout -> linear on every token, as transformers' BertForTokenClassification.

Metric: entity-level precision, recall and F1 with the semantics of conlleval (and seqeval's
default mode, which copies it): a chunk starts at B-/S-, at an I-/E- that follows O or a chunk
of another type (an I- without a B- starts an entity), and ends before B-/S-/O or a type change;
a predicted entity counts only when its type, first and last word all match a gold entity.
Both BIO (IOB2) and BIOES tags are read this way. Sentences are scored separately, as conlleval
resets at every blank line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertHeadModel, BertModel
from bertforge.tasks.classify import ClassifierOutput, classifier_dropout, token_cross_entropy
from bertforge.tasks.features import Features
from bertforge.tasks.reading import has_cjk, read_lines, warn
from bertforge.tasks.registry import register
from bertforge.tasks.running import run_model, softmax
from bertforge.tasks.settings import TaskSettings
from bertforge.tasks.task import Evaluation, ServeApi, ServeCall, Task
from bertforge.tasks.windows import encode_windows

DOCSTART = "-DOCSTART-"


@dataclass
class NerSettings(TaskSettings):
    """How NER reads its files (`format`: auto | conll) and cuts long sentences."""

    stride: int = 32
    """Tokens shared by consecutive windows of a sentence longer than max_length."""
    token_column: int = 0
    """The column of the word in a CoNLL line."""
    tag_column: int = -1
    """The column of the tag in a CoNLL line (-1: the last)."""
    tag_scheme: Literal["keep", "bio", "bioes"] = "keep"
    """Convert the file's tags to this scheme before training (`keep`: as written)."""
    word_split: Literal["auto", "whitespace", "char"] = "auto"
    """At prediction time: how raw text is cut into words; `auto` is `char` for text with
    CJK characters (as MSRA is labelled), else whitespace."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stride < 0:
            raise BertforgeError(f"settings.stride must be >= 0, got {self.stride}")


# -- the head -------------------------------------------------------------------------------


class BertForTokenClassification(BertHeadModel):
    """BERT (no pooler) + dropout + a linear classifier on every token."""

    architecture = "BertForTokenClassification"
    hf_key_map = {"classifier": "classifier"}
    """Head module paths, ours -> Hugging Face's (read by bertforge.convert)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
                output_attentions: bool = False, output_hidden_states: bool = False) -> ClassifierOutput:
        """labels (B, T): the tag id of each word's first sub-token, IGNORE_INDEX elsewhere."""
        encoded = self.bert(input_ids, token_type_ids, attention_mask, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else token_cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits, encoded.hidden_states, encoded.attentions)


# -- reading ----------------------------------------------------------------------------------


@dataclass
class WordExample:
    words: list[str]
    tags: list[str] | None
    line: int
    """1-based line of the sentence's first word."""
    source: Path | None = None
    text: str | None = None
    """The original text, when the words were cut from one (prediction input)."""
    spans: np.ndarray | None = None
    """(W, 2) character [start, end) of each word in `text`."""


def read_conll(path: str | Path, settings: NerSettings, labeled: bool = True) -> list[WordExample]:
    """Sentences of a CoNLL file (see the module docstring). `labeled=False` keeps words only."""
    path = Path(path)
    if settings.format not in ("auto", "conll"):
        raise BertforgeError(f"unknown NER format {settings.format!r}; use auto or conll")
    examples: list[WordExample] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if words:
                examples.append(WordExample(words, tags if labeled else None, first_line, path))
                words, tags = [], []
            continue
        fields = line.split("\t") if "\t" in line else [field for field in line.split(" ") if field]
        if fields[0] == DOCSTART:
            continue
        needed = max(settings.token_column, settings.tag_column if settings.tag_column >= 0 else 0) + 1
        if labeled and (len(fields) < 2 or len(fields) < needed):
            raise BertforgeError(f"expected a word and a tag, found {len(fields)} field(s): {line!r}",
                                 path=path, line=number)
        if not words:
            first_line = number
        words.append(fields[settings.token_column])
        if labeled:
            tag = fields[settings.tag_column].strip()
            if not _valid_tag(tag):
                raise BertforgeError(f"malformed tag {tag!r}; expected O or B-/I-/E-/S- followed by a type",
                                     path=path, line=number)
            tags.append(tag)
    if words:
        examples.append(WordExample(words, tags if labeled else None, first_line, path))
    if not examples:
        raise BertforgeError("no sentences in the file", path=path)
    return examples


_TAG = re.compile(r"^(O|[BIESU]-.+|[BIESL]-.+)$")


def _valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def split_words(text: str, mode: str) -> tuple[list[str], np.ndarray]:
    """Cut raw text into words with their character spans: runs of non-space characters
    (`whitespace`), or every non-space character (`char`, as MSRA labels Chinese);
    `auto` picks char for text with CJK characters."""
    if mode == "auto":
        mode = "char" if has_cjk(text) else "whitespace"
    pattern = r"\S" if mode == "char" else r"\S+"
    matches = list(re.finditer(pattern, text))
    spans = np.array([match.span() for match in matches], dtype=np.int64).reshape(-1, 2)
    return [match.group() for match in matches], spans


# -- tag schemes and chunks -------------------------------------------------------------------


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; ("O", "") from "O". A bare type (IO tags) reads as I-type."""
    if tag == "O" or not tag:
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash:
        return "I", tag
    if prefix == "U":
        prefix = "S"
    elif prefix == "L":
        prefix = "E"
    return prefix, kind


def _ends(previous: str, current: str, previous_type: str, current_type: str) -> bool:
    if previous in ("E", "S"):
        return True
    if previous in ("B", "I") and current in ("B", "S", "O"):
        return True
    return previous != "O" and previous_type != current_type


def _starts(previous: str, current: str, previous_type: str, current_type: str) -> bool:
    if current in ("B", "S"):
        return True
    if previous in ("E", "S", "O") and current in ("E", "I"):
        return True
    return current != "O" and previous_type != current_type


def chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of one sentence as (type, first word, last word + 1), by conlleval's rules."""
    result: list[tuple[str, int, int]] = []
    previous, previous_type, begin = "O", "", -1
    for index, tag in enumerate(list(tags) + ["O"]):
        current, current_type = split_tag(tag)
        if begin >= 0 and _ends(previous, current, previous_type, current_type):
            result.append((previous_type, begin, index))
            begin = -1
        if _starts(previous, current, previous_type, current_type):
            begin = index
        previous, previous_type = current, current_type
    return result


def convert_scheme(tags: Sequence[str], scheme: str) -> list[str]:
    """Rewrite one sentence's tags as BIO or BIOES (the same entities, by `chunks`)."""
    if scheme == "keep":
        return list(tags)
    result = ["O"] * len(tags)
    for kind, begin, end in chunks(tags):
        if scheme == "bioes" and end - begin == 1:
            result[begin] = f"S-{kind}"
            continue
        result[begin] = f"B-{kind}"
        for index in range(begin + 1, end):
            result[index] = f"I-{kind}"
        if scheme == "bioes":
            result[end - 1] = f"E-{kind}"
    return result


def entity_scores(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> dict[str, Any]:
    """conlleval's scores over sentences: overall and per-type precision, recall, F1 (fractions,
    not percent), token accuracy, and the entity counts."""
    gold_count: dict[str, int] = {}
    predicted_count: dict[str, int] = {}
    correct_count: dict[str, int] = {}
    tokens = correct_tokens = 0
    for gold_tags, predicted_tags in zip(gold, predicted):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"a sentence has {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_chunks = set(chunks(gold_tags))
        predicted_chunks = set(chunks(predicted_tags))
        for kind, _, _ in gold_chunks:
            gold_count[kind] = gold_count.get(kind, 0) + 1
        for kind, _, _ in predicted_chunks:
            predicted_count[kind] = predicted_count.get(kind, 0) + 1
        for kind, _, _ in gold_chunks & predicted_chunks:
            correct_count[kind] = correct_count.get(kind, 0) + 1
        tokens += len(gold_tags)
        correct_tokens += sum(g == p for g, p in zip(gold_tags, predicted_tags))
    per_type = {}
    for kind in sorted(set(gold_count) | set(predicted_count)):
        per_type[kind] = _prf(correct_count.get(kind, 0), predicted_count.get(kind, 0), gold_count.get(kind, 0))
    overall = _prf(sum(correct_count.values()), sum(predicted_count.values()), sum(gold_count.values()))
    return {**overall, "accuracy": correct_tokens / tokens if tokens else 0.0, "per_type": per_type}


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": predicted, "gold": gold,
            "correct": correct}


# -- the task ---------------------------------------------------------------------------------


@register
class NerTask(Task):
    name = "ner"
    help = "named-entity recognition (token classification of CoNLL files)"
    settings_class = NerSettings
    model_class = BertForTokenClassification
    primary_metric = "f1"
    onnx_outputs = ("logits",)
    serve_title = "token classifier (NER)"

    def read(self, path: str | Path, settings: NerSettings) -> list[WordExample]:
        examples = read_conll(path, settings, labeled=True)
        if settings.tag_scheme != "keep":
            for example in examples:
                example.tags = convert_scheme(example.tags or [], settings.tag_scheme)
        return examples

    def label_names(self, examples: list[WordExample], settings: NerSettings) -> list[str]:
        tags = {tag for example in examples for tag in example.tags or []}
        # O first, then by entity type and position (B, I, E, S): a stable, readable order.
        order = {"B": 0, "I": 1, "E": 2, "S": 3}
        return sorted(tags, key=lambda tag: (tag != "O", split_tag(tag)[1], order.get(split_tag(tag)[0], 4), tag))

    def configure(self, config: BertConfig, labels: list[str] | None, settings: NerSettings) -> BertConfig:
        if not labels or len(labels) < 2:
            raise BertforgeError("the training data needs at least two different tags")
        return config.replace(id2label=dict(enumerate(labels)), problem_type="single_label_classification")

    def primary(self, config: BertConfig) -> str:
        return "f1"

    def check_labels(self, examples: list[WordExample], config: BertConfig, path: str | Path) -> None:
        known = config.label2id
        unseen = [(example, tag) for example in examples for tag in example.tags or [] if tag not in known]
        if unseen:
            names = sorted({tag for _, tag in unseen})
            warn(f"{path}:{unseen[0][0].line}: {len(unseen)} word(s) carry tag(s) the model was not trained on "
                 f"({', '.join(map(repr, names[:5]))}); they are learned as nothing and count as misses")

    def _windows(self, examples: list[WordExample], tokenizer: Any, settings: NerSettings):
        # Windows must advance: the overlap stays under half of a window's content.
        stride = min(settings.stride, (settings.max_length - 2) // 2 - 1)
        return encode_windows(tokenizer, [example.words for example in examples], max_length=settings.max_length,
                              stride=max(stride, 0), pretokenized=True, overflow=True)

    def featurize(self, examples: list[WordExample], tokenizer: Any, config: BertConfig, settings: NerSettings,
                  training: bool) -> Features:
        windows = self._windows(examples, tokenizer, settings)
        return self._pack(examples, windows, config)

    def _pack(self, examples: list[WordExample], windows: list, config: BertConfig) -> Features:
        known = config.label2id
        labels: list[np.ndarray] | None = None
        if all(example.tags is not None for example in examples):
            tag_ids = [np.array([known.get(tag, IGNORE_INDEX) for tag in example.tags or []], dtype=np.int64)
                       for example in examples]
            labels = []
            for window in windows:
                first = first_subtokens(window.word_ids, window.offsets)
                labels.append(np.where(first, tag_ids[window.sample][np.maximum(window.word_ids, 0)], IGNORE_INDEX))
        return Features.pack([w.ids for w in windows], [w.type_ids for w in windows], [w.sample for w in windows],
                             token_labels=labels)

    def _word_predictions(self, model: BertForTokenClassification, tokenizer: Any, examples: list[WordExample],
                          settings: NerSettings, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per example: the predicted tag id of each word and its probability."""
        windows = self._windows(examples, tokenizer, settings)
        features = self._pack([WordExample(e.words, None, e.line) for e in examples], windows, model.config)
        logits = run_model(model, features, tokenizer.pad_token_id, batch_size,
                           lambda output, batch: {"logits": output.logits}).get("logits", [])
        outside = model.config.label2id.get("O", 0)
        results = []
        best_tag = [np.full(len(e.words), outside, dtype=np.int64) for e in examples]
        best_probability = [np.zeros(len(e.words)) for e in examples]
        best_centrality = [np.full(len(e.words), -1, dtype=np.int64) for e in examples]
        for window, window_logits in zip(windows, logits):
            first = first_subtokens(window.word_ids, window.offsets)
            positions = np.flatnonzero(first)
            if not len(positions):
                continue
            content = np.flatnonzero(window.word_ids >= 0)
            centrality = np.minimum(positions - content[0], content[-1] - positions)
            words = window.word_ids[positions]
            probabilities = softmax(window_logits[positions].astype(np.float64))
            better = centrality > best_centrality[window.sample][words]
            words, rows = words[better], np.flatnonzero(better)
            best_centrality[window.sample][words] = centrality[better]
            best_tag[window.sample][words] = probabilities[rows].argmax(axis=-1)
            best_probability[window.sample][words] = probabilities[rows].max(axis=-1)
        for tags, probability in zip(best_tag, best_probability):
            results.append((tags, probability))
        return results

    def evaluate(self, model: BertForTokenClassification, tokenizer: Any, examples: list[WordExample],
                 settings: NerSettings, batch_size: int = 64, features: Features | None = None) -> Evaluation:
        names = model.config.id2label or {}
        word_predictions = self._word_predictions(model, tokenizer, examples, settings, batch_size)
        predicted_tags = [[names[int(tag)] for tag in tags] for tags, _ in word_predictions]
        scores = entity_scores([example.tags or [] for example in examples], predicted_tags)
        per_type = scores.pop("per_type")
        metrics = {name: float(value) for name, value in scores.items()}
        for kind, values in per_type.items():
            metrics[f"{kind}_f1"] = values["f1"]
        metrics["examples"] = float(len(examples))
        predictions = [self._record(example, tags, probabilities, names)
                       for example, (tags, probabilities) in zip(examples, word_predictions)]
        return Evaluation(metrics, predictions)

    def _record(self, example: WordExample, tag_ids: np.ndarray, probabilities: np.ndarray,
                names: dict[int, str]) -> dict[str, Any]:
        tags = [names[int(tag)] for tag in tag_ids]
        record: dict[str, Any] = {}
        if example.text is not None:
            record["text"] = example.text
        else:
            record["words"] = example.words
        record["tags"] = tags
        if example.tags is not None:
            record["gold"] = example.tags
        entities = []
        for kind, begin, end in chunks(tags):
            entity: dict[str, Any] = {"type": kind, "word_start": begin, "word_end": end,
                                      "score": float(probabilities[begin:end].mean())}
            if example.text is not None and example.spans is not None:
                start, stop = int(example.spans[begin, 0]), int(example.spans[end - 1, 1])
                entity.update(text=example.text[start:stop], start=start, end=stop)
            else:
                entity["text"] = " ".join(example.words[begin:end])
            entities.append(entity)
        record["entities"] = entities
        return record

    def read_inputs(self, path: str | Path, settings: NerSettings) -> list[WordExample]:
        """A CoNLL file when its lines look like `word ... TAG`, else one raw text per line."""
        lines = read_lines(path)
        sample = [line for line in lines if line.strip()][:50]
        if sample and all(_looks_like_conll(line) for line in sample):
            return read_conll(path, settings, labeled=False)
        texts = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
        examples = self.inputs_from_texts([text for _, text in texts], settings)
        for example, (number, _) in zip(examples, texts):
            example.line, example.source = number, Path(path)
        return examples

    def inputs_from_texts(self, texts: list[str], settings: NerSettings, *, context: str | None = None,
                          text_pair: str | None = None) -> list[WordExample]:
        examples = []
        for index, text in enumerate(texts, start=1):
            words, spans = split_words(text, settings.word_split)
            examples.append(WordExample(words, None, index, None, text, spans))
        return examples

    def predict(self, model: BertForTokenClassification, tokenizer: Any, inputs: list[WordExample],
                settings: NerSettings, batch_size: int = 64) -> list[dict[str, Any]]:
        names = model.config.id2label or {}
        nonempty = [example for example in inputs if example.words]
        predictions = iter(self._word_predictions(model, tokenizer, nonempty, settings, batch_size) if nonempty else [])
        records = []
        for example in inputs:
            if not example.words:
                records.append({"text": example.text or "", "tags": [], "entities": []})
                continue
            tags, probabilities = next(predictions)
            records.append(self._record(WordExample(example.words, None, example.line, example.source,
                                                    example.text, example.spans), tags, probabilities, names))
        return records

    def serve_api(self) -> ServeApi:
        return _serve_api()

    def serve_inputs(self, body: Any, settings: NerSettings) -> ServeCall:
        # Words are split as `bertforge predict` splits them (settings.word_split).
        return ServeCall(self.inputs_from_texts(list(body.texts), settings), (), [body.texts])


@functools.cache
def _serve_api() -> ServeApi:
    """The request and prediction bodies of /v1/ner (pydantic, imported only when serving)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    class NerRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[StrictStr] = Field(min_length=1, description="texts to tag; words are split as at fine-tuning")

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

    return ServeApi(NerRequest, NerPrediction, "named entities in texts, with character offsets")


def _looks_like_conll(line: str) -> bool:
    fields = line.split("\t") if "\t" in line else line.split()
    return fields[0] == DOCSTART or (2 <= len(fields) <= 6 and _valid_tag(fields[-1].strip()))


def first_subtokens(word_ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(T,) bool: the tokens that start a word: a word id unlike the previous token's, at the
    word's character 0 (offsets of pre-split words count from each word's start), so that a
    window beginning in the middle of a word does not label that word's continuation."""
    previous = np.concatenate([[-1], word_ids[:-1]])
    return (word_ids >= 0) & (word_ids != previous) & (offsets[:, 0] == 0)
