"""What a model directory holds, and loading it for inference on the torch or onnx backend.

A directory in Hugging Face layout is one of:
- a fine-tuned task model (kind = the task's name): config.json carries bertforge's
  `finetuning` record ({"task", "settings"}) or names the architecture of a registered task's
  head (BertForSequenceClassification, ...);
- a pretrained model with its masked-LM head (`masked_lm`: BertForPreTraining or
  BertForMaskedLM, which is what `bertforge pretrain` writes): loaded as BertForMaskedLM, since
  serving, export and attention maps have no use for the next-sentence head;
- a bare encoder (`encoder`: BertModel, e.g. sentence-transformers checkpoints).

Every kind has an encoder (`encoder_of`, torch backend), so every kind can embed text and show
attention. On the onnx backend the model is an `OnnxModel` over the directory's ONNX graph
(`bertforge export onnx`), with the directory's config, tokenizer and task settings. Backend
`auto` (the CLI's default) is onnx for a directory `bertforge quantize --method onnx` wrote
(config.json carries its `quantization` record and model.onnx is there: the int8 graph is what
the directory is for), else torch; the fp32 weights a quantized directory keeps beside its graph
(for transformers) run with an explicit `torch`. A directory `bertforge quantize --method torch`
wrote has only the fp32 weights and a `quantization` record saying "torch dynamic int8": the
torch backend quantizes its Linear layers as it loads them (`bertforge.model.int8`).

The task settings a model was fine-tuned with are stored in its config.json under
`finetuning`, so `evaluate`, `predict`, export and serve reuse them; settings given by the
caller win (`Task.settings`). A `settings.max_length` past the model's max_position_embeddings
is an error when the caller gives it, and is lowered to them when it is a default or saved one
(`fit_to_model`, also used by fine-tuning; `check_length` for any other length, e.g. attention's).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from bertforge.config import BertConfig, model_directory
from bertforge.errors import BertforgeError
from bertforge.tasks.registry import get_task, task_for_architecture

if TYPE_CHECKING:
    from torch import nn

    from bertforge.tasks.settings import TaskSettings
    from bertforge.tasks.task import Task

Backend = Literal["auto", "torch", "onnx"]
SETTINGS_KEY = "finetuning"
"""config.json key holding {"task": name, "settings": {...}} of a fine-tuned model."""
MASKED_LM_ARCHITECTURES = ("BertForPreTraining", "BertForMaskedLM")
ENCODER_OUTPUTS: dict[str, tuple[str, ...]] = {"masked_lm": ("mlm_logits",), "encoder": ()}
"""The head outputs of the kinds that are not tasks (a task declares its own `onnx_outputs`)."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
QUANTIZATION_KEY = "quantization"
"""config.json key of a directory `bertforge quantize` wrote (its int8 graph is model.onnx)."""


def read_config(directory: str | Path) -> BertConfig:
    path = model_directory(directory) / "config.json"
    config = BertConfig.from_json_file(path)
    try:
        kind_of(config)  # the `finetuning` record and `architectures` are well-formed
    except BertforgeError as error:
        raise BertforgeError(str(error), path=path) from None
    return config


def load_tokenizer(directory: Path, vocab: Path | None = None) -> Any:
    from bertforge.tokenizer import BertTokenizer

    if vocab is not None:
        return BertTokenizer(vocab)
    directory = model_directory(directory)
    if not (directory / "vocab.txt").exists():
        raise BertforgeError("no vocab.txt in the model directory (pass --vocab FILE)", path=directory)
    return BertTokenizer.from_pretrained(directory)


def saved_settings(config: BertConfig) -> tuple[str | None, dict[str, Any]]:
    """(task name, settings) of a fine-tuned model's `finetuning` record (None, {} without one)."""
    saved = config.extra.get(SETTINGS_KEY) or {}
    settings = saved.get("settings") if isinstance(saved, Mapping) else None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("task", ""), str) \
            or not isinstance(settings or {}, Mapping):
        raise BertforgeError(f"{SETTINGS_KEY}: expected {{\"task\": NAME, \"settings\": {{...}}}}, got {saved!r}")
    return saved.get("task"), dict(settings or {})


