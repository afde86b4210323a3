"""The built-in corpus: pydoc topics plus every standard-library file's docstrings and comment
paragraphs, tests and GUI demos left out; read with ast and tokenize, never imported."""

from __future__ import annotations

import sysconfig

from bertforge.data import builtin

SOURCE = '''"""A module that parses the configuration files of the example service."""

# The parser reads one section at a time and keeps the order of the keys,
# because later keys may refer to earlier ones.
import os  # noqa

# x = 1


def load(path):
    """Return the settings found in the file at path, as a dictionary of strings."""
    # type: ignore
    return {}
'''


def test_comment_paragraphs_join_consecutive_lines_and_drop_code_and_pragmas():
    paragraphs = builtin._comments(SOURCE)
    assert paragraphs == ["The parser reads one section at a time and keeps the order of the keys, "
                          "because later keys may refer to earlier ones."]


def test_a_source_file_is_its_docstrings_then_its_comments(tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    text = builtin._source_text(path).splitlines()
    assert text[0].startswith("A module that parses") and text[1].startswith("Return the settings")
    assert text[2].startswith("The parser reads")
    (tmp_path / "broken.py").write_text("def (:\n")
    assert builtin._source_text(tmp_path / "broken.py") == ""


def test_the_corpus_reads_every_file_but_tests_and_never_imports(tmp_path, monkeypatch):
    stdlib = tmp_path / "lib"
    long_doc = "Explains in detail how the package reads, checks and writes its records. " * 4
    for relative in ("alpha.py", "package/__init__.py", "package/helpers.py", "test/test_alpha.py",
                     "package/tests/test_helpers.py", "idlelib/editor.py"):
        path = stdlib / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""{relative}: {long_doc}"""\nraise SystemExit("imported")\n')
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(stdlib)})
    counts = builtin.write_builtin_corpus(tmp_path / "corpus.txt")
    text = (tmp_path / "corpus.txt").read_text()
    for kept in ("alpha.py:", "package/__init__.py:", "package/helpers.py:"):
        assert kept in text
    for skipped in ("test_alpha", "test_helpers", "editor.py"):
        assert skipped not in text
    import pydoc_data.topics

    assert counts["documents"] == 3 + sum(len(builtin._clean(t)) > 200 for t in pydoc_data.topics.topics.values())
