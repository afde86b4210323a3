"""What a model directory holds, and loading it for inference.

A directory in Hugging Face layout is one of:
- a fine-tuned task model (`classify`, `ner`, `qa`): config.json names the architecture
  (BertForSequenceClassification, ...) or carries bertforge's `finetuning` record; it is loaded
  through `bertforge.tasks.finetune.load_finetuned`, the same path `bertforge predict` takes;
- a pretrained model with its masked-LM head (`masked_lm`: BertForPreTraining or
  BertForMaskedLM, which is what `bertforge pretrain` writes): loaded as BertForMaskedLM, since
  serving, export and attention maps have no use for the next-sentence head;
- a bare encoder (`encoder`: BertModel, e.g. sentence-transformers checkpoints).

Every kind has an encoder (`encoder_of`), so every kind can embed text and show attention.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError

if TYPE_CHECKING:
    from torch import nn

    from bertforge.tasks.common import Task, TaskSettings

Kind = Literal["classify", "ner", "qa", "masked_lm", "encoder"]
TASK_KINDS = ("classify", "ner", "qa")
MASKED_LM_ARCHITECTURES = ("BertForPreTraining", "BertForMaskedLM")


def read_config(directory: str | Path) -> BertConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise BertforgeError("model directory not found", path=directory)
    return BertConfig.from_json_file(directory / "config.json")


def kind_of(config: BertConfig) -> Kind:
    """The kind of model a config.json describes (see the module docstring)."""
    from bertforge.tasks import ARCHITECTURES
    from bertforge.tasks.finetune import saved_settings

    saved_task, _ = saved_settings(config)
    if saved_task in TASK_KINDS:
        return saved_task  # type: ignore[return-value]
    architectures = config.extra.get("architectures") or []
    for architecture in architectures:
        if architecture in ARCHITECTURES:
            return ARCHITECTURES[architecture]  # type: ignore[return-value]
    if any(architecture in MASKED_LM_ARCHITECTURES for architecture in architectures):
        return "masked_lm"
    return "encoder"


@dataclass
class LoadedModel:
    """A model directory ready for inference (eval mode, on its device)."""

    directory: Path
    kind: Kind
    model: "nn.Module"
    config: BertConfig
    tokenizer: Any
    task: "Task | None" = None
    settings: "TaskSettings | None" = None
    """The task settings the model was fine-tuned with (task kinds only)."""

    @property
    def encoder(self) -> "nn.Module":
        return encoder_of(self.model)


def encoder_of(model: "nn.Module") -> "nn.Module":
    """The BertModel inside a task or masked-LM model (or the model itself)."""
    from bertforge.model import BertModel

    return model if isinstance(model, BertModel) else model.bert  # type: ignore[return-value]


def load_model(directory: str | Path, device: str = "cpu", task_name: str | None = None,
               settings: "TaskSettings | None" = None) -> LoadedModel:
    """Load whatever `directory` holds (see the module docstring) in eval mode on `device`."""
    import torch

    from bertforge.tasks.common import TaskSettings
    from bertforge.tasks.finetune import load_finetuned, load_tokenizer

    directory = Path(directory)
    config = read_config(directory)
    kind = kind_of(config) if task_name is None else task_name
    if kind in TASK_KINDS:
        task, model, tokenizer, merged = load_finetuned(directory, kind, settings or TaskSettings(), device)
        return LoadedModel(directory, kind, model.eval(), model.config, tokenizer, task,  # type: ignore[arg-type]
                           merged)
    if task_name is not None:
        raise BertforgeError(f"unknown task {task_name!r}")
    from bertforge.model import BertForMaskedLM, BertModel

    tokenizer = load_tokenizer(directory)
    with warnings.catch_warnings():
        # The next-sentence head of a BertForPreTraining checkpoint, and a pooler a bare
        # encoder was saved without, are of no use here; their warnings would only confuse.
        warnings.simplefilter("ignore")
        model = (BertForMaskedLM if kind == "masked_lm" else BertModel).from_pretrained(directory, config=config)
    model.to(torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device)))
    return LoadedModel(directory, kind, model.eval(), config, tokenizer)
