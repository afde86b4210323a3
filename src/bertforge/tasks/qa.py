"""Extractive question answering: SQuAD v1.1 and v2.0, and CMRC2018 (Chinese, same JSON).

Reader: SQuAD-style JSON (`data[].paragraphs[].{context, qas[].{id, question, answers[], is_impossible}}`).
An `answer_start` that does not point at the answer text in the context (CMRC2018 dev has 200
of them) gives one warning for the file; for training the answer is moved to the occurrence of
its text nearest the given start, or dropped when the text is not in the context. Evaluation
uses the answer texts only, as the official scripts do.
Settings (`QaSettings`): format, max_length, doc_stride, max_query_length, n_best, max_answer_length,
version_2_with_negative, null_score_diff_threshold, qa_metric.

Features: `[CLS] question [SEP] context window [SEP]`; the question is cut to max_query_length
tokens; a long context is split into windows that overlap by `doc_stride` tokens (the overlap,
as transformers' run_qa passes it to the tokenizer; google-research/bert's doc_stride is the
step between window starts instead). A window that does not contain the whole answer is
trained to point at [CLS], as in the BERT paper.

Head: one linear layer H -> 2 over every token (start and end logits), no dropout, as
transformers' BertForQuestionAnswering. Loss: the mean of the start and end cross-entropies,
with positions outside the sequence ignored. Departure: padding positions are left out of the
softmax. transformers and google-research/bert include them (with logits computed from the
padded hidden states), so their loss depends on how much a row happens to be padded, which
with dynamic padding changes from batch to batch; an answer can never start at a pad.

Postprocessing: per window the n_best start and end logits in the context; spans with
end >= start and at most max_answer_length tokens, scored start + end; the best over all
windows wins; its text is cut from the original context through the tokens' character
offsets. For v2.0, the null score is the smallest [CLS] start + end over the windows, and the
answer is "" when null - best > null_score_diff_threshold.

Metrics: SQuAD EM and F1 exactly as the official v1.1/v2.0 script (lower-case, strip
punctuation and articles, collapse spaces; token-bag F1; max over the gold answers; for
unanswerable questions the gold answer is ""), in percent. CMRC2018: its official script's
character-level scores, in percent: EM after removing its list of punctuation, F1 from the
longest common substring of segmented strings (each Chinese character a segment). Departure:
the official script segments runs of non-Chinese text with nltk.word_tokenize; we split them
with a regular expression (numbers with inner separators, words, single symbols), which agrees
on the letters-and-digits spans that CMRC answers contain, without the nltk dependency.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertHeadModel, BertModel
from bertforge.tasks.features import Features
from bertforge.tasks.reading import has_cjk, read_lines, read_text, warn
from bertforge.tasks.registry import register
from bertforge.tasks.running import run_model, softmax
from bertforge.tasks.settings import TaskSettings
from bertforge.tasks.task import Evaluation, ServeApi, ServeCall, Task
from bertforge.tasks.windows import Encoded, encode_windows


@dataclass
class QaSettings(TaskSettings):
    """How QA reads its files (`format`: auto | squad), cuts long contexts and decodes answers."""

    doc_stride: int = 128
    """Tokens shared by consecutive windows of a long context."""
    max_query_length: int = 64
    """Questions are cut to this many tokens."""
    n_best: int = 20
    """Start and end candidates kept per window."""
    max_answer_length: int = 30
    """Longest answer, in tokens."""
    version_2_with_negative: bool | None = None
    """SQuAD v2.0 (unanswerable questions allowed); None: yes when the training file has any."""
    null_score_diff_threshold: float = 0.0
    """v2: answer "" when null score - best span score exceeds this."""
    qa_metric: Literal["auto", "squad", "cmrc2018"] = "auto"
    """`auto` is cmrc2018 (character-level) for Chinese contexts, squad otherwise."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.doc_stride <= 0:
            raise BertforgeError(f"settings.doc_stride must be positive, got {self.doc_stride}")
        if self.max_query_length <= 0 or self.n_best <= 0 or self.max_answer_length <= 0:
            raise BertforgeError("settings.max_query_length, settings.n_best and settings.max_answer_length must be positive")


