"""Reading raw text: input files into byte pieces (main process), pieces into documents of
sentences (workers).

Inputs are files, directories (every non-hidden file under them, sorted) and glob patterns;
a file that starts with the gzip magic bytes is decompressed whatever its name. Three layouts:

- ``lines`` (google-research/bert's): one sentence per line, a blank line between documents.
- ``paragraphs``: a blank line between documents; the lines of a document are joined and split
  into sentences after English ``. ! ?`` (followed by a space, abbreviations such as "Mr." and
  initials excepted) and after Chinese ``。！？；`` (closing quotes stay with their sentence).
- ``jsonl``: one JSON object per line, the document's text in a configurable field; each line of
  that text is split into sentences as in ``paragraphs``.

``auto`` picks ``jsonl`` for ``*.jsonl``/``*.ndjson`` (optionally ``.gz``), else ``paragraphs``.

Cleaning: CRLF and lone CR become LF, a UTF-8 byte-order mark is dropped, and a first line that
is a bracketed title (``[Emma by Jane Austen 1816]``, as in the Gutenberg files of NLTK) is
dropped and counted. Invalid UTF-8 is replaced with U+FFFD and counted (``strict`` makes it an
error naming the file and line). A NUL byte means a binary file: an error naming the file.

Streaming: `iter_chunks` reads each file in blocks and cuts it into pieces of at most
``chunk_bytes`` at document boundaries (a blank line), so memory never holds more than a few
chunks whatever the size of the corpus. A document longer than a chunk is cut at a line end
(and a line longer than a chunk at a space): over-long lines are split, never dropped. The cut
points depend only on the bytes and ``chunk_bytes``, which keeps preparation deterministic.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Literal, Sequence

from bertforge.errors import BertforgeError

Layout = Literal["auto", "lines", "paragraphs", "jsonl"]
LAYOUTS: tuple[str, ...] = ("auto", "lines", "paragraphs", "jsonl")

_GZIP_MAGIC = b"\x1f\x8b"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_MAX_JSON_LINE_FACTOR = 64
"""A JSON line may be this many chunks long before we call it an error (it cannot be split)."""


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    path: Path
    layout: str
    """`lines`, `paragraphs` or `jsonl` (never `auto`)."""
    size: int
    """Bytes on disk (compressed size for gzip)."""


def resolve_inputs(inputs: Sequence[str | Path], layout: Layout = "auto") -> list[InputFile]:
    """Expand files, directories and glob patterns into a sorted, de-duplicated file list.

    Raises BertforgeError naming the input when a path does not exist, a pattern matches no
    file, or nothing at all is given.
    """
    if layout not in LAYOUTS:
        raise BertforgeError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not inputs:
        raise BertforgeError("no input given; pass --input FILE|DIR|GLOB")
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            found = sorted(candidate for candidate in path.rglob("*")
                           if candidate.is_file() and not _is_hidden(candidate.relative_to(path)))
            if not found:
                raise BertforgeError("input directory holds no files", path=path)
            paths.extend(found)
        elif any(character in text for character in "*?["):
            matches = sorted(Path(match) for match in glob.glob(str(path), recursive=True))
            matches = [match for match in matches if match.is_file()]
            if not matches:
                raise BertforgeError("no file matches this pattern", path=text)
            paths.extend(matches)
        elif path.exists():
            raise BertforgeError("input is not a regular file", path=path)
        else:
            raise BertforgeError("input not found", path=path)
    seen: set[Path] = set()
    files: list[InputFile] = []
    for path in paths:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        chosen = layout
        if chosen == "auto":
            chosen = "jsonl" if path.name.lower().endswith(_JSONL_SUFFIXES) else "paragraphs"
        files.append(InputFile(path=path, layout=chosen, size=path.stat().st_size))
    return files


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


# -- reading: files into pieces, pieces into chunks (main process) ---------------------------


@dataclass
class Piece:
    """A run of whole lines from one file, cut at a document boundary where possible."""

    path: str
    layout: str
    data: bytes
    first_line: int
    """1-based line number of the first byte, for error messages."""
    file_start: bool
    """The piece begins at the start of its file (byte-order mark, title line)."""
    continues_document: bool
    """Its first document was begun by the previous piece (a document longer than a chunk)."""
    splits_line: bool = False
    """It ends inside a line longer than a chunk (that line continues in the next piece)."""


@dataclass
class Chunk:
    """The unit of work of one worker and of one shard: pieces totalling about `chunk_bytes`."""

    index: int
    pieces: list[Piece] = field(default_factory=list)

    @property
    def num_bytes(self) -> int:
        return sum(len(piece.data) for piece in self.pieces)

    def digest(self) -> str:
        """A hash of the chunk's content and cut flags: a shard is reused only for equal digests."""
        digest = hashlib.blake2b(digest_size=16)
        for piece in self.pieces:
            digest.update(f"{piece.layout}|{piece.file_start}|{piece.continues_document}|"
                          f"{piece.splits_line}|{len(piece.data)}|".encode())
            digest.update(piece.data)
        return digest.hexdigest()


