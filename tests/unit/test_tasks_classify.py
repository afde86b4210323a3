"""classify: readers for every supported format and their errors, metrics against hand-computed
values, the head's losses, and the saved directory loading in transformers with the same logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertforge.errors import BertforgeError
from bertforge.tasks.classify import (BertForSequenceClassification, ClassifySettings, ClassifyTask, accuracy, average_ranks, macro_f1,
                                      matthews_correlation, pearson, read_classification, spearman)
from test_tasks_common import tiny_config, write_vocab

SETTINGS = ClassifySettings()


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_glue_tsv_with_header(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nhide new secretions \t0\na good film \t1\n")
    examples = read_classification(path, SETTINGS)
    assert [(e.text, e.text_pair, e.label, e.line) for e in examples] == [
        ("hide new secretions", None, "0", 2), ("a good film", None, "1", 3)]


def test_mrpc_original_file_with_bom_crlf_and_quotes(tmp_path):
    path = write(tmp_path / "msr_paraphrase_train.txt",
                 "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                 '1\t702876\t702977\tHe said "the witness".\tReferring to "the witness", he said.\r\n'
                 "0\t2108705\t2108831\tYucaipa owned it.\tIt was sold.\r\n")
    examples = read_classification(path, SETTINGS)
    assert examples[0].text == 'He said "the witness".'
    assert examples[0].text_pair == 'Referring to "the witness", he said.'
    assert [e.label for e in examples] == ["1", "0"]


def test_rte_pairs_and_thucnews_headerless(tmp_path):
    rte = write(tmp_path / "rte.tsv", "sentence1\tsentence2\tlabel\tidx\nA man.\tA person.\t0\t0\n")
    assert read_classification(rte, SETTINGS)[0].text_pair == "A person."
    thuc = write(tmp_path / "dev.txt", "体验2D巅峰 倚天屠龙记\t8\n同步A股首秀\t2\n")
    examples = read_classification(thuc, SETTINGS)
    assert [(e.text, e.label) for e in examples] == [("体验2D巅峰 倚天屠龙记", "8"), ("同步A股首秀", "2")]


def test_csv_with_quoted_newline_and_configurable_columns(tmp_path):
    path = write(tmp_path / "reviews.csv", 'stars,body\n1,"很好,""推荐""\n第二行"\n0,差\n')
    settings = ClassifySettings(text_column="body", label_column="stars")
    examples = read_classification(path, settings)
    assert examples[0].text == '很好,"推荐"\n第二行' and examples[0].label == "1"
    assert examples[1].line == 4


def test_jsonl_with_configurable_keys(tmp_path):
    path = write(tmp_path / "data.jsonl", json.dumps({"review": "好", "y": 1}) + "\n\n"
                 + json.dumps({"review": "差", "y": 0}) + "\n")
    examples = read_classification(path, ClassifySettings(label_column="y"))
    assert [(e.text, e.label, e.line) for e in examples] == [("好", "1", 1), ("差", "0", 3)]


def test_wrong_column_names_the_file_line_and_columns(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(BertforgeError, match=r"train.tsv:1: no label column 'polarity'.*'sentence', 'label'"):
        read_classification(path, ClassifySettings(label_column="polarity"))


def test_malformed_rows_name_the_file_and_line(tmp_path):
    short = write(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\nno label here\n")
    with pytest.raises(BertforgeError, match=r"train.tsv:3: expected 2 fields, found 1"):
        read_classification(short, SETTINGS)
    bad_json = write(tmp_path / "x.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(BertforgeError, match=r"x.jsonl:2: not valid JSON"):
        read_classification(bad_json, SETTINGS)
    empty_label = write(tmp_path / "e.tsv", "sentence\tlabel\nfine\t\n")
    with pytest.raises(BertforgeError, match=r"e.tsv:2: empty label"):
        read_classification(empty_label, SETTINGS)


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(BertforgeError, match="empty"):
        read_classification(write(tmp_path / "a.tsv", ""), SETTINGS)
    with pytest.raises(BertforgeError, match="no examples"):
        read_classification(write(tmp_path / "b.tsv", "sentence\tlabel\n"), SETTINGS)


def test_metrics_against_hand_computed_values():
    gold = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    assert accuracy(gold, predicted) == pytest.approx(4 / 6)
    # per class F1: class0 P=1/2 R=1/2 -> .5; class1 P=2/3 R=2/3 -> 2/3; class2 -> 1.
    assert macro_f1(gold, predicted) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    # Binary MCC: TP=3 TN=4 FP=1 FN=2 -> (12-2)/sqrt(4*5*5*6)
    binary_gold = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    binary_predicted = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    assert matthews_correlation(binary_gold, binary_predicted) == pytest.approx(10 / np.sqrt(4 * 5 * 5 * 6))
    assert matthews_correlation(np.array([1, 1]), np.array([1, 1])) == 0.0
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1.0)
    assert average_ranks(np.array([10.0, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)


@pytest.fixture()
def tokenizer(tmp_path):
    from bertforge.tokenizer import BertTokenizer

    return BertTokenizer(write_vocab(tmp_path), lowercase=True)


def test_head_losses_and_an_all_ignored_batch(tokenizer):
    config = tiny_config(tokenizer.vocab_size, id2label={0: "neg", 1: "pos", 2: "mixed"})
    model = BertForSequenceClassification(config)
    ids = torch.tensor([[tokenizer.cls_token_id, 5, 6, tokenizer.sep_token_id]])
    output = model(ids, labels=torch.tensor([2]))
    assert output.logits.shape == (1, 3) and output.loss.item() > 0
    ignored = model(ids, labels=torch.tensor([-100]))
    assert ignored.loss.item() == 0.0 and ignored.loss.requires_grad
    regression = BertForSequenceClassification(tiny_config(tokenizer.vocab_size, id2label={0: "LABEL_0"},
                                                           problem_type="regression"))
    out = regression(ids, labels=torch.tensor([3.5]))
    assert out.logits.shape == (1, 1)
    assert out.loss.item() == pytest.approx((out.logits.item() - 3.5) ** 2, rel=1e-5)


def test_regression_is_detected_and_unseen_dev_labels_warn(tmp_path, tokenizer):
    task = ClassifyTask()
    train = read_classification(write(tmp_path / "sts.tsv", "sentence1\tsentence2\tlabel\na\tb\t3.800\nc\td\t1.0\n"),
                                SETTINGS)
    assert task.label_names(train, SETTINGS) is None
    config = task.configure(tiny_config(tokenizer.vocab_size), None, SETTINGS)
    assert config.problem_type == "regression" and config.num_labels == 1

    labelled = read_classification(write(tmp_path / "t.tsv", "sentence\tlabel\ngood\tpos\nbad\tneg\n"), SETTINGS)
    config = task.configure(tiny_config(tokenizer.vocab_size), task.label_names(labelled, SETTINGS), SETTINGS)
    assert config.id2label == {0: "neg", 1: "pos"}
    dev_path = write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\tpos\ndull\tmixed\n")
    dev = read_classification(dev_path, SETTINGS)
    with pytest.warns(UserWarning, match=r"dev.tsv:3: 1 example\(s\) carry label\(s\).*'mixed'"):
        task.check_labels(dev, config, dev_path)
    model = BertForSequenceClassification(config)
    evaluation = task.evaluate(model, tokenizer, dev, SETTINGS)
    assert evaluation.metrics["accuracy"] <= 0.5  # the unseen label is always an error
    record = evaluation.predictions[1]
    assert record["gold"] == "mixed" and set(record["probabilities"]) == {"neg", "pos"}
    assert sum(record["probabilities"].values()) == pytest.approx(1.0)


def test_saved_directory_loads_in_transformers_with_the_same_logits(tmp_path, tokenizer):
    transformers = pytest.importorskip("transformers")
    config = tiny_config(tokenizer.vocab_size, id2label={0: "neg", 1: "pos"},
                         problem_type="single_label_classification")
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "saved", tokenizer=tokenizer)
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert theirs.config.id2label == {0: "neg", 1: "pos"}
    batch = tokenizer(["the film is good", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours, reference = model(**batch).logits, theirs(**batch).logits
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
