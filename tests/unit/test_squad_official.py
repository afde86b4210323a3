"""SQuAD scoring against the official evaluate scripts, written out here as the reference.

v1.1 keeps every gold answer, also one that normalizes to empty ("." is a gold answer of three
dev-v1.1 questions), so a prediction "." matches it exactly; its F1 of two empty token lists is 0.
v2.0 drops such gold answers (a question left without any is unanswerable, gold ""), and scores
two empty answers 1 in F1 as in EM."""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import pytest

from bertforge.tasks.qa import squad_f1, squad_scores


# -- the official scripts (evaluate-v1.1.py and evaluate-v2.0.py), as they compute -----------

def official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def v11_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize(prediction).split()
    ground_truth_tokens = official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def v11_exact_match_score(prediction, ground_truth):
    return official_normalize(prediction) == official_normalize(ground_truth)


def v11_evaluate(gold_answers, predictions):
    exact_match = f1 = 0
    for ground_truths, prediction in zip(gold_answers, predictions):
        exact_match += max(v11_exact_match_score(prediction, truth) for truth in ground_truths)
        f1 += max(v11_f1_score(prediction, truth) for truth in ground_truths)
    return {"exact": 100.0 * exact_match / len(predictions), "f1": 100.0 * f1 / len(predictions)}


def v20_get_tokens(s):
    return official_normalize(s).split() if s else []


def v20_compute_f1(a_gold, a_pred):
    gold_toks, pred_toks = v20_get_tokens(a_gold), v20_get_tokens(a_pred)
    common = Counter(gold_toks) & Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def v20_evaluate(gold_answers, predictions):
    exact = f1 = 0
    for answers, prediction in zip(gold_answers, predictions):
        golds = [a for a in answers if official_normalize(a)] or [""]
        exact += max(int(official_normalize(a) == official_normalize(prediction)) for a in golds)
        f1 += max(v20_compute_f1(a, prediction) for a in golds)
    return {"exact": 100.0 * exact / len(predictions), "f1": 100.0 * f1 / len(predictions)}


# The three dev-v1.1 questions with "." among their gold answers.
DOT_QUESTIONS = [
    ["renewal of hostilities in the Arab–Israeli conflict", "renewal of hostilities", ".",
     "the Arab–Israeli conflict released the underlying economic pressure on oil prices"],
    ["interventionism", ".", "interventionism", "interventionism", "interventionism"],
    ["disappearance of a strong ally and counterweight to British expansion, leading to their ultimate "
     "dispossession", "disappearance of a strong ally and counterweight to British expansion",
     "elimination of French power", "."],
]


def test_a_dot_matches_the_dot_gold_answers_in_v11():
    scores = squad_scores(DOT_QUESTIONS, [".", ".", "."])
    assert scores["exact"] == 100.0 and scores["f1"] == 0.0  # EM 3 of 3; F1 of two empty answers is 0
    assert scores == {**v11_evaluate(DOT_QUESTIONS, [".", ".", "."]), "total": 3.0}
    # An answer that normalizes to nothing ("the", "!") matches "." too; a word does not.
    for predictions in (["the", "!", ". ."], ["interventionism", "interventionism", "oil"],
                        ["renewal of hostilities", "Interventionism.", "French power"]):
        assert squad_scores(DOT_QUESTIONS, predictions) == pytest.approx(
            {**v11_evaluate(DOT_QUESTIONS, predictions), "total": 3.0}, abs=1e-9), predictions
    assert squad_f1(".", ".") == 0.0 and squad_f1(".", ".", version_2=True) == 1.0


def test_v20_drops_gold_answers_that_normalize_to_empty():
    questions = DOT_QUESTIONS + [[], ["."]]
    for predictions in ([".", ".", ".", "", "."], ["interventionism"] * 5, ["", "", "", "x", "the"]):
        assert squad_scores(questions, predictions, version_2=True) == pytest.approx(
            {**v20_evaluate(questions, predictions), "total": 5.0}, abs=1e-9), predictions
    assert squad_scores(DOT_QUESTIONS, [".", ".", "."], version_2=True)["exact"] == 0.0


def test_v11_matches_the_official_script_over_dev(data_dir):
    """Every dev-v1.1 question, with predictions of every kind: a gold answer, part of one, ".",
    an article plus a gold answer, a wrong word."""
    path = data_dir / "squad/dev-v1.1.json"
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    golds = [[answer["text"] for answer in qa["answers"]] for article in json.loads(path.read_text())["data"]
             for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    kinds = [lambda g: g[0], lambda g: g[-1].split()[0], lambda g: ".", lambda g: "The " + g[0] + "!",
             lambda g: "zebra", lambda g: " ".join(g[0].split()[1:])]
    predictions = [kinds[index % len(kinds)](answers) for index, answers in enumerate(golds)]
    ours = squad_scores(golds, predictions)
    reference = v11_evaluate(golds, predictions)
    assert ours["exact"] == pytest.approx(reference["exact"], abs=1e-9)
    assert ours["f1"] == pytest.approx(reference["f1"], abs=1e-9)
    assert ours["total"] == len(golds) == 10570
