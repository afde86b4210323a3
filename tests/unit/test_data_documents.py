"""Reading raw text: inputs, layouts, cleaning, bad bytes, chunk cuts, sentence splitting."""

from __future__ import annotations

import gzip
import json

import pytest

from bertforge.data.documents import (
    InputFile,
    iter_chunks,
    iter_pieces,
    parse_piece,
    resolve_inputs,
    split_sentences,
)
from bertforge.errors import BertforgeError


def read_documents(path, layout="paragraphs", chunk_bytes=1 << 20, strict=False, text_field="text"):
    """Every document of one file, with summed stats, through the same path prepare takes."""
    file = InputFile(path=path, layout=layout, size=path.stat().st_size)
    documents, totals = [], {"documents": 0, "sentences": 0, "replaced_characters": 0, "title_lines": 0}
    for chunk in iter_chunks([file], chunk_bytes):
        for piece in chunk.pieces:
            docs, stats, _ = parse_piece(piece, strict=strict, text_field=text_field)
            documents.extend(docs)
            for key in totals:
                totals[key] += getattr(stats, key)
    return documents, totals


# -- sentence splitting -------------------------------------------------------------------------


def test_english_sentences_keep_abbreviations_initials_and_quotes():
    text = ('Mr. Smith met Dr. Watson at 5 p.m. yesterday. "Is it you?" he asked. '
            "G. K. Chesterton wrote it, e.g. in 1908! Then it ended")
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Watson at 5 p.m. yesterday.",
        '"Is it you?"',
        "he asked.",
        "G. K. Chesterton wrote it, e.g. in 1908!",
        "Then it ended",
    ]


def test_chinese_sentences_split_after_full_stops_and_keep_closing_quotes():
    text = "满纸荒唐言，一把辛酸泪。都云作者痴，谁解其中味！“石兄，你说是么？”他道；好"
    assert split_sentences(text) == ["满纸荒唐言，一把辛酸泪。", "都云作者痴，谁解其中味！",
                                     "“石兄，你说是么？”", "他道；", "好"]


def test_sentence_split_needs_a_space_after_english_punctuation():
    assert split_sentences("version 3.5 of e.g.this works. Next") == ["version 3.5 of e.g.this works.", "Next"]
    assert split_sentences("   ") == []


# -- inputs ---------------------------------------------------------------------------------------


def test_resolve_inputs_files_directories_globs(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('{"text": "y"}\n')
    (tmp_path / ".hidden").write_text("z\n")
    (tmp_path / "sub" / ".cache").mkdir()
    (tmp_path / "sub" / ".cache" / "c.txt").write_text("z\n")
    files = resolve_inputs([tmp_path])
    assert [file.path.name for file in files] == ["a.txt", "b.jsonl"]
    assert [file.layout for file in files] == ["paragraphs", "jsonl"]
    assert [file.path.name for file in resolve_inputs([str(tmp_path / "*.txt"), tmp_path / "a.txt"])] == ["a.txt"]
    assert [file.layout for file in resolve_inputs([tmp_path], layout="lines")] == ["lines", "lines"]


@pytest.mark.parametrize("given, message", [("missing.txt", "input not found"),
                                            ("nothing-*.txt", "no file matches"),
                                            ("emptydir", "holds no files")])
def test_resolve_inputs_errors_name_the_input(tmp_path, given, message):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(BertforgeError, match=message) as error:
        resolve_inputs([str(tmp_path / given)])
    assert given in str(error.value)


# -- layouts and cleaning ---------------------------------------------------------------------------


def test_paragraph_layout_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("First line of doc one. It goes\non here.\n\n\n  \nDoc two only.\n")
    documents, totals = read_documents(path)
    assert documents == [["First line of doc one.", "It goes on here."], ["Doc two only."]]
    assert totals["documents"] == 2 and totals["sentences"] == 3


def test_lines_layout_is_one_sentence_per_line(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("One. Still one.\nTwo\n\nThree\n")
    documents, _ = read_documents(path, layout="lines")
    assert documents == [["One. Still one.", "Two"], ["Three"]]


def test_crlf_bom_and_title_line(tmp_path):
    lf = tmp_path / "lf.txt"
    lf.write_text("[Emma by Jane Austen 1816]\n\nVOLUME I\n\nEmma Woodhouse, handsome. Clever\nand rich.\n")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbf" + lf.read_bytes().replace(b"\n", b"\r\n"))
    expected = [["VOLUME I"], ["Emma Woodhouse, handsome.", "Clever and rich."]]
    for path in (lf, crlf):
        documents, totals = read_documents(path)
        assert documents == expected
        assert totals["title_lines"] == 1 and totals["documents"] == 2


def test_title_line_only_when_first_and_bracketed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Not a [title]\n\n[Also not a title]\n")
    documents, totals = read_documents(path)
    assert documents == [["Not a [title]"], ["[Also not a title]"]]
    assert totals["title_lines"] == 0


def test_gzip_is_read_by_its_magic_bytes(tmp_path):
    text = "Alpha beta. Gamma.\n\nDelta.\n"
    plain = tmp_path / "c.txt"
    plain.write_text(text)
    packed = tmp_path / "c.data"  # no .gz suffix: the magic bytes decide
    packed.write_bytes(gzip.compress(text.encode()))
    assert read_documents(packed)[0] == read_documents(plain)[0] == [["Alpha beta.", "Gamma."], ["Delta."]]


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"hello world\n" * 100)[:30])
    with pytest.raises(BertforgeError, match="gzip") as error:
        read_documents(path)
    assert "bad.gz" in str(error.value)