def kind_of(config: BertConfig) -> str:
    """The kind of model a config.json describes: a task name, `masked_lm` or `encoder`."""
    saved_task, _ = saved_settings(config)
    if saved_task is not None:
        return saved_task
    architectures = config.extra.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
        raise BertforgeError(f"architectures: expected a list of class names, got {architectures!r}")
    for architecture in architectures:
        task = task_for_architecture(architecture)
        if task is not None:
            return task.name
    if any(architecture in MASKED_LM_ARCHITECTURES for architecture in architectures):
        return "masked_lm"
    return "encoder"


def task_of(directory: Path, config: BertConfig, requested: str | None) -> "Task":
    """The task of a fine-tuned model; `requested` (a --task) must agree with the model's."""
    inferred = kind_of(config)
    inferred_task = None if inferred in ENCODER_OUTPUTS else inferred
    if requested is not None and inferred_task is not None and requested != inferred_task:
        raise BertforgeError(f"the model was fine-tuned for task {inferred_task!r}, not {requested!r}", path=directory)
    name = requested or inferred_task
    if name is None:
        raise BertforgeError("cannot tell the task of this model (no fine-tuned head); pass --task", path=directory)
    task = get_task(name)
    if task.needs_id2label and not config.id2label:
        raise BertforgeError("config.json has no id2label: this is not a fine-tuned classifier", path=directory)
    return task


def _checked_saved(task: "Task", directory: Path, config: BertConfig) -> dict[str, Any]:
    """The saved settings of a model, checked alone so that a bad one names its config.json."""
    saved = saved_settings(config)[1]
    try:
        task.settings(None, saved)
    except BertforgeError as error:
        raise BertforgeError(f"{SETTINGS_KEY}.{error}", path=directory / "config.json") from None
    return saved


def check_length(length: int, config: BertConfig, name: str) -> None:
    """A token length the caller asked for (`name`: the setting or flag) must fit the model's
    position embeddings; past them the embedding lookup would fail."""
    if length > config.max_position_embeddings:
        raise BertforgeError(f"{name} is {length}, more than the model's max_position_embeddings "
                             f"({config.max_position_embeddings}); lower it")


def fit_to_model(settings: "TaskSettings", config: BertConfig,
                 given: "Mapping[str, Any] | TaskSettings | None" = None) -> "TaskSettings":
    """`settings` with a max_length the model can take. One the caller gave (in `given`) past the
    model's max_position_embeddings is an error naming settings.max_length; a default or saved
    one is lowered to it, as transformers cuts to a tokenizer's model_max_length."""
    import dataclasses

    if settings.max_length <= config.max_position_embeddings:
        return settings
    if isinstance(given, Mapping):
        explicit = "max_length" in given
    else:
        explicit = given is not None and given.max_length != type(given)().max_length
    if explicit:
        check_length(settings.max_length, config, "settings.max_length")
    return dataclasses.replace(settings, max_length=config.max_position_embeddings)


@dataclass
class LoadedModel:
    """A model directory ready for inference (eval mode, on its device)."""

    directory: Path
    kind: str
    model: "nn.Module"
    config: BertConfig
    tokenizer: Any
    task: "Task | None" = None
    settings: "TaskSettings | None" = None
    """The task settings the model was fine-tuned with, under the caller's (task kinds only)."""
    backend: Literal["torch", "onnx"] = "torch"

    @property
    def encoder(self) -> "nn.Module":
        return encoder_of(self.model)

    @property
    def head_outputs(self) -> tuple[str, ...]:
        """The names of the head's outputs (the task's `onnx_outputs`, or the masked-LM logits)."""
        return self.task.onnx_outputs if self.task is not None else ENCODER_OUTPUTS[self.kind]


def encoder_of(model: "nn.Module") -> "nn.Module":
    """The BertModel inside a task or masked-LM model (or the model itself)."""
    from bertforge.model import BertModel

    return model if isinstance(model, BertModel) else model.bert  # type: ignore[return-value]


