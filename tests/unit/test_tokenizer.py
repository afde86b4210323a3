"""BertTokenizer and train_vocab on tiny in-test vocabs and corpora (no shared data, seconds).

The special tokens sit at the END of the tiny vocab (not at 0 and 100..103 as in Google's
vocabs) so that every test proves special-token ids are read from the vocab.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertforge.errors import BertforgeError
from bertforge.tokenizer import SPECIAL_TOKENS, BertTokenizer, read_vocab, train_vocab

WORDS = [
    "the", "quick", "brown", "fox", "jump", "##s", "##ed", "over", "lazy", "dog", ",", ".", "!", "?", "'",
    "un", "##want", "wa", "runn", "##ing", "cafe", "café", "Café", "hello", "Hello", "world", "北", "京",
    "a", "##a", "b", "##b", "x", "##x", "[", "]", "mask",
]
VOCAB = WORDS + ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]


def write(path, tokens):
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return path


@pytest.fixture()
def vocab_file(tmp_path):
    return write(tmp_path / "vocab.txt", VOCAB)


@pytest.fixture()
def uncased(vocab_file):
    return BertTokenizer(vocab_file, lowercase=True)


@pytest.fixture()
def cased(vocab_file):
    return BertTokenizer(vocab_file, lowercase=False)


def ids(tokenizer, *tokens):
    return [tokenizer.vocab[token] for token in tokens]


# ---------------------------------------------------------------- the pipeline


def test_special_ids_come_from_the_vocab(uncased):
    assert uncased.unk_token_id == len(WORDS)
    assert uncased.pad_token_id == len(WORDS) + 1
    assert uncased.cls_token_id == len(WORDS) + 2
    assert uncased.sep_token_id == len(WORDS) + 3
    assert uncased.mask_token_id == len(WORDS) + 4
    assert sorted(uncased.all_special_ids) == list(range(len(WORDS), len(VOCAB)))
    assert uncased.vocab_size == len(VOCAB) == len(uncased)


def test_punctuation_splitting_and_wordpieces(uncased):
    assert uncased.tokenize("The quick brown fox jumps, over the lazy dog!") == [
        "the", "quick", "brown", "fox", "jump", "##s", ",", "over", "the", "lazy", "dog", "!"]
    assert uncased.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    # One piece of a word missing from the vocab makes the whole word [UNK], not just that piece.
    assert uncased.tokenize("unwantedz running") == ["[UNK]", "runn", "##ing"]
    assert uncased.tokenize("dog's") == ["dog", "'", "[UNK]"]


def test_lowercase_and_accents(uncased, cased, vocab_file):
    assert uncased.tokenize("HeLLo Café") == ["hello", "cafe"]
    assert cased.tokenize("Hello hello Café café") == ["Hello", "hello", "Café", "café"]
    keep_accents = BertTokenizer(vocab_file, lowercase=True, strip_accents=False)
    assert keep_accents.tokenize("Café") == ["café"]
    # A decomposed accent (e + U+0301) is stripped the same way as the precomposed one.
    assert uncased.tokenize("cafe\u0301") == ["cafe"]


def test_cjk_characters_are_split(uncased, vocab_file):
    assert uncased.tokenize("北京a") == ["北", "京", "a"]
    whole = BertTokenizer(vocab_file, lowercase=True, tokenize_chinese_chars=False)
    assert whole.tokenize("北京a") == ["[UNK]"]


def test_control_characters_and_whitespace(uncased):
    assert uncased.tokenize("a\x00b\ufffd\u200bx\tdog\r\nfox") == ["a", "##b", "##x", "dog", "fox"]
    assert uncased.tokenize("") == []
    assert uncased.tokenize(" \t\r\n\u3000") == []
    assert uncased.encode("") == [uncased.cls_token_id, uncased.sep_token_id]


def test_words_over_100_characters_are_unk(uncased):
    assert uncased.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert uncased.tokenize("a" * 101) == ["[UNK]"]
    assert uncased.tokenize("a" * 101 + " dog") == ["[UNK]", "dog"]


def test_special_tokens_in_text_stay_whole(uncased):
    assert uncased.tokenize("dog [MASK] fox") == ["dog", "[MASK]", "fox"]
    assert uncased.tokenize("[mask]") == ["[", "mask", "]"]


def test_pairs_and_token_type_ids(uncased):
    encoded = uncased("the dog", "a fox")
    assert encoded["input_ids"] == [uncased.cls_token_id, *ids(uncased, "the", "dog"), uncased.sep_token_id,
                                    *ids(uncased, "a", "fox"), uncased.sep_token_id]
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert encoded["attention_mask"] == [1] * 7
    assert encoded.sequence_ids() == [None, 0, 0, None, 1, 1, None]
    assert uncased.encode("the dog", "a fox") == encoded["input_ids"]
    assert uncased.encode("the dog", add_special_tokens=False) == ids(uncased, "the", "dog")


def test_truncation(uncased):
    first, second = "the quick brown fox jumps", "the lazy dog"  # 6 and 3 wordpieces
    longest = uncased(first, second, max_length=8, truncation=True)["input_ids"]
    # longest_first trims the longer text one token at a time: 6+3 -> 3+2 fits 8 with 3 specials.
    assert uncased.convert_ids_to_tokens(longest) == [
        "[CLS]", "the", "quick", "brown", "[SEP]", "the", "lazy", "[SEP]"]
    only_second = uncased("the dog", first, max_length=6, truncation="only_second")["input_ids"]
    assert uncased.convert_ids_to_tokens(only_second) == ["[CLS]", "the", "dog", "[SEP]", "the", "[SEP]"]
    with pytest.raises(BertforgeError, match="cannot tokenize"):
        uncased(first, "dog", max_length=5, truncation="only_second")
    single = uncased.encode(first, max_length=4, truncation=True)
    assert uncased.convert_ids_to_tokens(single) == ["[CLS]", "the", "quick", "[SEP]"]
    # truncation=True without max_length cuts to model_max_length
    short = BertTokenizer(uncased.vocab_file, model_max_length=5)
    assert len(short("the quick brown fox jumps over", truncation=True)["input_ids"]) == 5
    assert len(short("the quick brown fox jumps over")["input_ids"]) == 9


def test_padding(uncased):
    batch = uncased(["the dog", "the quick brown fox"], padding=True)
    pad = uncased.pad_token_id
    assert batch["input_ids"][0][-2:] == [pad, pad]
    assert batch["attention_mask"] == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["token_type_ids"][0] == [0] * 6
    fixed = uncased(["the dog", "the quick brown fox"], padding="max_length", max_length=10)
    assert [len(row) for row in fixed["input_ids"]] == [10, 10]
    assert sum(fixed["attention_mask"][0]) == 4
    multiple = uncased(["the dog"], padding=True, pad_to_multiple_of=8)
    assert len(multiple["input_ids"][0]) == 8
    with pytest.raises(BertforgeError, match="padding"):
        uncased("dog", padding="sideways")


def test_tensors(uncased):
    batch = uncased(["the dog", "a fox jumps"], ["x", "b"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 8)
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # [CLS] a fox jump ##s [SEP] b [SEP]
    single = uncased("the dog", return_tensors="np", return_offsets_mapping=True)
    assert isinstance(single["input_ids"], np.ndarray) and single["input_ids"].shape == (1, 4)
    assert single["offset_mapping"].shape == (1, 4, 2)
    with pytest.raises(BertforgeError, match="padding=True"):
        uncased(["the dog", "a"], return_tensors="pt")


def test_offsets_point_into_the_original_text(uncased):
    text = "Café, the DOG!"
    encoded = uncased(text, return_offsets_mapping=True)
    pieces = [text[start:end] for start, end in encoded["offset_mapping"]]
    assert pieces == ["", "Café", ",", "the", "DOG", "!", ""]


def test_overflow_with_stride(uncased):
    question, context = "the dog", "a b x a b x a b"  # context: 8 words
    batch = uncased(question, context, max_length=9, truncation="only_second", stride=2,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    # 9 = [CLS] the dog [SEP] + 4 context tokens + [SEP]; windows of 4 that overlap by 2.
    windows = [[token for token, sequence in zip(uncased.convert_ids_to_tokens(row), batch.sequence_ids(index))
                if sequence == 1] for index, row in enumerate(batch["input_ids"])]
    assert windows == [["a", "b", "x", "a"], ["x", "a", "b", "x"], ["b", "x", "a", "b"]]
    assert batch["overflow_to_sample_mapping"] == [0, 0, 0]
    assert all(len(row) == 9 for row in batch["input_ids"])
    # offsets of the context tokens index into the context string
    starts = [start for (start, _), sequence in zip(batch["offset_mapping"][1], batch.sequence_ids(1)) if sequence == 1]
    assert starts == [4, 6, 8, 10]


def test_split_into_words_and_word_ids(uncased):
    words = [["The", "dog", "jumped!"], ["fox"]]
    batch = uncased(words, is_split_into_words=True, padding=True, return_word_ids=True)
    assert uncased.convert_ids_to_tokens(batch["input_ids"][0]) == [
        "[CLS]", "the", "dog", "jump", "##ed", "!", "[SEP]"]
    assert batch["word_ids"][0] == [None, 0, 1, 2, 2, 2, None]
    assert batch.word_ids(1) == [None, 0, None, None, None, None, None]
    single = uncased(["dog", "fox"], is_split_into_words=True, return_word_ids=True)
    assert single["word_ids"] == [None, 0, 1, None]
    tensors = uncased(words, is_split_into_words=True, padding=True, return_tensors="pt", return_word_ids=True)
    assert tensors["word_ids"][0] == [None, 0, 1, 2, 2, 2, None]


def test_encode_batch_ids_is_encode_without_specials(uncased):
    texts = ["the quick brown fox", "", "unwanted running!", "北京 Café"]
    assert uncased.encode_batch_ids(texts) == [uncased.encode(text, add_special_tokens=False) for text in texts]


def test_convert_and_decode(uncased):
    encoded = uncased.encode("the fox jumps")
    assert uncased.decode(encoded) == "the fox jumps"
    assert uncased.decode(encoded, skip_special_tokens=False) == "[CLS] the fox jumps [SEP]"
    assert uncased.convert_tokens_to_ids(["dog", "nope"]) == [uncased.vocab["dog"], uncased.unk_token_id]
    assert uncased.convert_ids_to_tokens(uncased.vocab["dog"]) == "dog"


def test_pickles_for_worker_processes(uncased):
    import pickle

    uncased("the dog", padding="max_length", max_length=6)  # builds a configured copy
    copy = pickle.loads(pickle.dumps(uncased))
    assert copy("the dog", "a fox", padding="max_length", max_length=9) == \
        uncased("the dog", "a fox", padding="max_length", max_length=9)
    assert copy.encode_batch_ids(["the fox jumps"]) == uncased.encode_batch_ids(["the fox jumps"])


def test_lowercase_is_guessed_from_the_vocab(tmp_path):
    uncased_file = write(tmp_path / "uncased.txt", list(SPECIAL_TOKENS) + ["[unused1]", "the", "dog"])
    cased_file = write(tmp_path / "cased.txt", list(SPECIAL_TOKENS) + ["The", "the", "Dog"])
    assert BertTokenizer(uncased_file).lowercase is True
    assert BertTokenizer(cased_file).lowercase is False


# ---------------------------------------------------------------- bad vocab files


def test_missing_vocab_names_the_file(tmp_path):
    with pytest.raises(BertforgeError, match="nope.txt: vocab file not found"):
        BertTokenizer(tmp_path / "nope.txt")


def test_non_utf8_vocab_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("[PAD]\n[UNK]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(BertforgeError, match=r"latin1.txt:3: vocab file is not UTF-8") as error:
        BertTokenizer(path)
    assert error.value.line == 3 and error.value.path == path


def test_empty_vocab(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(BertforgeError, match="empty.txt: vocab file is empty"):
        BertTokenizer(path)


def test_vocab_without_special_tokens(tmp_path):
    path = write(tmp_path / "nomask.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "dog"])
    with pytest.raises(BertforgeError, match=r"nomask.txt: vocab has no \[MASK\] token"):
        BertTokenizer(path)
    path = write(tmp_path / "words.txt", ["dog", "cat"])
    with pytest.raises(BertforgeError, match=r"words.txt: vocab has no \[PAD\], \[UNK\], \[CLS\], \[SEP\], \[MASK\]"):
        BertTokenizer(path)


def test_vocab_line_endings_match_transformers(tmp_path):
    # Universal newlines, as Python's text mode reads them: \r\n and a lone \r end a line too.
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"[PAD]\r\n[UNK]\r[CLS]\n[SEP]\n[MASK]\ndog")
    assert read_vocab(path) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dog"]


def test_directory_instead_of_vocab(tmp_path):
    with pytest.raises(BertforgeError, match="is a directory"):
        BertTokenizer(tmp_path)


# ---------------------------------------------------------------- save / load


def test_save_and_load_round_trip(tmp_path, vocab_file):
    tokenizer = BertTokenizer(vocab_file, lowercase=False, strip_accents=True, model_max_length=64)
    tokenizer.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is False and config["strip_accents"] is True
    assert config["model_max_length"] == 64 and config["tokenizer_class"] == "BertTokenizer"
    assert read_vocab(tmp_path / "saved" / "vocab.txt") == VOCAB
    loaded = BertTokenizer.from_pretrained(tmp_path / "saved")
    assert (loaded.lowercase, loaded.strip_accents, loaded.model_max_length) == (False, True, 64)
    text = "Hello café, the DOG jumped! 北京"  # cased, but accents stripped
    assert loaded.tokenize(text) == tokenizer.tokenize(text) == ["Hello", "cafe", ",", "the", "[UNK]", "jump",
                                                                 "##ed", "!", "北", "京"]
    assert loaded.vocab_hash == tokenizer.vocab_hash
    assert not [path.name for path in (tmp_path / "saved").iterdir() if path.name.endswith(".tmp")]


def test_from_pretrained_with_only_a_vocab(tmp_path):
    write(tmp_path / "vocab.txt", VOCAB)
    tokenizer = BertTokenizer.from_pretrained(tmp_path)
    assert tokenizer.lowercase is False  # the vocab holds capitals (Hello, Café)
    assert tokenizer.model_max_length == 512


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(BertforgeError, match="tokenizer directory not found"):
        BertTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(BertforgeError, match="no vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    write(tmp_path / "vocab.txt", VOCAB)
    (tmp_path / "tokenizer_config.json").write_text('{\n  "do_lower_case": true,\n  oops\n}')
    with pytest.raises(BertforgeError, match=r"tokenizer_config.json:3: invalid JSON"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}')
    with pytest.raises(BertforgeError, match="do_lower_case must be"):
        BertTokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------- training


def test_train_vocab(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 20
                      + "Unwanted running, jumping foxes! Café CAFÉ\n" * 20, encoding="utf-8")
    tokenizer = train_vocab([corpus], tmp_path / "out", vocab_size=60, lowercase=True)
    tokens = read_vocab(tmp_path / "out" / "vocab.txt")
    assert tokens[:5] == list(SPECIAL_TOKENS)
    assert 5 < len(tokens) <= 60 and len(set(tokens)) == len(tokens)
    assert not any(any(character.isupper() for character in token) for token in tokens[5:])
    assert "é" not in "".join(tokens)  # uncased strips accents
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 4
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["do_lower_case"] is True
    assert "[UNK]" not in tokenizer.tokenize("the quick brown fox")
    cased = train_vocab([corpus], tmp_path / "cased", vocab_size=60, lowercase=False)
    assert cased.lowercase is False and any(token[:1].isupper() for token in cased.tokens[5:])


def test_train_vocab_rejects_empty_or_missing_files(tmp_path):
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_text("")
    blank.write_text("  \n\t\n\n")
    with pytest.raises(BertforgeError, match="empty.txt, .*blank.txt: training files are empty"):
        train_vocab([empty, blank], tmp_path / "out", vocab_size=50)
    with pytest.raises(BertforgeError, match="missing.txt: training file not found"):
        train_vocab([tmp_path / "missing.txt"], tmp_path / "out", vocab_size=50)
    wide = tmp_path / "ideographic-space.txt"
    wide.write_text("\u3000\u3000\n", encoding="utf-8")
    with pytest.raises(BertforgeError, match="ideographic-space.txt: training file is only whitespace"):
        train_vocab([wide], tmp_path / "out", vocab_size=50)
    assert not (tmp_path / "out").exists()


def test_train_vocab_reports_non_utf8_line(tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(b"fine line\nanother\ncaf\xe9\n")
    with pytest.raises(BertforgeError, match=r"latin1.txt:3: not UTF-8"):
        train_vocab([corpus], tmp_path / "out", vocab_size=50)