def test_invalid_utf8_is_replaced_and_counted_exactly(tmp_path):
    path = tmp_path / "latin1.txt"
    # Two invalid sequences (Latin-1 é, a lone continuation byte) and one genuine U+FFFD.
    path.write_bytes("Caf".encode() + b"\xe9 ok. Bad \x80 byte.\n\nReal \xef\xbf\xbd stays.\n")
    documents, totals = read_documents(path)
    assert totals["replaced_characters"] == 2
    assert documents[0] == ["Caf\ufffd ok.", "Bad \ufffd byte."]
    assert documents[1] == ["Real \ufffd stays."]


def test_invalid_utf8_under_strict_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine\n\nalso fine\ncaf\xe9\n")
    with pytest.raises(BertforgeError, match="invalid UTF-8") as error:
        read_documents(path, strict=True)
    assert f"{path}:4:" in str(error.value)


def test_binary_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(BertforgeError, match="binary file") as error:
        read_documents(path)
    assert "image.png" in str(error.value)


def test_jsonl_layout_and_its_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"body": "One. Two!\nThree"}) + "\n\n" + json.dumps({"body": ""}) + "\n"
                    + json.dumps({"body": "四。五"}) + "\n")
    documents, totals = read_documents(path, layout="jsonl", text_field="body")
    assert documents == [["One.", "Two!", "Three"], ["四。", "五"]]
    assert totals["documents"] == 2
    with pytest.raises(BertforgeError, match="no 'text' field") as error:
        read_documents(path, layout="jsonl")
    assert f"{path}:1:" in str(error.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": "unterminated\n')
    with pytest.raises(BertforgeError, match="invalid JSON") as error:
        read_documents(broken, layout="jsonl")
    assert f"{broken}:2:" in str(error.value)


# -- chunking -------------------------------------------------------------------------------------


def test_pieces_reassemble_the_file_and_cut_at_blank_lines(tmp_path):
    paragraphs = [f"Paragraph {index} has a sentence. And another one here." for index in range(200)]
    path = tmp_path / "many.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    file = InputFile(path=path, layout="paragraphs", size=path.stat().st_size)
    pieces = list(iter_pieces(file, 500))
    assert len(pieces) > 10
    assert b"".join(piece.data for piece in pieces) == path.read_bytes()
    assert all(len(piece.data) <= 500 for piece in pieces)
    assert not any(piece.continues_document for piece in pieces)
    documents, totals = read_documents(path, chunk_bytes=500)
    assert totals["documents"] == 200 and len(documents) == 200
    assert documents == read_documents(path)[0]


def test_document_longer_than_a_chunk_is_cut_at_lines_and_counted_once(tmp_path):
    lines = [f"Line {index} of one long document." for index in range(100)]
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines) + "\n\nA second document.\n")
    documents, totals = read_documents(path, chunk_bytes=300)
    assert totals["documents"] == 2
    assert totals["sentences"] == 101
    assert [sentence for document in documents for sentence in document] == lines + ["A second document."]


def test_over_long_line_is_split_not_dropped(tmp_path):
    words = [f"word{index}" for index in range(3000)]
    path = tmp_path / "oneline.txt"
    path.write_text(" ".join(words))  # ~26 kB without a single newline
    documents, totals = read_documents(path, chunk_bytes=1000)
    assert totals["documents"] == 1
    assert " ".join(sentence for document in documents for sentence in document).split() == words


def test_line_without_spaces_is_cut_on_a_character_boundary(tmp_path):
    path = tmp_path / "zh.txt"
    text = "红楼梦" * 500  # 1500 characters, 4500 bytes, no space and no newline
    path.write_text(text)
    documents, totals = read_documents(path, chunk_bytes=1000)
    assert totals["replaced_characters"] == 0
    assert "".join(sentence for document in documents for sentence in document) == text


def test_chunks_pack_pieces_of_several_files(tmp_path):
    files = []
    for index in range(5):
        path = tmp_path / f"f{index}.txt"
        path.write_text(f"File {index}. " * 20 + "\n")
        files.append(InputFile(path=path, layout="paragraphs", size=path.stat().st_size))
    chunks = list(iter_chunks(files, 700))
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) < 5
    assert sum(len(chunk.pieces) for chunk in chunks) == 5
    assert [chunk.digest() for chunk in chunks] == [chunk.digest() for chunk in iter_chunks(files, 700)]