def iter_chunks(files: Sequence[InputFile], chunk_bytes: int) -> Iterator[Chunk]:
    """Stream the inputs as chunks of at most about `chunk_bytes` (pieces of several files may
    share a chunk; a piece never crosses a file)."""
    if chunk_bytes < 64:
        raise BertforgeError(f"chunk size must be at least 64 bytes, got {chunk_bytes}")
    chunk = Chunk(index=0)
    filled = 0
    for file in files:
        for piece in iter_pieces(file, chunk_bytes):
            if chunk.pieces and filled + len(piece.data) > chunk_bytes:
                yield chunk
                chunk = Chunk(index=chunk.index + 1)
                filled = 0
            chunk.pieces.append(piece)
            filled += len(piece.data)
    if chunk.pieces:
        yield chunk


def _open_binary(path: Path) -> IO[bytes]:
    try:
        handle: IO[bytes] = open(path, "rb")
    except FileNotFoundError:
        raise BertforgeError("input not found", path=path) from None
    except IsADirectoryError:
        raise BertforgeError("input is a directory, expected a file", path=path) from None
    except OSError as error:
        raise BertforgeError(f"cannot read input: {error.strerror}", path=path) from None
    if handle.read(2) == _GZIP_MAGIC:
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def _read_exactly(handle: IO[bytes], size: int, path: Path) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        try:
            data = handle.read(remaining)
        except (gzip.BadGzipFile, zlib.error) as error:
            raise BertforgeError(f"not a valid gzip file ({error})", path=path) from None
        except EOFError:
            raise BertforgeError("gzip file is truncated", path=path) from None
        except OSError as error:
            raise BertforgeError(f"cannot read input: {error.strerror or error}", path=path) from None
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def iter_pieces(file: InputFile, piece_bytes: int) -> Iterator[Piece]:
    """Cut one file into pieces of at most `piece_bytes` (a JSON line is never cut)."""
    handle = _open_binary(file.path)
    with handle:
        buffer = b""
        line = 1
        file_start = True
        continues = False
        eof = False
        want = piece_bytes + 1  # one byte past the window tells whether a cut lands on a line end
        while True:
            if not eof and len(buffer) < want:
                data = _read_exactly(handle, want - len(buffer), file.path)
                eof = len(buffer) + len(data) < want
                buffer += data
            if not buffer:
                break
            if b"\x00" in buffer:
                offset = buffer.index(b"\x00")
                raise BertforgeError("binary file (it holds NUL bytes); bertforge reads UTF-8 text "
                                     "(UTF-16 files must be converted)", path=file.path,
                                     line=line + buffer.count(b"\n", 0, offset))
            splits_line = False
            if eof and len(buffer) <= piece_bytes:
                cut, next_continues = len(buffer), False
            elif file.layout == "jsonl":
                newline = buffer.rfind(b"\n", 0, piece_bytes)
                if newline < 0:
                    newline = buffer.find(b"\n", piece_bytes)
                    if newline < 0 and not eof:
                        if len(buffer) > _MAX_JSON_LINE_FACTOR * piece_bytes:
                            raise BertforgeError(f"a JSON line is longer than {len(buffer)} bytes",
                                                 path=file.path, line=line)
                        want = len(buffer) + piece_bytes
                        continue
                cut = len(buffer) if newline < 0 else newline + 1
                next_continues = False
            else:
                cut, next_continues, splits_line = _text_cut(buffer, piece_bytes)
            want = piece_bytes + 1
            piece_data, buffer = buffer[:cut], buffer[cut:]
            yield Piece(path=str(file.path), layout=file.layout, data=piece_data, first_line=line,
                        file_start=file_start, continues_document=continues, splits_line=splits_line)
            line += piece_data.count(b"\n")
            file_start = False
            continues = next_continues


