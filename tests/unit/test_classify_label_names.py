"""classify's `settings.label_names`: class ids read as names (ChnSentiCorp's 0/1, THUCNews's 0-9),
the model's label map in the names' order, and the errors for a bad list or a label outside it."""

from __future__ import annotations

import json

import pytest

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.tasks import get_task
from bertforge.tasks.classify import ClassifySettings, read_classification

NAMES = ["negative", "positive"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_ids_become_names_and_names_stay(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "好", "label": 1}, {"text": "差", "label": "0"},
                                                   {"text": "一般", "label": "positive"}])
    examples = read_classification(path, ClassifySettings(label_names=NAMES))
    assert [example.label for example in examples] == ["positive", "negative", "positive"]


def test_headerless_thucnews_lines_get_their_class_names(tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text("体验2D巅峰 倚天屠龙记\t8\n同步A股首秀\t2\n锌价难续去年辉煌\t0\n", encoding="utf-8")
    names = ["finance", "realty", "stocks", "education", "science", "society", "politics", "sports", "game",
             "entertainment"]
    examples = read_classification(path, ClassifySettings(format="text_label", label_names=names))
    assert [example.label for example in examples] == ["game", "stocks", "finance"]


def test_a_label_outside_the_names_names_the_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "好", "label": 1}, {"text": "差", "label": 2}])
    with pytest.raises(BertforgeError, match=r"label '2' is neither a class id 0\.\.1 nor one of") as caught:
        read_classification(path, ClassifySettings(label_names=NAMES))
    assert caught.value.line == 2 and str(path) in str(caught.value)
    with pytest.raises(BertforgeError, match="label 'neutral'"):
        read_classification(write_jsonl(tmp_path / "b.jsonl", [{"text": "好", "label": "neutral"}]),
                            ClassifySettings(label_names=NAMES))


def test_texts_read_for_prediction_keep_an_unknown_label(tmp_path):
    path = write_jsonl(tmp_path / "inputs.jsonl", [{"text": "好", "label": 1}, {"text": "差", "label": "?"}])
    examples = read_classification(path, ClassifySettings(label_names=NAMES), labeled=False)
    assert [example.label for example in examples] == ["positive", "?"]


def test_the_model_gets_every_named_class_in_order(tmp_path):
    task = get_task("classify")
    settings = task.settings({"label_names": ["finance", "realty", "stocks"]})
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "楼市", "label": 1}, {"text": "股市", "label": 2}])
    examples = task.read(path, settings)
    labels = task.label_names(examples, settings)
    assert labels == ["finance", "realty", "stocks"]  # finance is never seen in training, and still a class
    config = task.configure(BertConfig.from_preset("tiny", vocab_size=100), labels, settings)
    assert config.id2label == {0: "finance", 1: "realty", 2: "stocks"}
    assert config.problem_type == "single_label_classification"


@pytest.mark.parametrize("names, message", [
    (["positive"], "two or more names"),
    (["negative", " "], "an empty name"),
    (["a", "b", "a"], "repeats 'a'"),
])
def test_a_bad_list_is_a_one_line_error(names, message):
    with pytest.raises(BertforgeError, match=message):
        ClassifySettings(label_names=names)


def test_names_do_not_go_with_regression():
    with pytest.raises(BertforgeError, match="cannot go with problem_type regression"):
        ClassifySettings(label_names=NAMES, problem_type="regression")


def test_recipe_keys_are_checked_and_coerced():
    task = get_task("classify")
    assert task.settings({"label_names": [0, 1]}).label_names == ["0", "1"]
    with pytest.raises(BertforgeError, match="two or more names"):
        task.settings({"label_names": "positive"})
