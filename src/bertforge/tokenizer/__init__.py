"""BERT's WordPiece tokenizer (`BertTokenizer`) and vocab training (`train_vocab`).

See `bertforge.tokenizer.bert` for the tokenizer's interface (word ids for NER, sequence ids
and overflow for QA, the fast `encode_batch_ids` path for data preparation) and
`bertforge.tokenizer.train` for training a vocab.
"""

from __future__ import annotations

from typing import Any

from bertforge.tokenizer.bert import BatchEncoding, BertTokenizer
from bertforge.tokenizer.vocab import SPECIAL_TOKENS, read_vocab

__all__ = ["BatchEncoding", "BertTokenizer", "SPECIAL_TOKENS", "read_vocab", "train_vocab"]


def __getattr__(name: str) -> Any:
    # Training pulls in the trainer machinery; tokenizing does not need it.
    if name == "train_vocab":
        from bertforge.tokenizer.train import train_vocab

        return train_vocab
    raise AttributeError(f"module 'bertforge.tokenizer' has no attribute {name!r}")
