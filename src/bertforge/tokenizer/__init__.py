"""BERT's WordPiece tokenizer (`BertTokenizer`) and vocab training (`train_vocab`).

See `bertforge.tokenizer.bert` for the tokenizer's interface (word ids for NER, sequence ids
and overflow for QA, the fast `encode_batch_ids` path for data preparation, and what it adds
to the interface of transformers' BertTokenizer), `bertforge.tokenizer.train` for training a vocab and
`bertforge.tokenizer.vocab` for reading vocab files.
"""

from __future__ import annotations

from bertforge.tokenizer.bert import BatchEncoding, BertTokenizer
from bertforge.tokenizer.train import VocabConfig, train_vocab
from bertforge.tokenizer.vocab import SPECIAL_TOKENS, read_vocab

__all__ = ["BatchEncoding", "BertTokenizer", "SPECIAL_TOKENS", "VocabConfig", "read_vocab", "train_vocab"]