# -- the head -------------------------------------------------------------------------------


@dataclass
class SpanOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor
    """(B, T)"""
    end_logits: torch.Tensor
    """(B, T)"""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BertForQuestionAnswering(BertHeadModel):
    """BERT (no pooler) + a linear layer giving each token a start and an end logit."""

    architecture = "BertForQuestionAnswering"
    hf_key_map = {"span_classifier": "qa_outputs"}
    """Head module paths, ours -> Hugging Face's (read by bertforge.convert)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.span_classifier = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> SpanOutput:
        """start_positions, end_positions (B,): token indices of the answer (0 = [CLS]: no answer here)."""
        encoded = self.bert(input_ids, token_type_ids, attention_mask, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        logits = self.span_classifier(encoded.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (self.span_cross_entropy(start_logits, start_positions, attention_mask)
                    + self.span_cross_entropy(end_logits, end_positions, attention_mask)) / 2
        return SpanOutput(loss, start_logits, end_logits, encoded.hidden_states, encoded.attentions)

    @staticmethod
    def span_cross_entropy(logits: torch.Tensor, positions: torch.Tensor,
                           attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy of (B, T) logits against (B,) token indices, padding left out of the
        softmax; positions past the sequence are ignored, as transformers does (index = T)."""
        length = logits.shape[1]
        scores = logits.float()  # (B, T)
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask == 0, torch.finfo(torch.float32).min)
        return F.cross_entropy(scores, positions.view(-1).clamp(0, length), ignore_index=length)


# -- reading ----------------------------------------------------------------------------------


@dataclass
class QaExample:
    id: str
    question: str
    context: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    """[{"text": str, "answer_start": int}], answer_start -1 when it could not be located."""
    is_impossible: bool = False
    title: str = ""