def _text_cut(buffer: bytes, limit: int) -> tuple[int, bool, bool]:
    """Where to cut a text buffer longer than `limit`: (cut, next piece continues a document,
    the cut is inside a line). Preference: a blank line, a line end, a space, a character edge."""
    blank = max(buffer.rfind(b"\n\n", 0, limit), buffer.rfind(b"\n\r\n", 0, limit))
    if blank >= 0:
        return buffer.index(b"\n", blank + 1) + 1, False, False
    newline = buffer.rfind(b"\n", 0, limit)
    if newline >= 0:
        cut = newline + 1
        boundary = _is_blank_line(_last_line(buffer[:cut])) or _is_blank_line(_first_line(buffer[cut:]))
        return cut, not boundary, False
    # One line longer than a chunk: cut at the last space, or at a UTF-8 character boundary.
    space = max(buffer.rfind(b" ", 0, limit), buffer.rfind(b"\t", 0, limit))
    if space > 0:
        return space + 1, True, True
    cut = limit
    while cut > 0 and (buffer[cut] & 0xC0) == 0x80:
        cut -= 1
    return max(cut, 1), True, True


def _last_line(data: bytes) -> bytes:
    stripped = data[:-1] if data.endswith(b"\n") else data
    return stripped[stripped.rfind(b"\n") + 1:]


def _first_line(data: bytes) -> bytes | None:
    newline = data.find(b"\n")
    return None if newline < 0 else data[:newline]


def _is_blank_line(line: bytes | None) -> bool:
    return line is not None and not line.decode("utf-8", "ignore").strip()


# -- parsing: a piece into documents (workers) -------------------------------------------------


