"""The one user-facing error type.

A `BertforgeError` means the user gave us something we cannot use (a missing file, a
malformed line, a config that disagrees with the weights). The CLI prints it on one line as
``error: <message>`` and exits with status 2. Anything else that escapes is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class BertforgeError(Exception):
    """A user error. The message names the file and, where it applies, the line or record."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        location = ""
        if path is not None:
            location = str(path)
            if line is not None:
                location += f":{line}"
            location += ": "
        # One line, always: the CLI prints it as `error: <message>`.
        super().__init__((location + message).replace("\n", " "))
        self.path = None if path is None else Path(path)
        self.line = line