def resolve_backend(directory: Path, config: BertConfig, backend: Backend) -> Literal["torch", "onnx"]:
    """`auto`: onnx for a quantized directory (its `quantization` record and model.onnx), else torch."""
    if backend != "auto":
        return backend
    return "onnx" if QUANTIZATION_KEY in config.extra and (directory / "model.onnx").is_file() else "torch"


def load_model(directory: str | Path, *, backend: Backend = "torch", device: str = "cpu",
               task_name: str | None = None, settings: "Mapping[str, Any] | TaskSettings | None" = None,
               onnx_file: str | Path | None = None, threads: int | None = None) -> LoadedModel:
    """Load whatever `directory` holds (see the module docstring) in eval mode.

    torch backend: on `device` ("auto": CUDA when available). onnx backend: onnxruntime on
    `onnx_file` (default DIRECTORY/model.onnx) with `threads` intra-op threads. auto: see the
    module docstring (`LoadedModel.backend` says which ran). `task_name` must agree with the
    model's task; `settings` are laid over the saved ones.
    """
    directory = Path(directory)
    config = read_config(directory)
    if onnx_file is not None and backend == "auto":
        backend = "onnx"  # a graph named explicitly is meant to run
    backend = resolve_backend(directory, config, backend)
    model: Any
    if backend == "onnx":
        from bertforge.tasks.onnx_backend import OnnxModel, onnx_path

        model = OnnxModel(onnx_path(directory, None if onnx_file is None else Path(onnx_file)), config, threads)
        kind = model.kind
    elif backend == "torch":
        kind = kind_of(config) if task_name is None else task_name
        if not any((directory / name).exists() for name in WEIGHT_FILES) and (directory / "model.onnx").exists():
            raise BertforgeError("this directory holds only an ONNX graph (e.g. from `bertforge quantize`); "
                                 "use the onnx backend (--backend onnx)", path=directory)
    else:
        raise BertforgeError(f"unknown backend {backend!r}; use torch or onnx")
    task = None
    merged = None
    if kind not in ENCODER_OUTPUTS:
        task = task_of(directory, config, task_name or kind)
        merged = fit_to_model(task.settings(settings, _checked_saved(task, directory, config)), config, settings)
        kind = task.name
    elif task_name is not None:
        get_task(task_name)  # an unknown name raises as such; a known one disagrees with the model
        raise BertforgeError(f"this is a {kind} model, not a fine-tuned {task_name!r} model", path=directory)
    if backend == "torch":
        model = _load_torch(directory, config, task, kind, device)
    return LoadedModel(directory, kind, model.eval(), model.config if task is not None else config,
                       load_tokenizer(directory), task, merged, backend)


def _load_torch(directory: Path, config: BertConfig, task: "Task | None", kind: str, device: str) -> "nn.Module":
    """The torch model of `directory` on `device`; a directory marked torch dynamic int8 (by
    `bertforge quantize --method torch`) is quantized as it loads (`bertforge.model.int8`), on the
    CPU (device auto picks it; an explicit GPU is an error)."""
    from bertforge.model.int8 import TORCH_INT8, quantize_linear_int8
    from bertforge.train.distributed import resolve_device

    if task is not None:
        model = task.model_class.from_pretrained(directory, config=config)
    else:
        from bertforge.model import BertForMaskedLM, BertModel

        with warnings.catch_warnings():
            # The next-sentence head of a BertForPreTraining checkpoint, and a pooler a bare
            # encoder was saved without, are of no use here; their warnings would only confuse.
            warnings.simplefilter("ignore")
            model = (BertForMaskedLM if kind == "masked_lm" else BertModel).from_pretrained(directory, config=config)
    record = config.extra.get(QUANTIZATION_KEY)
    int8 = isinstance(record, dict) and record.get("method") == TORCH_INT8
    model = model.to(resolve_device("cpu" if int8 and device == "auto" else device))
    if int8:
        if next(model.parameters()).device.type != "cpu":
            raise BertforgeError("this directory runs as torch dynamic int8, which runs on the CPU only; "
                                 "use --device cpu", path=directory)
        model = quantize_linear_int8(model.eval(), per_channel=bool(record.get("per_channel", True)),
                                     fp32_ffn_output=bool(record.get("fp32_ffn_output", True)))
    return model
