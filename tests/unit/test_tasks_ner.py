"""ner: conlleval chunk semantics (edge cases by hand), entity scores, scheme conversion, the CoNLL
reader and its errors, first-sub-token labels, and predictions whose spans index the original text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertforge.config import IGNORE_INDEX
from bertforge.errors import BertforgeError
from bertforge.tasks.ner import (BertForTokenClassification, NerSettings, NerTask, WordExample, chunks, convert_scheme, entity_scores,
                                 first_subtokens, read_conll, split_words)
from test_tasks_common import tiny_config, write_vocab

SETTINGS = NerSettings()


def test_chunks_follow_conlleval():
    assert chunks(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # An I- without a B- starts an entity.
    assert chunks(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 3)]
    assert chunks(["I-ORG"]) == [("ORG", 0, 1)]
    # Adjacent entities of the same type stay two entities.
    assert chunks(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    # A type change inside I- tags splits the entity.
    assert chunks(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]
    # BIOES: S- is a one-word entity; E- closes; an E- after O starts one.
    assert chunks(["S-LOC", "B-ORG", "I-ORG", "E-ORG", "O", "E-PER"]) == [("LOC", 0, 1), ("ORG", 1, 4), ("PER", 5, 6)]
    assert chunks(["B-PER", "E-PER", "I-PER"]) == [("PER", 0, 2), ("PER", 2, 3)]


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    scores = entity_scores(gold, predicted)
    # gold: PER(0,2) LOC(3,4) ORG(0,1); predicted: PER(0,2) ORG(3,4) ORG(0,1) -> 2 correct of 3 and 3.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["per_type"]["LOC"]["recall"] == 0.0
    assert scores["per_type"]["ORG"]["precision"] == pytest.approx(0.5)
    assert scores["accuracy"] == pytest.approx(4 / 6)  # B-LOC/B-ORG and B-ORG/I-ORG differ
    # Sentences are scored separately: an entity never runs across a sentence boundary.
    across = entity_scores([["O", "B-PER"], ["I-PER"]], [["O", "B-PER"], ["I-PER"]])
    assert across["gold"] == 2 and across["f1"] == 1.0


def test_scheme_conversion_round_trips():
    bio = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]
    bioes = convert_scheme(bio, "bioes")
    assert bioes == ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "S-ORG"]
    assert convert_scheme(bioes, "bio") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    assert chunks(bioes) == chunks(bio)


def test_reader_conll2003_and_msra(tmp_path):
    conll = tmp_path / "train.txt"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                     "Peter NNP B-NP B-PER\n", encoding="utf-8")
    examples = read_conll(conll, SETTINGS)
    assert [(e.words, e.tags, e.line) for e in examples] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3), (["Peter"], ["B-PER"], 6)]
    msra = tmp_path / "msra.txt"
    msra.write_text("中\tB-LOC\n国\tI-LOC\n\u3000\tO\n人\tO\n\n", encoding="utf-8")
    examples = read_conll(msra, SETTINGS)
    assert examples[0].words == ["中", "国", "\u3000", "人"]


def test_reader_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nrejects\n", encoding="utf-8")
    with pytest.raises(BertforgeError, match=r"bad.txt:2: expected a word and a tag"):
        read_conll(bad, SETTINGS)
    tag = tmp_path / "tag.txt"
    tag.write_text("EU X-ORG\n", encoding="utf-8")
    with pytest.raises(BertforgeError, match=r"tag.txt:1: malformed tag 'X-ORG'"):
        read_conll(tag, SETTINGS)
    only_docstart = tmp_path / "d.txt"
    only_docstart.write_text("-DOCSTART- -X- -X- O\n\n", encoding="utf-8")
    with pytest.raises(BertforgeError, match="no sentences"):
        read_conll(only_docstart, SETTINGS)


def test_first_subtokens_skip_a_window_that_starts_mid_word():
    word_ids = np.array([-1, 3, 3, 4, 4, -1])
    offsets = np.array([[0, 0], [7, 10], [10, 14], [0, 2], [2, 4], [0, 0]])
    assert first_subtokens(word_ids, offsets).tolist() == [False, False, False, True, False, False]


def test_split_words_keeps_character_spans():
    words, spans = split_words("John  lives in New York.", "auto")
    assert words == ["John", "lives", "in", "New", "York."]
    assert [("John  lives in New York."[s:e]) for s, e in spans] == words
    words, spans = split_words("住在 北京", "auto")
    assert words == ["住", "在", "北", "京"] and spans[2].tolist() == [3, 4]


@pytest.fixture()
def tokenizer(tmp_path):
    from bertforge.tokenizer import BertTokenizer

    return BertTokenizer(write_vocab(tmp_path), lowercase=True)


def test_first_subtoken_labels_windows_and_predicted_spans(tmp_path, tokenizer):
    task = NerTask()
    path = tmp_path / "train.txt"
    path.write_text("John B-PER\nSmith I-PER\nruns O\nin O\nParis B-LOC\n\n", encoding="utf-8")
    examples = task.read(path, SETTINGS)
    config = task.configure(tiny_config(tokenizer.vocab_size), task.label_names(examples, SETTINGS), SETTINGS)
    assert config.id2label == {0: "O", 1: "B-LOC", 2: "B-PER", 3: "I-PER"}
    features = task.featurize(examples, tokenizer, config, SETTINGS, training=True)
    tokens = tokenizer.convert_ids_to_tokens(features.tokens(0).tolist())
    assert tokens == ["[CLS]", "john", "smith", "run", "##s", "in", "paris", "[SEP]"]
    assert features.labels_of(0).tolist() == [IGNORE_INDEX, 2, 3, 0, IGNORE_INDEX, 0, 1, IGNORE_INDEX]

    # Windows of 8 tokens with stride 2: every word still gets exactly one prediction.
    small = NerSettings(max_length=8, stride=2)
    longer = [WordExample(examples[0].words * 2, (examples[0].tags or []) * 2, 1)]
    windowed = task.featurize(longer, tokenizer, config, small, training=True)
    assert len(windowed) > 1 and windowed.lengths.max() <= 8
    # Every word's first sub-token carries its tag in at least one window.
    labelled = sum(int((windowed.labels_of(i) != IGNORE_INDEX).sum()) for i in range(len(windowed)))
    assert labelled >= 10
    model = BertForTokenClassification(config)
    evaluation = task.evaluate(model, tokenizer, longer, small)
    assert len(evaluation.predictions[0]["tags"]) == 10

    text = "Peter went to  New York ."
    records = task.predict(model, tokenizer, task.inputs_from_texts([text], SETTINGS), SETTINGS)
    assert len(records[0]["tags"]) == 6
    for entity in records[0]["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]


def test_unseen_dev_tag_warns(tmp_path, tokenizer):
    task = NerTask()
    config = task.configure(tiny_config(tokenizer.vocab_size), ["O", "B-PER", "I-PER"], SETTINGS)
    path = tmp_path / "dev.txt"
    path.write_text("x O\n\nParis B-LOC\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"dev.txt:3: 1 word\(s\) carry tag\(s\).*'B-LOC'"):
        task.check_labels(task.read(path, SETTINGS), config, path)
    model = BertForTokenClassification(config)
    labels = torch.full((1, 4), IGNORE_INDEX)
    assert model(torch.tensor([[1, 2, 3, 4]]), labels=labels).loss.item() == 0.0
