"""qa: the official SQuAD normalization and scores, CMRC2018's character-level scores, answer
token mapping through offsets, n-best span search limits, and the SQuAD reader's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertforge.errors import BertforgeError
from bertforge.tasks.windows import Encoded
from bertforge.tasks.qa import (BertForQuestionAnswering, QaSettings, QuestionAnsweringTask, answer_tokens, best_spans,
                                cmrc_f1, cmrc_scores, cmrc_segments, cmrc_strip, normalize_answer, read_squad,
                                squad_f1, squad_scores)
from test_tasks_common import tiny_config, write_vocab


def test_squad_normalization_removes_articles_punctuation_and_spaces():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theater") == "theater"  # "the" only as a word


def test_squad_scores_by_hand():
    # Several gold answers: the best one counts ("The Broncos" matches once the article goes).
    assert squad_scores([["Denver Broncos", "The Broncos"]], ["broncos"])["exact"] == 100.0
    # vs the first gold: 2 common of 3 predicted, 4 gold -> 4/7; vs the second: 2/3 and 1 -> 0.8.
    scores = squad_scores([["Denver Broncos of Colorado", "Denver Broncos"]], ["Denver Broncos team"])
    assert scores["exact"] == 0.0 and scores["f1"] == pytest.approx(80.0)
    scores = squad_scores([["Santa Clara, California"], ["1990"]], ["Clara California stadium", "1990."])
    # first: common {clara, california} = 2, P=2/3 R=2/3 -> 2/3; second: exact after punctuation.
    assert scores["exact"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100.0 * (2 / 3 + 1) / 2)
    assert squad_f1("x y y", "y y z") == pytest.approx(2 / 3)  # bags: 2 common of 3 and 3
    assert squad_f1("a b b", "b b c") == pytest.approx(0.8)  # "a" is an article: gold is "b b"
    # v2.0: unanswerable questions (no gold answers) score 1 only for an empty prediction.
    assert squad_scores([[]], [""])["exact"] == 100.0 and squad_scores([[]], ["x"])["f1"] == 0.0


def test_cmrc_character_level_scores():
    assert cmrc_segments("光荣和ω-force") == ["光", "荣", "和", "ω", "-", "force"]
    assert cmrc_segments("光荣和ω-force", remove_punctuation=True) == ["光", "荣", "和", "ωforce"]
    assert cmrc_segments("2015年12月") == ["2015", "年", "12", "月"]
    # LCS of 北京大学 / 北京的大学 is 北京 (contiguous): P = 2/5, R = 2/4.
    assert cmrc_f1("北京大学", "北京的大学") == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert cmrc_strip("《红楼梦》。") == "红楼梦"
    # EM ignores the listed punctuation only; F1 takes the best gold answer.
    scores = cmrc_scores([["《红楼梦》", "红楼"], ["北京"]], ["红楼梦", "上海"])
    assert scores["exact"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(50.0)


def window(offsets, sequence_ids):
    offsets = np.array(offsets)
    return Encoded(np.zeros(len(offsets), dtype=np.int32), np.zeros(len(offsets), dtype=np.int8), offsets,
                   np.zeros(len(offsets), dtype=np.int64), np.array(sequence_ids), 0)


def test_answer_tokens_through_offsets():
    # [CLS] q [SEP] "Paris"(0,5) "is"(6,8) "in"(9,11) "France"(12,18) [SEP]
    w = window([[0, 0], [0, 5], [0, 0], [0, 5], [6, 8], [9, 11], [12, 18], [0, 0]], [-1, 0, -1, 1, 1, 1, 1, -1])
    assert answer_tokens(w, 12, 18) == (6, 6)
    assert answer_tokens(w, 6, 11) == (4, 5)
    assert answer_tokens(w, 13, 17) == (6, 6)  # inside a token: the whole token
    assert answer_tokens(w, 12, 25) == (0, 0)  # not wholly in this window: [CLS]


def test_best_spans_respect_order_length_and_context():
    w = window([[0, 0], [0, 5], [0, 0], [0, 5], [6, 8], [9, 11], [12, 18], [0, 0]], [-1, 0, -1, 1, 1, 1, 1, -1])
    start = np.array([9.0, 9, 0, 1, 0, 0, 5, 0])
    end = np.array([9.0, 9, 0, 0, 0, 0, 0, 8])
    spans = best_spans(start, end, w, n_best=5, max_answer_length=2)
    assert all(w.sequence_ids[s] == 1 and w.sequence_ids[e] == 1 and s <= e <= s + 1 for _, s, e in spans)
    assert spans[0][1:] == (6, 6)  # (3, 6) scores more but is 4 tokens long
    assert best_spans(start, end, w, n_best=5, max_answer_length=4)[0][1:] == (6, 6)


def squad_file(tmp_path, start, text="France"):
    document = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": "Paris is in France. France is big.",
        "qas": [{"id": "q1", "question": "Where is Paris?", "answers": [{"text": text, "answer_start": start}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_mismatched_answer_start_warns_and_moves_to_the_nearest_occurrence(tmp_path):
    with pytest.warns(UserWarning, match="1 answer.*does not match.*question q1.*1 moved"):
        examples = read_squad(squad_file(tmp_path, 18), QaSettings())
    assert examples[0].answers[0]["answer_start"] == 20
    with pytest.warns(UserWarning, match="1 not found"):
        examples = read_squad(squad_file(tmp_path, 3, "Spain"), QaSettings())
    assert examples[0].answers[0]["answer_start"] == -1


def test_reader_structure_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}', encoding="utf-8")
    with pytest.raises(BertforgeError, match=r"bad.json: data\[0\].paragraphs\[0\] has no 'context'"):
        read_squad(path, QaSettings())
    path.write_text('{"data": [\n oops', encoding="utf-8")
    with pytest.raises(BertforgeError, match=r"bad.json:2: not valid JSON"):
        read_squad(path, QaSettings())


def test_long_context_windows_train_positions_and_predictions(tmp_path):
    from bertforge.tokenizer import BertTokenizer

    tokenizer = BertTokenizer(write_vocab(tmp_path), lowercase=True)
    context = "peter lives in paris . " * 6 + "john smith lives in new york . " + "the film is good . " * 6
    document = {"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": "where does john smith live ?",
         "answers": [{"text": "new york", "answer_start": context.index("new york")}]}]}]}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    settings = QaSettings(max_length=32, doc_stride=8, max_query_length=8, max_answer_length=4)
    task = QuestionAnsweringTask()
    examples = task.read(path, settings)
    prepared = task._features(examples, tokenizer, settings, training=True)
    assert len(prepared.features) > 2
    found = 0
    for w, start, end in zip(prepared.windows, prepared.features.columns["start_positions"],
                             prepared.features.columns["end_positions"]):
        if start:
            found += 1
            assert context[w.offsets[start, 0]:w.offsets[end, 1]] == "new york"
    assert found >= 1
    model = BertForQuestionAnswering(tiny_config(tokenizer.vocab_size))
    records = task.predict(model, tokenizer, task.inputs_from_texts(["who lives in paris ?"], settings, context=context),
                           settings)
    record = records[0]
    assert context[record["start"]:record["end"]] == record["answer"]
    assert len(record["answer"].split()) <= 4 and 0 < record["score"] <= 1


def test_span_loss_does_not_depend_on_padding():
    import torch

    model = BertForQuestionAnswering(tiny_config(64)).eval()
    ids = torch.randint(5, 64, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    mask = (padded != 0).long()
    positions = {"start_positions": torch.tensor([2]), "end_positions": torch.tensor([4])}
    with torch.no_grad():
        alone = model(ids, attention_mask=torch.ones_like(ids), **positions).loss
        with_padding = model(padded, attention_mask=mask, **positions).loss
    torch.testing.assert_close(alone, with_padding, atol=1e-5, rtol=1e-5)
