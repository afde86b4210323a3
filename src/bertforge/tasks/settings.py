"""`TaskSettings`: the settings every fine-tuning task shares. Each task module declares its own
subclass with the settings only it reads (`ClassifySettings`, `NerSettings`, `QaSettings`), and
a recipe names them under its `settings:` section. Kept apart from the task modules (no numpy
or torch here) so that the CLI can read a recipe without importing them."""

from __future__ import annotations

from dataclasses import dataclass

from bertforge.errors import BertforgeError


@dataclass
class TaskSettings:
    """How a task reads its files and builds features (fields common to every task)."""

    format: str = "auto"
    """The file format; each task lists the ones it reads (`auto` decides by extension and first line)."""
    max_length: int = 128
    """Tokens per feature, [CLS] and [SEP] included."""

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise BertforgeError(f"settings.max_length must be at least 8, got {self.max_length}")