@dataclass
class TextStats:
    """What reading found; summed over chunks into the manifest."""

    bytes: int = 0
    documents: int = 0
    sentences: int = 0
    replaced_characters: int = 0
    title_lines: int = 0
    split_lines: int = 0

    def add(self, other: "TextStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_TITLE_LINE = re.compile(r"\[[^\[\]\n]+\]\s*")
_LINE_BREAKS = re.compile(r"\r\n?")


def decode_piece(piece: Piece, strict: bool) -> tuple[str, int]:
    """UTF-8 text of a piece with LF line ends, and how many invalid sequences were replaced."""
    data = piece.data
    try:
        text = data.decode("utf-8")
        replaced = 0
    except UnicodeDecodeError as error:
        if strict:
            line = piece.first_line + data.count(b"\n", 0, error.start)
            bad = data[error.start:error.end].hex()
            raise BertforgeError(f"invalid UTF-8 (byte 0x{bad}); run without --strict to replace "
                                 f"such bytes with U+FFFD", path=piece.path, line=line) from None
        text = data.decode("utf-8", "replace")
        # A valid U+FFFD in the input is the 3 bytes EF BF BD; every other one is a replacement.
        replaced = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    if piece.file_start and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = _LINE_BREAKS.sub("\n", text)
    return text, replaced


def parse_piece(piece: Piece, *, strict: bool = False, text_field: str = "text"
                ) -> tuple[list[list[str]], TextStats, bool]:
    """Documents (lists of sentences) of a piece, its stats, and whether its first document
    continues the previous piece's last one (then it is not counted as a new document)."""
    stats = TextStats(bytes=len(piece.data))
    text, stats.replaced_characters = decode_piece(piece, strict)
    stats.split_lines = int(piece.splits_line)
    if piece.layout == "jsonl":
        documents = _parse_jsonl(text, piece, text_field)
        continues = False
    else:
        if piece.file_start:
            first_end = text.find("\n")
            first = text if first_end < 0 else text[:first_end]
            if _TITLE_LINE.fullmatch(first):
                text = "" if first_end < 0 else text[first_end + 1:]
                stats.title_lines = 1
        continues = piece.continues_document and bool(text[:text.find("\n") + 1 or None].strip())
        documents = _parse_blocks(text, split=piece.layout == "paragraphs")
    stats.documents = len(documents) - (1 if continues and documents else 0)
    stats.sentences = sum(len(document) for document in documents)
    return documents, stats, continues


def _parse_blocks(text: str, split: bool) -> list[list[str]]:
    documents: list[list[str]] = []
    block: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped:
            block.append(stripped)
        elif block:
            documents.append(block)
            block = []
    if block:
        documents.append(block)
    if not split:
        return documents
    result = []
    for block in documents:
        sentences = split_sentences(" ".join(block))
        if sentences:
            result.append(sentences)
    return result


def _parse_jsonl(text: str, piece: Piece, text_field: str) -> list[list[str]]:
    documents: list[list[str]] = []
    for number, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        where = piece.first_line + number
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BertforgeError(f"invalid JSON ({error.msg} at column {error.colno})",
                                 path=piece.path, line=where) from None
        if not isinstance(record, dict) or text_field not in record:
            raise BertforgeError(f"JSON record has no {text_field!r} field (set --text-field)",
                                 path=piece.path, line=where)
        value = record[text_field]
        if not isinstance(value, str):
            raise BertforgeError(f"JSON field {text_field!r} is {type(value).__name__}, expected a string",
                                 path=piece.path, line=where)
        sentences = [sentence for paragraph in _LINE_BREAKS.sub("\n", value).split("\n")
                     for sentence in split_sentences(paragraph)]
        if sentences:
            documents.append(sentences)
    return documents


# -- sentence splitting ------------------------------------------------------------------------

_ABBREVIATIONS = (
    "mr mrs ms dr st jr sr prof rev hon gen col capt lt sgt messrs mme mlle vs etc e.g i.e a.m p.m cf viz "
    "vol fig ch pp jan feb apr jun jul aug sept oct nov dec").split()
"""Words whose period does not end a sentence (matched case-insensitively after a word boundary)."""


def _sentence_end_pattern() -> re.Pattern[str]:
    # `re` lookbehinds must have a fixed width, so the abbreviations are grouped by length. The
    # leading lookahead makes the engine skip every position that is not punctuation before it
    # evaluates the lookbehinds (3x faster on English prose).
    by_length: dict[int, list[str]] = {}
    for word in _ABBREVIATIONS:
        by_length.setdefault(len(word), []).append(re.escape(word))
    not_abbreviation = "".join(rf"(?<!\b(?i:{'|'.join(words)}))" for words in by_length.values())
    not_initial = r"(?<!\b[A-Z])"  # "G. K. Chesterton"
    english = rf"(?=[.!?]){not_abbreviation}{not_initial}[.!?]+[\"'”’)\]»]*(?=\s)"
    chinese = r"[。！？；]+[”’」』）》\"']*"  # no space follows; closing quotes stay with the sentence
    return re.compile(f"({english}|{chinese})")


_SENTENCE_END = _sentence_end_pattern()


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph; rules in the module docstring."""
    # A split on the capturing pattern runs in C and returns [body, end, body, end, ..., tail].
    parts = _SENTENCE_END.split(text.replace("\n", " "))
    sentences = [body + end for body, end in zip(parts[0::2], parts[1::2])]
    sentences.append(parts[-1])
    return [sentence for sentence in (piece.strip() for piece in sentences) if sentence]
