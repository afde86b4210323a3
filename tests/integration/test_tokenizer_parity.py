"""Token-id parity of bertforge's BertTokenizer with transformers on real data, line by line.

References, built by transformers from a directory holding the vocab and a tokenizer_config.json
written here (not by bertforge):
- `transformers.BertTokenizer`: in transformers 5 this is the `tokenizers`-backed class (the
  ground truth here). Note that in v5 `BertTokenizer(vocab_file=...)` silently ignores the file
  and builds a 5-token vocab; only `from_pretrained(dir)` or `BertTokenizer(vocab=path)` load it.
- `transformers.BertTokenizerLegacy` (v5's pure-Python BasicTokenizer + WordpieceTokenizer; in
  transformers 4 the slow `BertTokenizer` plays this role, and `BertTokenizerFast` the other).

Divergence found (and checked below, not hidden): the pure-Python tokenizer runs Unicode NFC on
the text before a CASED vocab sees it, while the `tokenizers` pipeline (and google-research/bert)
does not. So for decomposed accents ("e" + U+0301) or compatibility characters (the Angstrom sign
U+212B) the cased ids differ: bertforge and transformers.BertTokenizer give e.g. `e ##́`, the
legacy class gives `é`. bertforge follows transformers.BertTokenizer; for those strings the test
asserts instead that the legacy ids equal bertforge's ids of the NFC-normalized text. Uncased
vocabs are unaffected (NFD + accent stripping erases the difference). No other difference was
found on any line of the data sets below. Also: the legacy class omits token_type_ids unless
asked (`return_token_type_ids=True`), and with truncation="only_second" and a first text longer
than max_length it logs an error and returns the pair untruncated, where bertforge (like the
`tokenizers` class) raises.
"""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from conftest import require_file

from bertforge.tokenizer import BertTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCABS = {
    "uncased": ("bert-base-uncased-vocab.txt", True),
    "cased": ("bert-base-cased-vocab.txt", False),
    "chinese": ("bert-base-chinese-vocab.txt", True),
}

NASTY = [
    "", " ", "   ", "\t", "\n", "\r\n", " \t\r\n \u3000 \u00a0 ", "\u2028\u2029", "\x0b\x0c\x1c\x1d\x1e\x1f\x85",
    "Café naïve résumé Ångström façade Zoë Søren Łódź Œuvre straße İstanbul ǅ",
    "e\u0301 a\u0308 n\u0303 o\u0302\u0323 \u0301alone x\u20dd", "\u00c5\u212b \u0041\u030a",
    "ﬁ ﬀ Ⅻ ① ² ½ ｆｕｌｌｗｉｄｔｈ ＡＢＣ ＂quotes＂",
    "\x00abc\x00def", "a\ufffdb \ufffd", "zero\u200bwidth\u200cjoin\u200dner \ufeffbom \u00adsoft\u00adhyphen",
    "tab\tseparated\tvalues", "line1\r\nline2\rline3\nline4", "\x01\x02\x03\x07\x08\x1b[31mred\x1b[0m\x7f",
    "emoji 😀😃🙈 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ☺ ✓",
    "مرحبا بالعالم، كيف حالك؟", "สวัสดีครับ ภาษาไทย", "Привет, мир! Ёлка ЁЖ", "ひらがな カタカナ ｶﾀｶﾅ 日本語の文章です。",
    "한국어 텍스트 입니다 ㄱㄴㄷ", "Ελληνικά ΆΈΉ ς σ Σ", "עברית שלום", "हिन्दी नमस्ते", "中文混合English和123数字",
    "𠀀𠀁 𪜀 〇 々 〆", "İı Iı ß ẞ ǈ ǉ Ǉ", "ﷺ ﷽", "ℌℍℝ ℝeal", "\U0001d400\U0001d41a \U0001d7d8",
    "a" * 99, "b" * 100, "c" * 101, "supercalifragilistic" * 6, "x" * 250 + " short", "é" * 101, "日" * 150,
    "[CLS] [SEP] [MASK] [PAD] [UNK] [cls] [mask] [unused1] ##ing ## #", "hello[MASK]world",
    "don't can't won't it's", "U.S.A. e.g. $3.50 £20 €5 100% #tag @user a&b <html> {json} ~^`|\\",
    "...!!!???,,,;;;:::---___", "1,234,567.89 3.14159 1e-10 0x1F", "http://example.com/p?a=1&b=2#f user@mail.com",
    "MiXeD CaSe WoRdS ALLCAPS lowercase", "    leading and trailing spaces    ", "multiple     internal      spaces",
]


# ---------------------------------------------------------------- data


def read_tsv(path: Path, columns: list[str]) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    indexes = [header.index(column) for column in columns]
    return [[row[index] for index in indexes] for row in rows[1:]]


