"""BERT's tokenizer: clean text, split punctuation and CJK characters, lower-case and strip accents
(uncased vocabs), greedy longest-match WordPiece, then `[CLS] A [SEP] B [SEP]` with token types.

The pipeline is the one of google-research/bert `tokenization.py`, run by the Rust `tokenizers`
library (BertNormalizer, BertPreTokenizer, WordPiece with `[UNK]` for words over 100 characters,
TemplateProcessing). It gives the same ids as transformers' `BertTokenizer` (the
`tokenizers`-backed class of transformers 5, and the pure-Python `BertTokenizerLegacy`); the
parity tests in tests/integration/test_tokenizer_parity.py check that on real data sets.

Usage::

    tok = BertTokenizer("vocab.txt", lowercase=True)     # lowercase=None guesses from the vocab
    tok = BertTokenizer.from_pretrained(directory)        # vocab.txt (+ tokenizer_config.json)
    batch = tok(["first text"], ["second text"], max_length=128, padding=True,
                truncation=True, return_tensors="pt")     # input_ids, token_type_ids, attention_mask
    ids = tok.encode_batch_ids(lines)                     # fast bulk path: no specials, no padding

Special-token ids (`pad_token_id`, `unk_token_id`, `cls_token_id`, `sep_token_id`,
`mask_token_id`) are read from the vocab; nothing assumes `[CLS]` is 101.

Word ids (NER) and sequence ids (QA): calling the tokenizer returns a `BatchEncoding`, a plain
`dict` of the arrays that also keeps the `tokenizers.Encoding` of every row, so
`batch.word_ids(i)` gives, for row i, the index of the word each token came from (None for
`[CLS]`, `[SEP]` and padding) — with `is_split_into_words=True` that is the index in the word
list, which is what first-sub-token labelling needs. `batch.sequence_ids(i)` gives 0, 1 or None
per token (which text of a pair it came from). Passing `return_word_ids=True` also puts the
word ids into the dict as `batch["word_ids"]` (always lists, even with `return_tensors`).

Additions to the interface of transformers' `BertTokenizer`: `strip_accents`, `tokenize_chinese_chars` and
`model_max_length` constructor arguments (the same meaning as in transformers'
tokenizer_config.json), `return_word_ids` and `pad_to_multiple_of` call options,
`BatchEncoding.word_ids/sequence_ids/tokens`, `tok.vocab_hash` (sha256 of the vocab in id order,
for checking that shards and a model share a vocab), `tok.tokens` (the vocab in id order),
`tok.model_max_length`, `len(tok)`.

Departures from transformers: a directory with only `vocab.txt` (no tokenizer_config.json) is
loaded cased or uncased by looking at the vocab (transformers assumes uncased); `truncation=True`
without `max_length` truncates to `model_max_length` as transformers does, but a
`model_max_length` over 10**9 (transformers' "no limit" marker) means no truncation.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, Sequence

from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_json
from bertforge.tokenizer.vocab import (
    CLS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SEP_TOKEN,
    UNK_TOKEN,
    check_special_tokens,
    guess_lowercase,
    read_vocab,
    token_to_id_map,
    vocab_hash,
    write_vocab,
)

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
MAX_INPUT_CHARS_PER_WORD = 100
"""Longer words become a single [UNK] (google-research/bert's WordpieceTokenizer limit)."""
DEFAULT_MODEL_MAX_LENGTH = 512
_NO_LIMIT = 10**9

Truncation = bool | Literal["longest_first", "only_first", "only_second", "do_not_truncate"]
Padding = bool | Literal["longest", "max_length", "do_not_pad"]
TextInput = str | Sequence[str]


class BatchEncoding(dict):
    """The tokenizer's output: a dict of input_ids, token_type_ids, attention_mask (and whatever
    else was asked for), that also keeps one `tokenizers.Encoding` per row for word/sequence ids.
    """

    def __init__(self, data: dict[str, Any], encodings: list[Encoding]):
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of row `batch_index`, the index of its word (None for specials and padding)."""
        return list(self.encodings[batch_index].word_ids)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of row `batch_index`: 0 (first text), 1 (second text) or None (special, padding)."""
        return list(self.encodings[batch_index].sequence_ids)

    def tokens(self, batch_index: int = 0) -> list[str]:
        return list(self.encodings[batch_index].tokens)


class BertTokenizer:
    """BERT's WordPiece tokenizer on the Rust `tokenizers` library (see the module docstring)."""

    def __init__(self, vocab_file: str | Path, lowercase: bool | None = None, *,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
                 model_max_length: int | None = DEFAULT_MODEL_MAX_LENGTH):
        """Load `vocab_file` (one token a line).

        Args:
            lowercase: lower-case the text (uncased vocab). None guesses from the vocab: uncased
                when almost no token holds a capital letter.
            strip_accents: remove combining marks after NFD. None follows `lowercase`, as BERT does.
            tokenize_chinese_chars: put spaces around CJK ideographs so each is its own word.
            model_max_length: the length `truncation=True` cuts to when no `max_length` is given.
        """
        self.vocab_file = Path(vocab_file)
        tokens = read_vocab(self.vocab_file)
        check_special_tokens(tokens, self.vocab_file)
        self.tokens: list[str] = tokens
        self.vocab: dict[str, int] = token_to_id_map(tokens)
        self.lowercase: bool = guess_lowercase(tokens) if lowercase is None else bool(lowercase)
        self.strip_accents: bool | None = strip_accents
        self.tokenize_chinese_chars: bool = bool(tokenize_chinese_chars)
        self.model_max_length: int | None = model_max_length
        self.pad_token, self.unk_token, self.cls_token, self.sep_token, self.mask_token = (
            PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
        self.pad_token_id: int = self.vocab[PAD_TOKEN]
        self.unk_token_id: int = self.vocab[UNK_TOKEN]
        self.cls_token_id: int = self.vocab[CLS_TOKEN]
        self.sep_token_id: int = self.vocab[SEP_TOKEN]
        self.mask_token_id: int = self.vocab[MASK_TOKEN]
        self.backend: Tokenizer = self._build_backend()
        # Truncation and padding are settings of a `tokenizers.Tokenizer`, so each combination
        # gets its own configured copy; the copies are never changed afterwards, which keeps
        # concurrent calls (the server) from seeing each other's settings.
        self._configured: OrderedDict[tuple, Tokenizer] = OrderedDict()
        self._configured_lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    def _build_backend(self) -> Tokenizer:
        backend = Tokenizer(WordPiece(self.vocab, unk_token=UNK_TOKEN,
                                      max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents, lowercase=self.lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS_TOKEN}:0 $A:0 {SEP_TOKEN}:0",
            pair=f"{CLS_TOKEN}:0 $A:0 {SEP_TOKEN}:0 $B:1 {SEP_TOKEN}:1",
            special_tokens=[(CLS_TOKEN, self.cls_token_id), (SEP_TOKEN, self.sep_token_id)])
        # Special tokens written in the text ("[MASK]") stay whole and are never lower-cased,
        # as in transformers (never_split in the legacy tokenizer, added tokens in the fast one).
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                    for token in (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)])
        return backend

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BertTokenizer":
        """Load `directory/vocab.txt` with the settings of `directory/tokenizer_config.json`.

        The config is optional (a directory with only vocab.txt is guessed cased or uncased from
        its vocab); a path straight to a vocab file is accepted too.
        """
        directory = Path(directory)
        if not directory.exists():
            raise BertforgeError("tokenizer directory not found", path=directory)
        if directory.is_file():
            return cls(directory)
        vocab_file = directory / VOCAB_FILE
        if not vocab_file.exists():
            raise BertforgeError(f"no {VOCAB_FILE} in the tokenizer directory", path=directory)
        config = read_tokenizer_config(directory / CONFIG_FILE)
        for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            expected = {"unk_token": UNK_TOKEN, "sep_token": SEP_TOKEN, "pad_token": PAD_TOKEN,
                        "cls_token": CLS_TOKEN, "mask_token": MASK_TOKEN}[key]
            if value is not None and value != expected:
                raise BertforgeError(f"{key} is {value!r}; bertforge supports only BERT's {expected}",
                                     path=directory / CONFIG_FILE)
        model_max_length = config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH)
        if not isinstance(model_max_length, (int, float)) or model_max_length >= _NO_LIMIT:
            model_max_length = None
        return cls(vocab_file, lowercase=config.get("do_lower_case"),
                   strip_accents=config.get("strip_accents"),
                   tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                   model_max_length=None if model_max_length is None else int(model_max_length))

    def save_pretrained(self, directory: str | Path) -> None:
        """Write vocab.txt and tokenizer_config.json (each atomically) that transformers'
        BertTokenizer and AutoTokenizer load and tokenize with identically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_vocab(directory / VOCAB_FILE, self.tokens)
        atomic_write_json(directory / CONFIG_FILE, self.config_dict())

    def config_dict(self) -> dict[str, Any]:
        """The tokenizer_config.json content, in transformers' key names."""
        return {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "model_max_length": self.model_max_length if self.model_max_length is not None else int(1e30),
            "unk_token": UNK_TOKEN,
            "sep_token": SEP_TOKEN,
            "pad_token": PAD_TOKEN,
            "cls_token": CLS_TOKEN,
            "mask_token": MASK_TOKEN,
            "clean_up_tokenization_spaces": True,
        }

    # ------------------------------------------------------------------ vocab

    @property
    def vocab_size(self) -> int:
        """Number of lines in the vocab: the embedding matrix needs this many rows."""
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def all_special_ids(self) -> list[int]:
        return [self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id]

    @property
    def vocab_hash(self) -> str:
        return vocab_hash(self.tokens)

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.tokens[ids]
        return [self.tokens[index] for index in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of whole vocab entries; anything not in the vocab maps to [UNK]."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(token, self.unk_token_id) for token in tokens]

    # ------------------------------------------------------------------ tokenizing

    def tokenize(self, text: str) -> list[str]:
        """The wordpieces of `text`, without [CLS]/[SEP]."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None, truncation: Truncation = False) -> list[int]:
        """The ids of one text (or pair), with [CLS]/[SEP] unless `add_special_tokens=False`."""
        backend = self._backend_for(truncation, max_length, stride=0, padding=False, pad_to_multiple_of=None)
        try:
            return backend.encode(text, text_pair, add_special_tokens=add_special_tokens).ids
        except Exception as error:  # tokenizers reports impossible truncation as a plain Exception
            raise BertforgeError(f"cannot tokenize: {error}") from None

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of many texts at once, without special tokens, truncation or padding.

        The fast bulk path for data preparation: `tokenizers` encodes the batch on all cores in
        Rust and skips computing offsets. Pass thousands of lines per call. In a worker process
        forked after the parent has already used a tokenizer, `tokenizers` falls back to one
        thread per process (and warns unless TOKENIZERS_PARALLELISM is set).
        """
        return [encoding.ids for encoding in self.backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def __call__(self, text: TextInput | Sequence[Sequence[str]],
                 text_pair: TextInput | Sequence[Sequence[str]] | None = None, *,
                 max_length: int | None = None, padding: Padding = False, truncation: Truncation = False,
                 return_tensors: Literal["pt", "np"] | None = None, is_split_into_words: bool = False,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False,
                 stride: int = 0, return_overflowing_tokens: bool = False, return_word_ids: bool = False,
                 pad_to_multiple_of: int | None = None,
                 add_special_tokens: bool = True) -> BatchEncoding:
        """Tokenize one text, a pair, or batches of them.

        A single input (a str, or a list of words with `is_split_into_words`) gives flat lists;
        a batch gives a list per row. With `return_tensors` ("pt" or "np") every value is a
        (rows, length) int64 tensor/array (`offset_mapping` is (rows, length, 2)); rows must then
        have equal lengths, so pass `padding`. With `return_overflowing_tokens`, each text too
        long for `max_length` also yields extra rows of its remainder, overlapping by `stride`
        tokens, and `overflow_to_sample_mapping` gives each row's source text.
        """
        single = _is_single(text, is_split_into_words)
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs = None
        else:
            pair_single = _is_single(text_pair, is_split_into_words)
            if pair_single != single:
                raise BertforgeError("text and text_pair must both be single inputs or both batches")
            pairs = [text_pair] if pair_single else list(text_pair)
            if len(pairs) != len(texts):
                raise BertforgeError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
        if stride and not return_overflowing_tokens:
            stride = 0
        backend = self._backend_for(truncation, max_length, stride, padding, pad_to_multiple_of)
        inputs: list[Any] = texts if pairs is None else list(zip(texts, pairs))
        try:
            encodings = backend.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                             add_special_tokens=add_special_tokens)
        except Exception as error:  # e.g. only_second truncation when the first text is too long
            raise BertforgeError(f"cannot tokenize: {error}") from None

        rows: list[Encoding] = []
        sample_of_row: list[int] = []
        for index, encoding in enumerate(encodings):
            rows.append(encoding)
            sample_of_row.append(index)
            if return_overflowing_tokens:
                for overflow in encoding.overflowing:
                    rows.append(overflow)
                    sample_of_row.append(index)

        data: dict[str, Any] = {
            "input_ids": [row.ids for row in rows],
            "token_type_ids": [row.type_ids for row in rows],
            "attention_mask": [row.attention_mask for row in rows],
        }
        if return_offsets_mapping:
            data["offset_mapping"] = [row.offsets for row in rows]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [row.special_tokens_mask for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row

        if return_tensors is not None:
            data = _to_tensors(data, return_tensors)
        elif single and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        if return_word_ids:
            word_ids = [list(row.word_ids) for row in rows]
            data["word_ids"] = word_ids[0] if single and not return_overflowing_tokens and return_tensors is None \
                else word_ids
        return BatchEncoding(data, rows)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text from ids: wordpieces joined ("##" pieces glued to the one before)."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ configured copies

    def _backend_for(self, truncation: Truncation, max_length: int | None, stride: int,
                     padding: Padding, pad_to_multiple_of: int | None) -> Tokenizer:
        strategy = _truncation_strategy(truncation)
        if strategy is not None:
            if max_length is None:
                max_length = self.model_max_length
            if max_length is None:
                strategy = None
        pad_mode = _padding_mode(padding)
        pad_length: int | None = None
        if pad_mode == "max_length":
            pad_length = max_length if max_length is not None else self.model_max_length
            if pad_length is None:
                raise BertforgeError("padding='max_length' needs max_length (the tokenizer has no model_max_length)")
        if strategy is None and pad_mode is None and pad_to_multiple_of is None:
            return self.backend
        if strategy is not None:
            if max_length is None or max_length < 1:
                raise BertforgeError(f"max_length must be a positive number, got {max_length}")
            if stride < 0 or stride >= max_length:
                raise BertforgeError(f"stride must be in [0, max_length), got {stride}")
        key = (strategy, max_length if strategy else None, stride if strategy else 0,
               pad_mode, pad_length, pad_to_multiple_of)
        with self._configured_lock:
            backend = self._configured.get(key)
            if backend is not None:
                self._configured.move_to_end(key)
                return backend
            backend = Tokenizer.from_str(self.backend.to_str())
            if strategy is not None:
                backend.enable_truncation(max_length, stride=stride, strategy=strategy)
            if pad_mode is not None or pad_to_multiple_of is not None:
                backend.enable_padding(pad_id=self.pad_token_id, pad_type_id=0, pad_token=PAD_TOKEN,
                                       length=pad_length, pad_to_multiple_of=pad_to_multiple_of)
            self._configured[key] = backend
            while len(self._configured) > 16:
                self._configured.popitem(last=False)
            return backend

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for DataLoader workers and multiprocessing: the lock and the configured
        # copies are per-process state and are rebuilt on demand.
        state = self.__dict__.copy()
        del state["_configured"], state["_configured_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._configured = OrderedDict()
        self._configured_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"BertTokenizer(vocab_file={str(self.vocab_file)!r}, vocab_size={self.vocab_size}, "
                f"lowercase={self.lowercase})")


def read_tokenizer_config(path: Path) -> dict[str, Any]:
    """tokenizer_config.json as a dict; {} when the file is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise BertforgeError("tokenizer config is not UTF-8", path=path) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise BertforgeError(f"invalid JSON: {error.msg}", path=path, line=error.lineno) from None
    if not isinstance(config, dict):
        raise BertforgeError("tokenizer config must be a JSON object", path=path)
    for key in ("do_lower_case", "strip_accents"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            raise BertforgeError(f"{key} must be true, false or null, got {config[key]!r}", path=path)
    return config


def _is_single(text: Any, is_split_into_words: bool) -> bool:
    if is_split_into_words:
        if isinstance(text, str):
            raise BertforgeError("is_split_into_words=True needs a list of words (or a list of such lists)")
        return len(text) == 0 or isinstance(text[0], str)
    if isinstance(text, str):
        return True
    if isinstance(text, (list, tuple)):
        return False
    raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")


def _truncation_strategy(truncation: Truncation) -> str | None:
    if truncation is True:
        return "longest_first"
    if truncation is False or truncation is None or truncation == "do_not_truncate":
        return None
    if truncation in ("longest_first", "only_first", "only_second"):
        return truncation
    raise BertforgeError(f"unknown truncation {truncation!r}: use True, False, 'longest_first', "
                         "'only_first' or 'only_second'")


def _padding_mode(padding: Padding) -> str | None:
    if padding is True or padding == "longest":
        return "longest"
    if padding is False or padding is None or padding == "do_not_pad":
        return None
    if padding == "max_length":
        return "max_length"
    raise BertforgeError(f"unknown padding {padding!r}: use True, False, 'longest' or 'max_length'")


def _to_tensors(data: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind not in ("pt", "np"):
        raise BertforgeError(f"unknown return_tensors {kind!r}: use 'pt' or 'np'")
    import numpy as np

    lengths = {len(row) for row in data["input_ids"]}
    if len(lengths) > 1:
        raise BertforgeError("rows have different lengths; pass padding=True to return tensors")
    length = lengths.pop() if lengths else 0
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "overflow_to_sample_mapping":
            array = np.asarray(value, dtype=np.int64)
        elif key == "offset_mapping":
            array = np.asarray(value, dtype=np.int64).reshape(len(value), length, 2)  # (rows, length, 2)
        else:
            array = np.asarray(value, dtype=np.int64).reshape(len(value), length)  # (rows, length)
        out[key] = array
    if kind == "pt":
        import torch

        out = {key: torch.from_numpy(array) for key, array in out.items()}
    return out
