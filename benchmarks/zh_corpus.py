"""The unlabelled text of the Chinese tasks' training portions, as plain-text files for
task-adaptive pretraining (Gururangan et al. 2020) with configs/pretrain/zh-cpu-hour.yaml.

Only text the fine-tuning trains on goes in, never text that is scored:

- ChnSentiCorp: the reviews of the 80% training part of benchmarks.finetune's 80/10/10 split
  (`chnsenticorp_split`, data seed 0), not the dev or test reviews;
- MSRA NER: the sentences of train.txt (its characters joined), not test.txt;
- CMRC 2018: the contexts of the trial set (the training file here), not dev;
- THUCNews: the titles of dev.txt (the training file here, as the shared data has no train.txt),
  not test.txt;
- waimai_10k: every review (no task scores it).

A text that is also one of the scored texts (the same string after trimming: a review in both
ChnSentiCorp parts, a sentence in both MSRA files, a title in both THUCNews files, a paragraph in
both CMRC files) is left out, and counted. Each file holds one text a paragraph, a blank line
between texts, which `bertforge pretrain` reads as one document each (the `paragraphs` layout);
line breaks inside a text become spaces.

The Chinese corpora (../shared/data/corpora/zh) are copied too, less every sentence that occurs
verbatim inside a scored text (sentences of 8 characters or more): the Common Voice sentences
come from Chinese Wikipedia, as the CMRC 2018 paragraphs do, and 51 of them sit word for word in
CMRC 2018 dev contexts; none of 红楼梦's does. The lines are kept as they are otherwise (one
sentence a line; 红楼梦's paragraphs).

    python -m benchmarks.zh_corpus --out runs/zh-text        # writes DIR/*.txt and DIR/summary.json
    python -m benchmarks.zh_corpus --out DIR --sources chnsenticorp,msra
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from benchmarks.finetune import DATA, chnsenticorp_split

TASKS = ("chnsenticorp", "msra", "cmrc2018", "thucnews", "waimai")
CORPORA = {"commonvoice_wiki": "corpora/zh/commonvoice_wiki.zh-cn.txt", "hongloumeng": "corpora/zh/hongloumeng.txt"}
SOURCES = (*TASKS, *CORPORA)
_SENTENCE_END = re.compile(r"(?<=[。！？])")
MIN_SENTENCE = 8
"""Corpus sentences shorter than this (characters, trimmed) are not looked for in the scored
texts: a closing quote, 第一回 or a four-character name would be found anywhere."""


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _bio_sentences(path: Path) -> list[str]:
    """The sentences of a `char<TAB>tag` file (blank line between sentences), characters joined."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if current:
                sentences.append("".join(current))
                current = []
            continue
        current.append(line.split("\t")[0] if "\t" in line else line.split(" ")[0])
    if current:
        sentences.append("".join(current))
    return sentences


def _contexts(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [paragraph["context"] for article in document["data"] for paragraph in article["paragraphs"]]


def _titles(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _waimai() -> list[str]:
    import csv
    import io

    rows = list(csv.reader(io.StringIO((DATA / "zh/waimai_10k/waimai_10k.csv").read_text(encoding="utf-8-sig"))))
    return [row[1] for row in rows[1:] if len(row) == 2]


def sources() -> dict[str, tuple[Callable[[], list[str]], Callable[[], list[str]]]]:
    """name -> (the training texts, the scored texts of that task)."""
    split = chnsenticorp_split(0)
    zh = DATA / "zh"
    return {
        "chnsenticorp": (lambda: [review for _, review in split["train"]],
                         lambda: [review for part in ("dev", "test") for _, review in split[part]]),
        "msra": (lambda: _bio_sentences(zh / "msra_ner/train.txt"), lambda: _bio_sentences(zh / "msra_ner/test.txt")),
        "cmrc2018": (lambda: _contexts(zh / "cmrc2018/cmrc2018_trial.json"),
                     lambda: _contexts(zh / "cmrc2018/cmrc2018_dev.json")),
        "thucnews": (lambda: _titles(zh / "thucnews/dev.txt"), lambda: _titles(zh / "thucnews/test.txt")),
        "waimai": (_waimai, lambda: []),
    }


def write_texts(path: Path, texts: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(text + "\n\n")


def task_texts(name: str, table: dict, scored: set[str], target: Path) -> dict[str, int]:
    """Write one task's training texts, less those that are also scored texts."""
    texts = [_one_line(text) for text in table[name][0]()]
    texts = [text for text in texts if text]
    kept = [text for text in texts if text not in scored]
    write_texts(target, kept)
    return {"texts": len(kept), "characters": sum(len(text) for text in kept), "left_out_as_scored": len(texts) - len(kept)}


def corpus_copy(source: Path, scored_text: str, target: Path) -> dict[str, int]:
    """Copy a corpus file line by line, less each sentence (of `MIN_SENTENCE` characters or
    more) found inside the scored texts (`scored_text`: all of them, joined by line breaks); a
    line left empty goes."""
    kept_lines, dropped, characters = [], 0, 0
    for line in source.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n"):
        pieces = _SENTENCE_END.split(line)
        kept = [piece for piece in pieces if len(piece.strip()) < MIN_SENTENCE or piece.strip() not in scored_text]
        dropped += len(pieces) - len(kept)
        if len(kept) == len(pieces) or "".join(kept).strip():
            kept_lines.append("".join(kept))
            characters += len(kept_lines[-1])
    target.write_text("\n".join(kept_lines), encoding="utf-8")
    return {"lines": sum(1 for line in kept_lines if line.strip()), "characters": characters,
            "sentences_left_out_as_scored": dropped}


def build(out: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """Write DIR/<source>.txt for each source and DIR/summary.json; returns the summary."""
    table = sources()
    # Every scored text of every task is kept out of every file (a waimai review that were also a
    # ChnSentiCorp test review would leak as much as a ChnSentiCorp one).
    scored_texts = [_one_line(text) for name in TASKS for text in table[name][1]()]
    scored, scored_text = set(scored_texts), "\n".join(scored_texts)
    summary: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="zh-corpus-", dir=out.parent) as temporary:
        staging = Path(temporary) / "out"
        staging.mkdir()
        for name in names:
            target = staging / f"{name}.txt"
            if name in CORPORA:
                summary[name] = corpus_copy(DATA / CORPORA[name], scored_text, target)
            else:
                summary[name] = task_texts(name, table, scored, target)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        shutil.move(str(staging), str(out))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the text files")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help=f"comma list of sources (default: all of {', '.join(SOURCES)})")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.sources.split(",") if name.strip()]
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names:
        raise SystemExit(f"unknown source(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SOURCES)}")
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists; --out must name a new directory")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = build(args.out, names)
    for name, counts in summary.items():
        print(f"{args.out / (name + '.txt')}: " + ", ".join(f"{key.replace('_', ' ')} {value:,}"
                                                             for key, value in counts.items()))


if __name__ == "__main__":
    main()