def read_conll_sentences(path: Path) -> list[list[str]]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(words)
                words = []
            continue
        words.append(line.split(" ")[0])
    if words:
        sentences.append(words)
    return sentences


def read_qa(path: Path, articles: int | None = None) -> tuple[list[str], list[str]]:
    """(questions, contexts) of a SQuAD-style file, one entry per question."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    questions, contexts = [], []
    for article in data[:articles]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(qa["question"])
                contexts.append(paragraph["context"])
    return questions, contexts


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def tokenizers_for(data_dir, tmp_path_factory):
    """name -> (bertforge tokenizer, {reference name: transformers tokenizer}), built once per module."""
    cache: dict[str, tuple[BertTokenizer, dict]] = {}

    def build(name: str):
        if name not in cache:
            filename, lowercase = VOCABS[name]
            vocab = require_file(data_dir / "vocab" / filename)
            directory = tmp_path_factory.mktemp(f"reference-{name}")
            shutil.copyfile(vocab, directory / "vocab.txt")
            (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
            references = {"transformers.BertTokenizer": transformers.BertTokenizer.from_pretrained(directory)}
            for extra in ("BertTokenizerFast", "BertTokenizerLegacy"):
                cls = getattr(transformers, extra, None)
                if cls is not None and cls is not transformers.BertTokenizer:
                    references[f"transformers.{extra}"] = cls.from_pretrained(directory)
            cache[name] = (BertTokenizer(vocab, lowercase=lowercase), references)
        return cache[name]

    return build


def nfc(item):
    """NFC of a text, a word list, or a (text, text) pair."""
    if isinstance(item, str):
        return unicodedata.normalize("NFC", item)
    if isinstance(item, tuple):
        return tuple(nfc(part) for part in item)
    return [nfc(word) for word in item]


def assert_same_ids(ours: BertTokenizer, references: dict, texts: list, pairs: list | None = None,
                    lowercase: bool = True, **options) -> None:
    mine = ours(texts, pairs, **options)["input_ids"]
    assert len(mine) == len(texts)
    items = texts if pairs is None else list(zip(texts, pairs))
    for name, reference in references.items():
        theirs = reference(texts, pairs, **options)["input_ids"]
        mismatches = []
        for index, (our_ids, their_ids) in enumerate(zip(mine, theirs)):
            if our_ids == their_ids:
                continue
            if not reference.is_fast and not lowercase and nfc(items[index]) != items[index]:
                # The one documented divergence: the pure-Python class NFC-normalizes cased text first.
                normalized = nfc(items[index])
                single = ours(*normalized, **options) if pairs is not None else ours(normalized, **options)
                if single["input_ids"] == their_ids:
                    continue
            mismatches.append(index)
        details = "; ".join(
            f"line {index}: {items[index]!r:.80} ours={ours.convert_ids_to_tokens(mine[index])[:12]} "
            f"theirs={ours.convert_ids_to_tokens(theirs[index])[:12]}" for index in mismatches[:3])
        assert not mismatches, f"{name}: {len(mismatches)} of {len(texts)} lines differ: {details}"


# ---------------------------------------------------------------- parity on real data


@pytest.mark.parametrize("vocab", ["uncased", "cased"])
def test_sst2_dev(data_dir, tokenizers_for, vocab):
    ours, references = tokenizers_for(vocab)
    sentences = [row[0] for row in read_tsv(require_file(data_dir / "glue/sst2/dev.tsv"), ["sentence"])]
    assert len(sentences) == 872
    assert_same_ids(ours, references, sentences, lowercase=VOCABS[vocab][1])


@pytest.mark.parametrize("vocab", ["uncased", "cased"])
def test_rte_dev_pairs(data_dir, tokenizers_for, vocab):
    ours, references = tokenizers_for(vocab)
    rows = read_tsv(require_file(data_dir / "glue/rte/dev.tsv"), ["sentence1", "sentence2"])
    first, second = [row[0] for row in rows], [row[1] for row in rows]
    assert len(first) == 277
    assert_same_ids(ours, references, first, second)
    # The model's inputs: truncated (longest first), padded, with token types.
    options = dict(max_length=128, truncation=True, padding="max_length", return_tensors="np")
    mine = ours(first, second, **options)
    for name, reference in references.items():
        theirs = reference(first, second, return_token_type_ids=True, **options)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert np.array_equal(mine[key], theirs[key]), f"{name}: {key} differs"


@pytest.mark.parametrize("vocab", ["uncased", "cased"])
def test_conll2003_valid_sentences(data_dir, tokenizers_for, vocab):
    ours, references = tokenizers_for(vocab)
    sentences = read_conll_sentences(require_file(data_dir / "conll2003/valid.txt"))
    assert len(sentences) == 3250
    assert_same_ids(ours, references, [" ".join(words) for words in sentences], lowercase=VOCABS[vocab][1])
    # NER reads pre-split words: ids and the word index of every token must agree too.
    assert_same_ids(ours, references, sentences, lowercase=VOCABS[vocab][1], is_split_into_words=True)
    mine = ours(sentences, is_split_into_words=True)
    fast = references["transformers.BertTokenizer"](sentences, is_split_into_words=True)
    assert all(mine.word_ids(index) == fast.word_ids(index) for index in range(len(sentences)))


def test_chnsenticorp_reviews(data_dir, tokenizers_for):
    ours, references = tokenizers_for("chinese")
    path = require_file(data_dir / "zh/chnsenticorp/ChnSentiCorp_htl_all.csv")
    with open(path, encoding="utf-8", newline="") as handle:
        reviews = [row["review"] for row in csv.DictReader(handle)]
    assert len(reviews) == 7766
    assert_same_ids(ours, references, reviews)


def test_cmrc2018_trial_text(data_dir, tokenizers_for):
    ours, references = tokenizers_for("chinese")
    questions, contexts = read_qa(require_file(data_dir / "zh/cmrc2018/cmrc2018_trial.json"))
    texts = sorted(set(contexts)) + questions
    assert len(texts) == 256 + 1002
    assert_same_ids(ours, references, texts)


@pytest.mark.parametrize("vocab", ["uncased", "cased", "chinese"])
def test_nasty_strings(tokenizers_for, vocab):
    ours, references = tokenizers_for(vocab)
    assert_same_ids(ours, references, NASTY, lowercase=VOCABS[vocab][1])
    assert_same_ids(ours, references, NASTY, list(reversed(NASTY)), lowercase=VOCABS[vocab][1])
    assert ours.encode_batch_ids(NASTY) == [ours.encode(text, add_special_tokens=False) for text in NASTY]


def test_nfc_divergence_of_the_legacy_tokenizer_is_real(tokenizers_for):
    """The divergence documented above exists (if transformers ever drops it, update the docs)."""
    ours, references = tokenizers_for("cased")
    legacy = [reference for reference in references.values() if not reference.is_fast]
    if not legacy:
        pytest.skip("this transformers has no pure-Python BertTokenizer")
    text = "cafe\u0301"
    assert ours.encode(text) == references["transformers.BertTokenizer"].encode(text)
    assert legacy[0].encode(text) == ours.encode("café") != ours.encode(text)


@pytest.mark.parametrize("dataset", ["squad", "cmrc2018"])
def test_question_answering_windows(data_dir, tokenizers_for, dataset):
    """Overflowing windows with stride and offsets, as extractive QA builds its features."""
    if dataset == "squad":
        ours, references = tokenizers_for("uncased")
        questions, contexts = read_qa(require_file(data_dir / "squad/dev-v1.1.json"), articles=2)
    else:
        ours, references = tokenizers_for("chinese")
        questions, contexts = read_qa(require_file(data_dir / "zh/cmrc2018/cmrc2018_trial.json"))
        questions, contexts = questions[:300], contexts[:300]
    options = dict(max_length=128, truncation="only_second", stride=32, return_overflowing_tokens=True,
                   return_offsets_mapping=True, padding="max_length")
    mine = ours(questions, contexts, **options)
    theirs = references["transformers.BertTokenizer"](questions, contexts, **options)
    assert len(mine["input_ids"]) > len(questions)  # some contexts did overflow
    for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping", "overflow_to_sample_mapping"):
        assert [list(map(tuple, row)) if key == "offset_mapping" else row for row in mine[key]] == \
            [list(map(tuple, row)) if key == "offset_mapping" else row for row in theirs[key]], key
    assert all(mine.sequence_ids(index) == theirs.sequence_ids(index) for index in range(len(mine["input_ids"])))


# ---------------------------------------------------------------- save_pretrained -> transformers


@pytest.mark.parametrize("vocab", ["uncased", "cased", "chinese"])
def test_saved_directory_loads_in_transformers(data_dir, tokenizers_for, tmp_path, vocab):
    ours, _ = tokenizers_for(vocab)
    ours.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tokenizer_config.json", "vocab.txt"]
    loaded = {
        "BertTokenizer": transformers.BertTokenizer.from_pretrained(tmp_path),
        "AutoTokenizer": transformers.AutoTokenizer.from_pretrained(tmp_path),
    }
    assert type(loaded["AutoTokenizer"]).__name__.startswith("BertTokenizer")
    sentences = [row[0] for row in read_tsv(require_file(data_dir / "glue/sst2/dev.tsv"), ["sentence"])]
    texts = sentences[:200] + NASTY
    for name, reference in loaded.items():
        assert reference.do_lower_case == ours.lowercase, name
        assert reference(texts)["input_ids"] == ours(texts)["input_ids"], name
    reloaded = BertTokenizer.from_pretrained(tmp_path)
    assert reloaded.lowercase == ours.lowercase and reloaded.vocab == ours.vocab
