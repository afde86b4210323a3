"""Fine-tuning tasks: one module per task (reader, features, head, loss, metric, postprocessing).

`get_task(name)` returns the task object the `finetune`, `evaluate` and `predict` commands use;
a new task is one new module plus one line in `TASKS`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from bertforge.errors import BertforgeError

if TYPE_CHECKING:
    from bertforge.tasks.common import Task

TASKS: dict[str, tuple[str, str]] = {
    "classify": ("bertforge.tasks.classify", "ClassifyTask"),
    "ner": ("bertforge.tasks.ner", "NerTask"),
    "qa": ("bertforge.tasks.qa", "QuestionAnsweringTask"),
}
"""Task name -> (module, class). Modules are imported on demand: they import torch."""

ARCHITECTURES = {
    "BertForSequenceClassification": "classify",
    "BertForTokenClassification": "ner",
    "BertForQuestionAnswering": "qa",
}
"""The Hugging Face architecture a fine-tuned directory records -> the task that reads it."""


def get_task(name: str) -> "Task":
    if name not in TASKS:
        raise BertforgeError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module_name, class_name = TASKS[name]
    return getattr(import_module(module_name), class_name)()


__all__ = ["TASKS", "ARCHITECTURES", "get_task"]
