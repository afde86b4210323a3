"""benchmarks.zh_corpus on a miniature copy of the shared data: the task-adaptive pretraining text
holds the training portions only (ChnSentiCorp's training part of the benchmark's own split,
MSRA train, CMRC trial, THUCNews dev, waimai), and never a text that some task scores, whether it
comes from a task file or from the corpora."""

from __future__ import annotations

import json

import pytest

import benchmarks.finetune as finetune
import benchmarks.zh_corpus as zh_corpus

SCORED_WIKI = "半透膜是一种对透过物质有选择性的薄膜。"


def texts(path):
    return [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    zh = root / "zh"
    for folder in ("chnsenticorp", "msra_ner", "cmrc2018", "thucnews", "waimai_10k"):
        (zh / folder).mkdir(parents=True)
    (root / "corpora/zh").mkdir(parents=True)
    reviews = [f"第{index}条评论，房间干净" for index in range(20)]
    reviews[19] = reviews[0]  # one review twice: it may fall in training and in test
    rows = "".join(f'{index % 2},"{review}\n续行"\n' for index, review in enumerate(reviews))
    (zh / "chnsenticorp/ChnSentiCorp_htl_all.csv").write_text("\ufefflabel,review\n" + rows, encoding="utf-8")
    (zh / "msra_ner/train.txt").write_text("我\tO\n爱\tO\n\n北\tB-LOC\n京\tI-LOC\n\n", encoding="utf-8")
    (zh / "msra_ner/test.txt").write_text("北\tB-LOC\n京\tI-LOC\n\n上\tB-LOC\n海\tI-LOC\n\n", encoding="utf-8")
    squad = lambda context: {"version": "v1.0", "data": [{"title": "t", "id": "1", "paragraphs": [
        {"id": "p", "context": context, "qas": [{"question": "问", "id": "q", "answers": [{"text": "膜", "answer_start": 2}]}]}]}]}
    (zh / "cmrc2018/cmrc2018_trial.json").write_text(json.dumps(squad("试验集的段落。"), ensure_ascii=False), encoding="utf-8")
    (zh / "cmrc2018/cmrc2018_dev.json").write_text(json.dumps(squad("开头。" + SCORED_WIKI + "结尾。"), ensure_ascii=False),
                                                   encoding="utf-8")
    (zh / "thucnews/dev.txt").write_text("训练标题一\t0\n两边都有的标题\t1\n", encoding="utf-8")
    (zh / "thucnews/test.txt").write_text("两边都有的标题\t1\n测试标题\t2\n", encoding="utf-8")
    (zh / "waimai_10k/waimai_10k.csv").write_text("label,review\n1,很快，好吃\n0,太慢了\n", encoding="utf-8")
    (root / "corpora/zh/commonvoice_wiki.zh-cn.txt").write_text(f"阿巴扎。\n{SCORED_WIKI}\n另一个维基句子在这里。\n",
                                                                 encoding="utf-8")
    (root / "corpora/zh/hongloumeng.txt").write_text("　　第一回　甄士隐梦幻识通灵。开头。\n\n　　第二回\n", encoding="utf-8")
    monkeypatch.setattr(finetune, "DATA", root)
    monkeypatch.setattr(zh_corpus, "DATA", root)
    return root


def test_training_portions_only_and_no_scored_text(data, tmp_path):
    out = tmp_path / "text"
    summary = zh_corpus.build(out, list(zh_corpus.SOURCES))
    split = finetune.chnsenticorp_split(0)
    scored_reviews = {review.replace("\n", " ") for part in ("dev", "test") for _, review in split[part]}
    expected = [review.replace("\n", " ") for _, review in split["train"]]
    expected = [review for review in expected if review not in scored_reviews]
    assert texts(out / "chnsenticorp.txt") == expected and len(expected) >= 14
    assert summary["chnsenticorp"]["left_out_as_scored"] == 16 - len(expected)

    assert texts(out / "msra.txt") == ["我爱"]  # 北京 is also a test sentence
    assert texts(out / "cmrc2018.txt") == ["试验集的段落。"]
    assert texts(out / "thucnews.txt") == ["训练标题一"] and summary["thucnews"]["left_out_as_scored"] == 1
    assert texts(out / "waimai.txt") == ["很快，好吃", "太慢了"]

    wiki = (out / "commonvoice_wiki.txt").read_text(encoding="utf-8").split("\n")
    assert wiki == ["阿巴扎。", "另一个维基句子在这里。", ""]  # the CMRC dev sentence is gone; a short line stays
    assert summary["commonvoice_wiki"]["sentences_left_out_as_scored"] == 1
    assert (out / "hongloumeng.txt").read_text(encoding="utf-8") == "　　第一回　甄士隐梦幻识通灵。开头。\n\n　　第二回\n"
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary


def test_the_cli_wants_a_new_directory_and_known_sources(data, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(SystemExit, match="already exists"):
        zh_corpus.main(["--out", str(tmp_path / "exists")])
    with pytest.raises(SystemExit, match="unknown source"):
        zh_corpus.main(["--out", str(tmp_path / "new"), "--sources", "chnsenticorp,imdb"])
    zh_corpus.main(["--out", str(tmp_path / "new"), "--sources", "thucnews"])
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["summary.json", "thucnews.txt"]
