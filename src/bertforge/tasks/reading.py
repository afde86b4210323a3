"""Reading task files and labels: text files (UTF-8, an optional byte-order mark, CRLF), CJK
detection, a stable label order, and user-facing warnings."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from bertforge.errors import BertforgeError


def read_text(path: str | Path, what: str = "data file") -> str:
    """The whole file as text: UTF-8 with an optional byte-order mark; CRLF becomes LF."""
    path = Path(path)
    if path.is_dir():
        raise BertforgeError(f"is a directory, expected a {what}", path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BertforgeError(f"{what} not found", path=path) from None
    except OSError as error:
        raise BertforgeError(f"cannot read {what}: {error.strerror}", path=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BertforgeError(f"{what} is not UTF-8 (bytes 0x{data[error.start:error.end].hex()})",
                             path=path, line=line) from None
    if not text.strip():
        raise BertforgeError(f"{what} is empty", path=path)
    return text.replace("\r\n", "\n")


def read_lines(path: str | Path, what: str = "data file") -> list[str]:
    """Lines without their line ends. Only `\\n` (and `\\r\\n`) end a line: a stray `\\r` or
    U+2028 inside a sentence stays part of it, as csv/TSV readers in GLUE treat them."""
    lines = read_text(path, what).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def is_cjk(character: str) -> bool:
    """A CJK ideograph, as BERT's BasicTokenizer defines them (each becomes its own token)."""
    code = ord(character)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


def has_cjk(text: str) -> bool:
    return any(is_cjk(character) for character in text)


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when they are all integers, else by name."""
    distinct = set(labels)
    if all(_is_integer(label) for label in distinct):
        return sorted(distinct, key=lambda label: int(label))
    return sorted(distinct)


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def warn(message: str) -> None:
    """A user-facing warning (the CLI prints it as `warning: <message>`)."""
    warnings.warn(message, UserWarning, stacklevel=3)
