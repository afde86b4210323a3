"""Tiny random model directories of every kind (shared by the serve and export unit tests), and
the detection of what a directory holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertforge.config import BertConfig

WORDS = ["the", "a", "film", "is", "good", "bad", "great", "dull", "and", "not", "very", "peter", "went", "to",
         "paris", "berlin", "john", "smith", "lives", "in", "new", "york", "where", "does", "live", "who", "what",
         "##s", "##ing", "##ed", "run", ".", ",", "?", "!", "'", "-", "of", "city", "capital", "france"]
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def make_model_dir(directory: Path, kind: str, seed: int = 0) -> Path:
    """A random tiny model of `kind` (classify, ner, qa, masked_lm, pretraining, encoder) with its vocab."""
    from bertforge.model import BertForMaskedLM, BertForPreTraining, BertModel
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tasks.ner import BertForTokenClassification
    from bertforge.tasks.qa import BertForQuestionAnswering
    from bertforge.tokenizer import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    tokenizer = BertTokenizer(directory / "vocab.txt", lowercase=True)
    changes: dict = {"max_position_embeddings": 64}
    if kind == "classify":
        changes.update(id2label={0: "negative", 1: "positive"}, problem_type="single_label_classification")
    elif kind == "ner":
        changes.update(id2label=dict(enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])))
    config = BertConfig.from_preset("tiny", vocab_size=len(TOKENS), **changes)
    if kind in ("classify", "ner", "qa"):
        config.extra = {"finetuning": {"task": kind, "settings": {"max_length": 32, "doc_stride": 8,
                                                                   "max_query_length": 8}}}
    classes = {"classify": BertForSequenceClassification, "ner": BertForTokenClassification,
               "qa": BertForQuestionAnswering, "masked_lm": BertForMaskedLM, "pretraining": BertForPreTraining,
               "encoder": BertModel}
    torch.manual_seed(seed)
    model = classes[kind](config)
    model.save_pretrained(directory, tokenizer=tokenizer)
    return directory


@pytest.mark.parametrize("kind, expected", [("classify", "classify"), ("ner", "ner"), ("qa", "qa"),
                                            ("pretraining", "masked_lm"), ("masked_lm", "masked_lm"),
                                            ("encoder", "encoder")])
def test_kind_of_a_directory(tmp_path, kind, expected):
    from bertforge.tasks.loading import kind_of, load_model, read_config

    directory = make_model_dir(tmp_path / kind, kind)
    assert kind_of(read_config(directory)) == expected
    loaded = load_model(directory)
    assert loaded.kind == expected and not loaded.model.training
    assert loaded.encoder.config.hidden_size == 128
    assert (loaded.task is not None) == (expected in ("classify", "ner", "qa"))