def read_squad(path: str | Path, settings: QaSettings, labeled: bool = True) -> list[QaExample]:
    """Questions of a SQuAD-style JSON file, in file order."""
    path = Path(path)
    if settings.format not in ("auto", "squad"):
        raise BertforgeError(f"unknown QA format {settings.format!r}; use auto or squad")
    text = read_text(path, "SQuAD-style JSON file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise BertforgeError(f"not valid JSON ({error.msg})", path=path, line=error.lineno) from None
    if isinstance(document, dict) and "data" in document:
        articles = document["data"]
    else:
        raise BertforgeError("expected a SQuAD-style object with a 'data' list", path=path)
    if not isinstance(articles, list):
        raise BertforgeError("'data' must be a list of articles", path=path)
    examples: list[QaExample] = []
    mismatched: list[str] = []
    moved = dropped = 0
    for article_index, article in enumerate(articles):
        where = f"data[{article_index}]"
        paragraphs = _get(article, "paragraphs", list, path, where)
        title = str(article.get("title", "")) if isinstance(article, dict) else ""
        for paragraph_index, paragraph in enumerate(paragraphs):
            where_paragraph = f"{where}.paragraphs[{paragraph_index}]"
            context = _get(paragraph, "context", str, path, where_paragraph)
            for question_index, qa in enumerate(_get(paragraph, "qas", list, path, where_paragraph)):
                where_question = f"{where_paragraph}.qas[{question_index}]"
                question = _get(qa, "question", str, path, where_question)
                identifier = str(qa.get("id", where_question))
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                raw_answers = qa.get("answers", []) if labeled else []
                if not isinstance(raw_answers, list):
                    raise BertforgeError(f"question {identifier}: 'answers' must be a list", path=path)
                for answer in raw_answers:
                    answer_text = _get(answer, "text", str, path, f"question {identifier}: answer")
                    start = answer.get("answer_start", -1)
                    if not isinstance(start, int) or isinstance(start, bool):
                        raise BertforgeError(f"question {identifier}: answer_start must be an integer, got {start!r}",
                                             path=path)
                    if context[start:start + len(answer_text)] != answer_text or start < 0:
                        mismatched.append(identifier)
                        start = _nearest(context, answer_text, start)
                        if start < 0:
                            dropped += 1
                        else:
                            moved += 1
                    answers.append({"text": answer_text, "answer_start": start})
                if labeled and not impossible and not answers:
                    raise BertforgeError(f"question {identifier} has no answers and is not marked is_impossible",
                                         path=path)
                examples.append(QaExample(identifier, question, context, answers, impossible, title))
    if not examples:
        raise BertforgeError("no questions in the file", path=path)
    if mismatched:
        warn(f"{path}: {len(mismatched)} answer(s) have an answer_start that does not match the context text "
             f"(first: question {mismatched[0]}); {moved} moved to the nearest occurrence of the answer text, "
             f"{dropped} not found in the context and not used for training")
    return examples


def _get(record: Any, key: str, kind: type, path: Path, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise BertforgeError(f"{where} has no {key!r}", path=path)
    value = record[key]
    if not isinstance(value, kind):
        raise BertforgeError(f"{where}.{key} must be a {kind.__name__}, got {type(value).__name__}", path=path)
    return value


def _nearest(context: str, text: str, start: int) -> int:
    """The start of the occurrence of `text` in `context` closest to `start`, or -1."""
    if not text:
        return -1
    positions = [match.start() for match in re.finditer(re.escape(text), context)]
    if not positions:
        return -1
    return min(positions, key=lambda position: abs(position - start))


# -- metrics ----------------------------------------------------------------------------------

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(character for character in text if character not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(gold: str, predicted: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(predicted))


def squad_f1(gold: str, predicted: str, *, version_2: bool = False) -> float:
    """Token-overlap F1. With an empty side, v2.0 scores 1 only when both are empty (an
    unanswerable question answered with ""); the v1.1 script scores 0 whenever no token is shared."""
    gold_tokens = normalize_answer(gold).split()
    predicted_tokens = normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(version_2 and gold_tokens == predicted_tokens)
    common = Counter(gold_tokens) & Counter(predicted_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(predicted_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(gold_answers: Sequence[Sequence[str]], predictions: Sequence[str], *,
                 version_2: bool = False) -> dict[str, float]:
    """EM and F1 in percent, as the official scripts compute them; a question without gold
    answers is unanswerable (gold ""). v1.1 keeps every gold answer, also one that normalizes to
    empty ("." in three dev-v1.1 questions: a prediction "." matches it exactly); v2.0 drops
    those, as its script does."""
    exact = f1 = 0.0
    for golds, predicted in zip(gold_answers, predictions):
        golds = [gold for gold in golds if normalize_answer(gold) or not version_2] or [""]
        exact += max(squad_exact(gold, predicted) for gold in golds)
        f1 += max(squad_f1(gold, predicted, version_2=version_2) for gold in golds)
    count = len(predictions)
    return {"exact": 100.0 * exact / count if count else 0.0, "f1": 100.0 * f1 / count if count else 0.0,
            "total": float(count)}


CMRC_PUNCTUATION = {"-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“",
                    "”", "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"}
"""The official script's list, compared one character at a time (so "……" never matches)."""
_CMRC_CHINESE = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+|\d+|_|[^\w\s]")


def cmrc_segments(text: str, remove_punctuation: bool = False) -> list[str]:
    """The official `mixed_segmentation`: each Chinese character (and listed punctuation) alone,
    runs of other text split into words."""
    text = str(text).lower().strip()
    segments: list[str] = []
    pending = ""
    for character in text:
        if remove_punctuation and character in CMRC_PUNCTUATION:
            continue
        if _CMRC_CHINESE.match(character) or character in CMRC_PUNCTUATION:
            if pending:
                segments.extend(_WORDS.findall(pending))
                pending = ""
            segments.append(character)
        else:
            pending += character
    if pending:
        segments.extend(_WORDS.findall(pending))
    return segments


def cmrc_strip(text: str) -> str:
    """The official `remove_punctuation`: lower case, trimmed, listed punctuation removed."""
    return "".join(character for character in str(text).lower().strip() if character not in CMRC_PUNCTUATION)


def longest_common_substring(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common contiguous run of two segment lists (dynamic programming
    over one row at a time)."""
    best = 0
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0] * (len(second) + 1)
        for index, other in enumerate(second):
            if item == other:
                current[index + 1] = previous[index] + 1
                best = max(best, current[index + 1])
        previous = current
    return best


def cmrc_f1(gold: str, predicted: str) -> float:
    gold_segments = cmrc_segments(gold, remove_punctuation=True)
    predicted_segments = cmrc_segments(predicted, remove_punctuation=True)
    common = longest_common_substring(gold_segments, predicted_segments)
    if common == 0:
        return 0.0
    precision = common / len(predicted_segments)
    recall = common / len(gold_segments)
    return 2 * precision * recall / (precision + recall)


def cmrc_scores(gold_answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    exact = f1 = 0.0
    for golds, predicted in zip(gold_answers, predictions):
        if not golds:
            continue
        f1 += max(cmrc_f1(gold, predicted) for gold in golds)
        exact += float(any(cmrc_strip(gold) == cmrc_strip(predicted) for gold in golds))
    count = len(predictions)
    return {"exact": 100.0 * exact / count if count else 0.0, "f1": 100.0 * f1 / count if count else 0.0,
            "total": float(count)}


# -- features and postprocessing --------------------------------------------------------------


@dataclass
class QaFeatures:
    features: Features
    windows: list[Encoded]


def answer_tokens(window: Encoded, char_start: int, char_end: int) -> tuple[int, int]:
    """The first and last token of the answer [char_start, char_end) in this window, or (0, 0)
    ([CLS]) when the window's context does not hold the whole answer."""
    context = np.flatnonzero(window.sequence_ids == 1)
    if not len(context):
        return 0, 0
    offsets = window.offsets
    if offsets[context[0], 0] > char_start or offsets[context[-1], 1] < char_end:
        return 0, 0
    starts_before = context[offsets[context, 0] <= char_start]
    ends_after = context[offsets[context, 1] >= char_end]
    return int(starts_before[-1]), int(ends_after[0])


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, window: Encoded, n_best: int,
               max_answer_length: int) -> list[tuple[float, int, int]]:
    """Up to n_best (score, start token, end token) of one window, best first."""
    context = window.sequence_ids == 1
    candidates_start = np.flatnonzero(context)
    if not len(candidates_start):
        return []
    starts = candidates_start[np.argsort(-start_logits[candidates_start], kind="stable")[:n_best]]
    ends = candidates_start[np.argsort(-end_logits[candidates_start], kind="stable")[:n_best]]
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]  # (n, n)
    length = ends[None, :] - starts[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_length)
    rows, columns = np.nonzero(valid)
    if not len(rows):
        return []
    chosen = np.argsort(-scores[rows, columns], kind="stable")[:n_best]
    return [(float(scores[rows[i], columns[i]]), int(starts[rows[i]]), int(ends[columns[i]])) for i in chosen]


@register
class QuestionAnsweringTask(Task):
    name = "qa"
    help = "extractive question answering (SQuAD v1.1/v2.0, CMRC2018)"
    settings_class = QaSettings
    model_class = BertForQuestionAnswering
    primary_metric = "f1"
    onnx_outputs = ("start_logits", "end_logits")
    needs_id2label = False
    serve_title = "question-answering model"

    def read(self, path: str | Path, settings: QaSettings) -> list[QaExample]:
        return read_squad(path, settings, labeled=True)

    def label_names(self, examples: list[QaExample], settings: QaSettings) -> None:
        return None

    def configure(self, config: BertConfig, labels: list[str] | None, settings: QaSettings) -> BertConfig:
        return config

    def primary(self, config: BertConfig) -> str:
        return "f1"

    def _windows(self, examples: list[QaExample], tokenizer: Any, settings: QaSettings) -> list[Encoded]:
        budget = settings.max_length - settings.max_query_length - 3
        if budget <= settings.doc_stride:
            raise BertforgeError(f"settings.doc_stride ({settings.doc_stride}) must be smaller than max_length - "
                                 f"max_query_length - 3 ({budget}) so that windows advance")
        questions = self._cut_questions([example.question for example in examples], tokenizer, settings)
        return encode_windows(tokenizer, questions, [example.context for example in examples],
                              max_length=settings.max_length, stride=settings.doc_stride, overflow=True,
                              strategy="only_second")

    @staticmethod
    def _cut_questions(questions: list[str], tokenizer: Any, settings: QaSettings) -> list[str]:
        """Questions stripped and cut after their max_query_length-th token (by character offset)."""
        questions = [question.strip() for question in questions]
        offsets = tokenizer(questions, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
        limit = settings.max_query_length
        return [question if len(spans) <= limit else question[:spans[limit - 1][1]]
                for question, spans in zip(questions, offsets)]

    def featurize(self, examples: list[QaExample], tokenizer: Any, config: BertConfig, settings: QaSettings,
                  training: bool) -> Features:
        return self._features(examples, tokenizer, settings, training).features

    def _features(self, examples: list[QaExample], tokenizer: Any, settings: QaSettings, training: bool) -> QaFeatures:
        if training:
            # Questions whose every answer could not be located teach nothing true.
            examples = [e for e in examples if e.is_impossible or any(a["answer_start"] >= 0 for a in e.answers)]
        windows = self._windows(examples, tokenizer, settings)
        columns: dict[str, Any] = {}
        if training:
            starts, ends = [], []
            for window in windows:
                example = examples[window.sample]
                located = [answer for answer in example.answers if answer["answer_start"] >= 0]
                if example.is_impossible or not located:
                    starts.append(0)
                    ends.append(0)
                    continue
                answer = located[0]
                start, end = answer_tokens(window, answer["answer_start"],
                                           answer["answer_start"] + len(answer["text"]))
                starts.append(start)
                ends.append(end)
            columns = {"start_positions": np.array(starts, dtype=np.int64),
                       "end_positions": np.array(ends, dtype=np.int64)}
        features = Features.pack([w.ids for w in windows], [w.type_ids for w in windows],
                                 [w.sample for w in windows], columns=columns)
        return QaFeatures(features, windows)

    def _answers(self, model: BertForQuestionAnswering, tokenizer: Any, examples: list[QaExample],
                 settings: QaSettings, batch_size: int, version_2: bool) -> list[dict[str, Any]]:
        prepared = self._features(examples, tokenizer, settings, training=False)
        outputs = run_model(model, prepared.features, tokenizer.pad_token_id, batch_size,
                            lambda output, batch: {"start": output.start_logits, "end": output.end_logits})
        candidates: list[list[tuple[float, int, int]]] = [[] for _ in examples]
        null_scores = [np.inf] * len(examples)
        for window, start_logits, end_logits in zip(prepared.windows, outputs.get("start", []), outputs.get("end", [])):
            null_scores[window.sample] = min(null_scores[window.sample], float(start_logits[0] + end_logits[0]))
            for score, start, end in best_spans(start_logits, end_logits, window, settings.n_best,
                                                settings.max_answer_length):
                candidates[window.sample].append((score, int(window.offsets[start, 0]), int(window.offsets[end, 1])))
        records = []
        for example, spans, null_score in zip(examples, candidates, null_scores):
            spans = sorted(set(spans), key=lambda span: -span[0])[:settings.n_best]
            entries = [{"text": example.context[start:end], "start": start, "end": end, "logit": score}
                       for score, start, end in spans]
            if version_2:
                entries.append({"text": "", "start": -1, "end": -1, "logit": null_score})
                entries.sort(key=lambda entry: -entry["logit"])
            if entries:
                probabilities = softmax(np.array([entry["logit"] for entry in entries], dtype=np.float64))
                for entry, probability in zip(entries, probabilities):
                    entry["score"] = float(probability)
            best = next((entry for entry in entries if entry["start"] >= 0), None)
            if best is None or (version_2 and null_score - best["logit"] > settings.null_score_diff_threshold):
                answer = {"answer": "", "start": -1, "end": -1,
                          "score": next((e["score"] for e in entries if e["start"] < 0), 0.0)}
            else:
                answer = {"answer": best["text"], "start": best["start"], "end": best["end"], "score": best["score"]}
            records.append({"id": example.id, "question": example.question, **answer,
                            "null_score": null_score if version_2 else None,
                            "n_best": [{key: entry[key] for key in ("text", "start", "end", "score")}
                                       for entry in entries[:5]]})
        return records

    @staticmethod
    def _version_2(examples: list[QaExample], settings: QaSettings) -> bool:
        if settings.version_2_with_negative is not None:
            return settings.version_2_with_negative
        return any(example.is_impossible for example in examples)

    def evaluate(self, model: BertForQuestionAnswering, tokenizer: Any, examples: list[QaExample],
                 settings: QaSettings, batch_size: int = 64, features: Features | None = None) -> Evaluation:
        version_2 = self._version_2(examples, settings)
        records = self._answers(model, tokenizer, examples, settings, batch_size, version_2)
        golds = [[answer["text"] for answer in example.answers] for example in examples]
        predicted = [record["answer"] for record in records]
        metric = settings.qa_metric
        if metric == "auto":
            metric = "cmrc2018" if any(has_cjk(example.context) for example in examples[:50]) else "squad"
        if metric == "cmrc2018":
            metrics = cmrc_scores(golds, predicted)
        else:
            metrics = squad_scores(golds, predicted, version_2=version_2)
        if version_2:
            answerable = [index for index, example in enumerate(examples) if not example.is_impossible]
            unanswerable = [index for index, example in enumerate(examples) if example.is_impossible]
            for name, subset in (("has_answer", answerable), ("no_answer", unanswerable)):
                if subset:
                    scores = squad_scores([golds[i] for i in subset], [predicted[i] for i in subset],
                                          version_2=True)
                    metrics[f"{name}_exact"], metrics[f"{name}_f1"] = scores["exact"], scores["f1"]
        for record, gold in zip(records, golds):
            record["gold"] = gold
        return Evaluation(metrics, records)

    def read_inputs(self, path: str | Path, settings: QaSettings) -> list[QaExample]:
        """A SQuAD-style JSON file, or JSON lines of {"question", "context"} (optional "id")."""
        path = Path(path)
        text = read_text(path)
        if text.lstrip().startswith("{") and '"data"' in text[:2000] and path.suffix != ".jsonl":
            return read_squad(path, settings, labeled=False)
        examples = []
        for number, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BertforgeError(f"not valid JSON ({error.msg})", path=path, line=number) from None
            if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                    or not isinstance(record.get("context"), str):
                raise BertforgeError('each line must be an object with "question" and "context" strings',
                                     path=path, line=number)
            examples.append(QaExample(str(record.get("id", number)), record["question"], record["context"]))
        return examples

    def inputs_from_texts(self, texts: list[str], settings: QaSettings, *, context: str | None = None,
                          text_pair: str | None = None) -> list[QaExample]:
        if context is None:
            raise BertforgeError("question answering needs a context: pass --context TEXT (or --input FILE)")
        return [QaExample(str(index), text, context) for index, text in enumerate(texts, start=1)]

    def predict(self, model: BertForQuestionAnswering, tokenizer: Any, inputs: list[QaExample],
                settings: QaSettings, batch_size: int = 64) -> list[dict[str, Any]]:
        version_2 = bool(settings.version_2_with_negative)
        records = self._answers(model, tokenizer, inputs, settings, batch_size, version_2)
        for record, example in zip(records, inputs):
            record["context"] = example.context
        return records

    def serve_api(self) -> ServeApi:
        return _serve_api()

    def serve_inputs(self, body: Any, settings: QaSettings) -> ServeCall:
        inputs = [QaExample(str(index), item.question, item.context) for index, item in enumerate(body.items, start=1)]
        return ServeCall(inputs, (), [[item.question for item in body.items], [item.context for item in body.items]])


@functools.cache
def _serve_api() -> ServeApi:
    """The request and prediction bodies of /v1/qa (pydantic, imported only when serving)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    class QaItem(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: StrictStr
        context: StrictStr

    class QaRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[QaItem] = Field(min_length=1, description="questions, each with the context it is asked about")

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

    return ServeApi(QaRequest, QaPrediction, "extract the answer to each question from its context")
