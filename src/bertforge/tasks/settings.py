"""`TaskSettings`: how a fine-tuning task reads its files, builds features and decodes
predictions. Kept apart from the task modules (no numpy or torch here) so that the CLI can
build its option parser without importing them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertforge.errors import BertforgeError


@dataclass
class TaskSettings:
    """How a task reads its files, builds features and decodes predictions.

    One dataclass for the three tasks so a recipe names them under one `data:` section; each
    task reads only the fields that concern it (listed in its module docstring).
    """

    format: str = "auto"
    """classify: auto | tsv | csv | jsonl | text_label (headerless `text<TAB>label`, THUCNews);
    ner: auto | conll; qa: auto | squad. `auto` decides by extension and first line."""
    text_column: str | None = None
    """classify: the column (name, or 0-based index for headerless files) holding the text;
    None picks the first of sentence, sentence1, text, review, content, #1 String, question1."""
    text_pair_column: str | None = None
    """classify: the second text of a pair; None picks sentence2, #2 String, question2, hypothesis
    when present. The string "none" forces single sentences."""
    label_column: str | None = None
    """classify: the label column; None picks label, Quality, class, gold_label, score."""
    problem_type: Literal["auto", "single_label_classification", "regression"] = "auto"
    """classify: `auto` means regression when every training label is a number with a decimal point."""
    max_length: int = 128
    """Tokens per feature, [CLS] and [SEP] included."""
    stride: int = 32
    """ner: tokens shared by consecutive windows of a sentence longer than max_length."""
    token_column: int = 0
    """ner: the column of the word in a CoNLL line."""
    tag_column: int = -1
    """ner: the column of the tag in a CoNLL line (-1: the last)."""
    tag_scheme: Literal["keep", "bio", "bioes"] = "keep"
    """ner: convert the file's tags to this scheme before training (`keep`: as written)."""
    word_split: Literal["auto", "whitespace", "char"] = "auto"
    """ner at prediction time: how raw text is cut into words; `auto` is `char` for text with
    CJK characters (as MSRA is labelled), else whitespace."""
    doc_stride: int = 128
    """qa: tokens shared by consecutive windows of a long context."""
    max_query_length: int = 64
    """qa: questions are cut to this many tokens."""
    n_best: int = 20
    """qa: start and end candidates kept per window."""
    max_answer_length: int = 30
    """qa: longest answer, in tokens."""
    version_2_with_negative: bool | None = None
    """qa: SQuAD v2.0 (unanswerable questions allowed); None: yes when the training file has any."""
    null_score_diff_threshold: float = 0.0
    """qa v2: answer "" when null score - best span score exceeds this."""
    qa_metric: Literal["auto", "squad", "cmrc2018"] = "auto"
    """qa: `auto` is cmrc2018 (character-level) for Chinese contexts, squad otherwise."""

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise BertforgeError(f"settings.max_length must be at least 8, got {self.max_length}")
        if self.stride < 0:
            raise BertforgeError(f"settings.stride must be >= 0, got {self.stride}")
        if self.doc_stride <= 0:
            raise BertforgeError(f"settings.doc_stride must be positive, got {self.doc_stride}")
        if self.max_query_length <= 0 or self.n_best <= 0 or self.max_answer_length <= 0:
            raise BertforgeError("settings.max_query_length, settings.n_best and settings.max_answer_length must be positive")
