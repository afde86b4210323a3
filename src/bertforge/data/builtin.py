"""The built-in default corpus: text every Python installation carries.

It is the reference documentation in `pydoc_data.topics` (about 0.5 MB, 79 topics) plus the
docstrings of the standard library's own source files, read with `ast` (never imported, so
no module runs). Each topic and each module becomes one document, with a blank line between
documents, which is the plain-paragraph layout `bertforge data prepare` reads.

The fill-mask demo sentences below were written for bertforge and do not occur in that text,
so the demo shows what the model learned rather than what it memorized.
"""

from __future__ import annotations

import ast
import re
import sys
import sysconfig
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


def _module_docstrings(path: Path, limit: int = 200_000) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) > 40:
                parts.append(doc)
    return _clean("\n".join(parts))[:limit]


def write_builtin_corpus(path: Path, with_docstrings: bool = True) -> dict[str, int]:
    """Write the corpus to `path` (atomically); return counts of documents and bytes."""
    import pydoc_data.topics

    documents = [_clean(text) for _, text in sorted(pydoc_data.topics.topics.items())]
    if with_docstrings:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for name in sorted(sys.stdlib_module_names):
            candidates = [stdlib / f"{name}.py", stdlib / name / "__init__.py"]
            source = next((candidate for candidate in candidates if candidate.is_file()), None)
            if source is not None:
                documents.append(_module_docstrings(source))
    documents = [document for document in documents if len(document) > 200]
    with atomic_open(path, "w") as handle:
        handle.write("\n\n".join(documents) + "\n")
    return {"documents": len(documents), "bytes": path.stat().st_size}
