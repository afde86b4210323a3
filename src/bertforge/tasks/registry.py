"""The task registry: task name -> `Task` class.

A task module registers its class with `@register` when it is imported. The built-in tasks
(`BUILTIN`) are imported on first use, since they import torch; any other module (a plugin, a
test) registers its own task by importing `register` and decorating its class, after which
`bertforge finetune --task NAME`, evaluate, predict, export and serve all accept it:

    @dataclass
    class MySettings(TaskSettings):      # the task's settings.* (max_length, format are shared)
        threshold: float = 0.5

    class BertForMyTask(BertPreTrainedModel):
        architecture = "BertForMyTask"   # written to config.json, read back by kind_of
        hf_key_map = {"scorer": "scorer"}  # head module paths, ours -> Hugging Face's

    @register
    class MyTask(Task):
        name, settings_class, model_class = "my_task", MySettings, BertForMyTask
        primary_metric, onnx_outputs = "accuracy", ("logits",)
        ...                              # read, featurize, collate, evaluate, predict, serve_api, ...

tests/tasks_extra/pair_match.py is a complete example.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from bertforge.errors import BertforgeError

if TYPE_CHECKING:
    from bertforge.tasks.task import Task

BUILTIN: dict[str, str] = {
    "classify": "bertforge.tasks.classify",
    "ner": "bertforge.tasks.ner",
    "qa": "bertforge.tasks.qa",
}
"""Built-in task name -> the module that registers it (imported on demand)."""

_REGISTERED: dict[str, type["Task"]] = {}


def register(task_class: type["Task"]) -> type["Task"]:
    """Register a `Task` subclass under its `name` (a class decorator; returns the class)."""
    name = task_class.name
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise BertforgeError(f"a task needs a name of letters, digits, '_' or '-', got {name!r}")
    for attribute in ("model_class", "settings_class"):
        if not hasattr(task_class, attribute):
            raise BertforgeError(f"task {name!r} declares no {attribute}")
    if not hasattr(task_class.model_class, "hf_key_map") or not hasattr(task_class.model_class, "architecture"):
        raise BertforgeError(f"the head of task {name!r} must carry `architecture` and `hf_key_map`")
    existing = _REGISTERED.get(name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (task_class.__module__,
                                                                                 task_class.__qualname__):
        raise BertforgeError(f"task {name!r} is already registered by {existing.__module__}")
    _REGISTERED[name] = task_class
    return task_class


def task_names() -> list[str]:
    """Every task name: the built-in ones, then those registered since (none imported)."""
    return list(BUILTIN) + [name for name in _REGISTERED if name not in BUILTIN]


def task_class(name: str) -> type["Task"]:
    if name not in _REGISTERED and name in BUILTIN:
        import_module(BUILTIN[name])
    if name not in _REGISTERED:
        raise BertforgeError(f"unknown task {name!r}; choose one of {', '.join(task_names())}")
    return _REGISTERED[name]


def get_task(name: str) -> "Task":
    """A fresh instance of the task registered as `name`."""
    return task_class(name)()


def all_tasks() -> list["Task"]:
    """Every task, built-in ones imported."""
    return [get_task(name) for name in task_names()]


def task_for_architecture(architecture: str) -> "Task | None":
    """The task whose head is the Hugging Face `architecture`, or None."""
    for task in all_tasks():
        if task.model_class.architecture == architecture:
            return task
    return None
