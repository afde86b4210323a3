"""The built-in default corpus: text every Python installation carries.

It is the reference documentation in `pydoc_data.topics` (about 0.5 MB, 79 topics) plus, from
every source file of the standard library (its tests, IDLE, lib2to3 and turtledemo left out),
the docstrings, read with `ast` (never imported, so no module runs), and the comments of three
words or more, read with `tokenize`, consecutive comment lines joined into one paragraph. Each
topic and each file becomes one document, with a blank line between documents, which is the
plain-paragraph layout `bertforge data prepare` reads: about 3.3 MB and 550 documents on
Python 3.11.

Why the comments and every file rather than the top-level modules' docstrings alone (1.4 MB,
246 documents): the main job trains for minutes on this text and is scored on documents it
holds out, and more, more varied text narrowed the gap between training and held-out loss
(benchmarks/results/pretrain_sweep.md).

The fill-mask demo sentences below were written for bertforge and do not occur in that text,
so the demo shows what the model learned rather than what it memorized.
"""

from __future__ import annotations

import ast
import io
import re
import sysconfig
import tokenize
from pathlib import Path

from bertforge.fileio import atomic_open

FILL_MASK_SENTENCES = [
    "The [MASK] statement is used to leave a loop early.",
    "A dictionary maps each key to a [MASK].",
    "If the file does not exist, an [MASK] is raised.",
    "The function returns a new [MASK] containing the items in sorted order.",
    "Use the [MASK] keyword to define a new class.",
    "This method is called when the object is [MASK] by the garbage collector.",
]


def _clean(text: str) -> str:
    """One document as paragraphs without blank lines (blank lines separate documents)."""
    lines = [line.strip() for line in text.splitlines()]
    text = "\n".join(line for line in lines if line and not re.fullmatch(r"[*=\-~^\"'#]{3,}", line))
    return text.strip()


SKIPPED_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
"""Parts of the standard library's tree whose text is not prose about Python: test suites
(fixtures, sample data), IDLE's and turtledemo's GUI code, lib2to3's grammar, and third-party packages."""


def _docstrings(tree: ast.AST) -> list[str]:
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) > 40:
                parts.append(doc)
    return parts


def _comments(source: str) -> list[str]:
    """Comment paragraphs: runs of consecutive comment lines of at least three words each
    (which leaves out `# noqa`, `# type: ignore` and commented code like `# x = 1`)."""
    paragraphs, current, last_line = [], [], -2
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type != tokenize.COMMENT:
                continue
            if token.start[0] != last_line + 1 and current:
                paragraphs.append(" ".join(current))
                current = []
            text = token.string.lstrip("#").strip()
            if len(re.findall(r"[A-Za-z]{2,}", text)) >= 3:
                current.append(text)
            last_line = token.start[0]
    except (tokenize.TokenError, SyntaxError):
        pass
    if current:
        paragraphs.append(" ".join(current))
    return [paragraph for paragraph in paragraphs if len(paragraph) > 60]


def _source_text(path: Path) -> str:
    """One source file's docstrings and comment paragraphs, as one document ("" if unreadable)."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return ""
    return _clean("\n".join(_docstrings(tree) + _comments(source)))


def write_builtin_corpus(path: Path) -> dict[str, int]:
    """Write the corpus to `path` (atomically); return counts of documents and bytes."""
    import pydoc_data.topics

    documents = [_clean(text) for _, text in sorted(pydoc_data.topics.topics.items())]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for source in sorted(stdlib.rglob("*.py")):
        if not SKIPPED_PARTS & set(source.relative_to(stdlib).parts):
            documents.append(_source_text(source))
    documents = [document for document in documents if len(document) > 200]
    with atomic_open(path, "w") as handle:
        handle.write("\n\n".join(documents) + "\n")
    return {"documents": len(documents), "bytes": path.stat().st_size}
