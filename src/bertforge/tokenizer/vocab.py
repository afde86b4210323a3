"""Reading and writing BERT `vocab.txt` files: one token a line, the line number is the id.

Lines are split exactly as transformers' `load_vocab` splits them (Python's universal
newlines: `\\n`, `\\r\\n` and a lone `\\r` all end a line), so ids agree with transformers. A
file that is missing, not UTF-8, empty, holds a token twice (transformers silently keeps the
later line's id, so the earlier id is never produced and ids no longer match the model), or lacks
one of BERT's five special tokens is a `BertforgeError` naming the file (and the line, for bad
bytes and repeated tokens).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_text

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
"""BERT's special tokens in the order a newly trained vocab lists them (ids 0..4)."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_vocab(path: str | Path) -> list[str]:
    """The tokens of a vocab file, in id order (token i has id i)."""
    path = Path(path)
    if path.is_dir():
        raise BertforgeError("is a directory, expected a vocab.txt file (BertTokenizer.from_pretrained reads a directory)",
                             path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BertforgeError("vocab file not found", path=path) from None
    except OSError as error:
        raise BertforgeError(f"cannot read vocab file: {error.strerror}", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        bad = data[error.start:error.end].hex()
        raise BertforgeError(f"vocab file is not UTF-8 (bytes 0x{bad} at offset {error.start})",
                             path=path, line=line) from None
    tokens = _LINE_BREAK.split(text)
    if tokens and tokens[-1] == "":
        tokens.pop()  # the newline that ends the last line does not start a new token
    if not tokens:
        raise BertforgeError("vocab file is empty", path=path)
    _check_unique(tokens, path)
    return tokens


def _check_unique(tokens: list[str], path: Path) -> None:
    """A token on two lines is an error naming both: one of its ids would never be produced."""
    first_line: dict[str, int] = {}
    for index, token in enumerate(tokens):
        earlier = first_line.setdefault(token, index + 1)
        if earlier != index + 1:
            raise BertforgeError(f"token {token!r} is on line {earlier} and again on line {index + 1}; "
                                 "every token of a vocab must be unique (ids are line numbers)",
                                 path=path, line=index + 1)


def check_special_tokens(tokens: list[str], path: str | Path, required: tuple[str, ...] = SPECIAL_TOKENS) -> None:
    present = set(tokens)
    missing = [token for token in required if token not in present]
    if missing:
        hint = ""
        if tokens and tokens[0].startswith("\ufeff"):
            hint = " (the file starts with a UTF-8 byte-order mark; remove it)"
        raise BertforgeError(f"vocab has no {', '.join(missing)} token{'s' if len(missing) > 1 else ''}; "
                             f"BERT needs {', '.join(required)}{hint}", path=path)


def token_to_id_map(tokens: list[str]) -> dict[str, int]:
    """token -> id (read_vocab has checked that every token is on one line only)."""
    return {token: index for index, token in enumerate(tokens)}


def write_vocab(path: str | Path, tokens: list[str]) -> None:
    """Write `tokens` one a line, atomically."""
    for index, token in enumerate(tokens):
        if _LINE_BREAK.search(token):
            raise BertforgeError(f"token {index} contains a line break and cannot be written to a vocab file",
                                 path=path)
    atomic_write_text(path, "".join(token + "\n" for token in tokens))


def vocab_hash(tokens: list[str]) -> str:
    """sha256 of the tokens in id order: equal hashes mean equal ids for every token."""
    digest = hashlib.sha256()
    for token in tokens:
        digest.update(token.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def guess_lowercase(tokens: list[str]) -> bool:
    """Whether a vocab looks uncased: almost none of its tokens hold a capital letter.

    Bracketed tokens ([CLS], [unused1], <S>) are markers, not text. A few stray capitals occur in
    uncased vocabs (bert-base-uncased has 'ℝ'; bert-base-chinese has none in text tokens) while
    cased vocabs have thousands (bert-base-cased: 8,368 of 28,996), so the threshold is 0.5%.
    """
    text_tokens = [token for token in tokens
                   if not ((token.startswith("[") and token.endswith("]"))
                           or (token.startswith("<") and token.endswith(">")))]
    if not text_tokens:
        return True
    capitals = sum(1 for token in text_tokens if any(character.isupper() for character in token))
    return capitals <= 0.005 * len(text_tokens)
