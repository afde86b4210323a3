"""The `Task` interface: everything one fine-tuning task declares, in one class.

A task module (classify.py, ner.py, qa.py, or one outside the package) defines a `Task`
subclass and registers it (`bertforge.tasks.registry.register`). The class declares:

- `name`, `help`: the `--task` value and its one-line description;
- `settings_class`: its typed settings dataclass (a `TaskSettings` subclass), the `settings.*`
  section of a recipe;
- `model_class`: its head model; the class carries `architecture` (the Hugging Face
  architecture name written to and read from config.json) and `hf_key_map` (its head's module
  paths, ours -> Hugging Face's, which `bertforge.convert` reads);
- `primary_metric` / `primary(config)`: the dev metric that keeps the best model;
- `onnx_outputs`: the fields of the head's output exported to ONNX, in order;
- `needs_id2label`: whether a fine-tuned directory must carry a label map;
- reading (`read`, `read_inputs`, `inputs_from_texts`), labels (`label_names`, `configure`,
  `check_labels`), features (`featurize`, `collate`), `evaluate` (the metric) and `predict`
  (the prediction records);
- serving: `serve_api()` builds the pydantic request and prediction models (pydantic is
  imported only there, so fine-tuning never needs it), `serve_inputs(body)` turns a request
  into the task's inputs, `serve_title` names what the model is in the 404 of an unserved task.

Flow at fine-tuning time: `read` the files -> `label_names` from the training examples ->
`configure` the BertConfig (label maps, problem type) -> `featurize` -> train `model_class` on
batches made by `collate` -> `evaluate` on dev (metrics + per-example predictions).
At prediction time: `read_inputs` (a file of raw inputs) or `inputs_from_texts` -> `predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from bertforge.config import build_dataclass
from bertforge.errors import BertforgeError
from bertforge.tasks.features import collate_packed
from bertforge.tasks.settings import TaskSettings

if TYPE_CHECKING:
    import torch


@dataclass
class Evaluation:
    """What `Task.evaluate` returns: the metrics and one prediction record per example."""

    metrics: dict[str, float]
    predictions: list[dict[str, Any]]


class RequestError(BertforgeError):
    """A serve request that is well-formed JSON but inconsistent (answered 422 validation_error)."""


@dataclass
class ServeApi:
    """A task's HTTP API, built by `Task.serve_api` (pydantic models)."""

    request: type
    """The request body model (unknown fields forbidden)."""
    prediction: type
    """The model of one prediction record; the response is {"model", "predictions": [...]}."""
    summary: str
    """The one-line description of the route in the OpenAPI docs."""


@dataclass
class ServeCall:
    """One request turned into task inputs."""

    items: list[Any]
    """The task's inputs, as `predict` takes them."""
    params: tuple = ()
    """Requests with equal params may share a micro-batch."""
    texts: list[list[str]] = field(default_factory=list)
    """Groups of strings checked against the server's limits (count and characters) one group at a time."""


class Task:
    """One fine-tuning task. Subclasses fill in every method; see the module docstring."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    settings_class: ClassVar[type[TaskSettings]] = TaskSettings
    model_class: ClassVar[type]
    primary_metric: ClassVar[str] = ""
    """The metric that picks the best checkpoint (higher is better)."""
    onnx_outputs: ClassVar[tuple[str, ...]] = ()
    needs_id2label: ClassVar[bool] = True
    serve_title: ClassVar[str] = ""
    """What a fine-tuned model of this task is, in "the model is not a fine-tuned <title>"."""

    # -- settings ---------------------------------------------------------------------------

    def settings(self, given: Mapping[str, Any] | TaskSettings | None = None,
                 saved: Mapping[str, Any] | None = None) -> TaskSettings:
        """This task's settings: `saved` (a model's record; keys this task does not know are
        dropped), then `given` on top (a mapping of `settings.*` keys, every one checked, or a
        settings object, whose fields that differ from their defaults count as given)."""
        merged = {key: value for key, value in (saved or {}).items() if key in self._setting_names()}
        if isinstance(given, TaskSettings):
            defaults = type(given)()
            given = {name: getattr(given, name) for name in type(given).__dataclass_fields__
                     if getattr(given, name) != getattr(defaults, name)}
        merged.update(given or {})
        return build_dataclass(self.settings_class, merged, prefix="settings")

    def _setting_names(self) -> set[str]:
        return set(self.settings_class.__dataclass_fields__)

    # -- data -------------------------------------------------------------------------------

    def read(self, path: str | Path, settings: Any) -> list[Any]:
        raise NotImplementedError

    def primary(self, config: Any) -> str:
        """The metric that picks the best checkpoint for this model (higher is better)."""
        return self.primary_metric

    def label_names(self, examples: list[Any], settings: Any) -> list[str] | None:
        """The label set learned from the training examples (None: the task has no label map)."""
        raise NotImplementedError

    def configure(self, config: Any, labels: list[str] | None, settings: Any) -> Any:
        """The BertConfig for the head: `id2label`, `problem_type`."""
        raise NotImplementedError

    def check_labels(self, examples: list[Any], config: Any, path: str | Path) -> None:
        """Warn about gold labels the model cannot predict (unseen in training)."""

    def featurize(self, examples: list[Any], tokenizer: Any, config: Any, settings: Any, training: bool) -> Any:
        """Features of `examples`: `bertforge.tasks.features.Features`, or any object with
        `__len__` and `lengths` that `collate` reads."""
        raise NotImplementedError

    def collate(self, features: Any, indices: np.ndarray, pad_token_id: int) -> dict[str, "torch.Tensor"]:
        """The batch of `features[indices]`, keyword arguments of `model_class.forward`."""
        return collate_packed(features, indices, pad_token_id)

    def evaluation_features(self, examples: list[Any], tokenizer: Any, config: Any, settings: Any) -> Any:
        """Features `evaluate` can reuse across the dev evaluations of a run (None: it builds its own)."""
        return None

    def evaluate(self, model: Any, tokenizer: Any, examples: list[Any], settings: Any,
                 batch_size: int = 64, features: Any = None) -> Evaluation:
        raise NotImplementedError

    def read_inputs(self, path: str | Path, settings: Any) -> list[Any]:
        """Raw inputs for `predict` from a file (labels, when present, are ignored)."""
        raise NotImplementedError

    def inputs_from_texts(self, texts: list[str], settings: Any, *, context: str | None = None,
                          text_pair: str | None = None) -> list[Any]:
        """Inputs from command-line texts; each task reads the companion text it needs."""
        raise NotImplementedError

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], settings: Any,
                batch_size: int = 64) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- serving ----------------------------------------------------------------------------

    def serve_api(self) -> ServeApi:
        raise NotImplementedError

    def serve_inputs(self, body: Any, settings: Any) -> ServeCall:
        """A validated request body (of `serve_api().request`) as task inputs; raise RequestError
        for a body pydantic cannot reject alone (lists of different lengths ...)."""
        raise NotImplementedError

    @property
    def route(self) -> str:
        return f"/v1/{self.name}"
