"""Fine-tuning tasks: one registered module per task (settings, head and its key map, reader,
features, collate, metric, predictions, ONNX outputs, serve schema; see `bertforge.tasks.task`).

`get_task(name)` returns the task object the `finetune`, `evaluate` and `predict` commands,
export and serve use; a new task is one new module whose `Task` subclass is decorated with
`@register` (see `bertforge.tasks.registry`).

Modules: `task` (the interface), `registry`, `settings` (the shared settings), `reading`
(files, labels), `windows` (tokenizing into windows), `features` (packed features, collate,
batches), `running` (running a model over features), `loading` (what a model directory holds,
loaded on the torch or onnx backend), `onnx_backend` (onnxruntime behind the model interface),
`finetune` (fine-tune, evaluate, predict).
"""

from __future__ import annotations

from bertforge.tasks.registry import get_task, register, task_names

__all__ = ["get_task", "register", "task_names"]
