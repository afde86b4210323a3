"""Structured pruning: a model directory into a standard, smaller BERT directory.

Two structures are removed, each so that the result is still a plain `BertConfig` that
transformers' `BertFor*` classes load (same Hugging Face layout, same outputs):

- **Feed-forward neurons.** Every layer keeps the same number k of its F intermediate neurons
  (`intermediate_size` = k: a standard config has one width for all layers), the k most
  important of that layer: row j of the first feed-forward matrix (and its bias) and column j
  of the second go together. Kept neurons stay in their original order, so keeping all of them
  changes no bit.
- **Whole layers.** `num_hidden_layers` = the layers kept, in their original order: named
  indices, evenly spaced ones (`alternate`: 0, 2, 4 of 6, DistilBERT's initialization), or the
  most important ones (`importance`, below).

Neuron importance, `gradxact` (the default): the first-order Taylor estimate of the change in
the task loss when the neuron is removed (Molchanov et al. 2017, "Pruning convolutional neural
networks for resource efficient inference"; Michel et al. 2019, "Are sixteen heads really
better than one?", who score attention heads the same way). For an example x with per-item
losses summed to L(x), and a neuron's activations a_t at its tokens t (after the GELU),
removing the neuron sets a_t = 0, and L changes by about -sum_t a_t dL/da_t; the score is the
mean over the scoring examples of |sum_t a_t(x) dL(x)/da_t(x)|. It is measured on the task's
own data and loss, which is why it is the default: a neuron with large weights can still
matter little to this task (its activation is small or its effect cancels), and only a
loss-based score sees that. `magnitude` is the data-free alternative: ||W_in[j, :]|| *
||W_out[:, j]||, the scale of what the neuron can add to the residual stream; it needs no
task head and no data, so it also prunes a pretrained model or a bare encoder.
Departures: Michel et al. take the absolute value per example as here; Molchanov et al.
average a * g over a feature map's positions before the absolute value, as the sum over tokens
does here; neither re-scores after removal (one pass, as here).

Layer importance, `importance`: measured, not estimated. Starting from all layers, the task
loss on the scoring batches is computed with each remaining layer skipped (its input passed
on unchanged); the layer whose skipping raises the loss least is dropped, and the step repeats
until the wanted number is left (greedy backward elimination: L + (L-1) + ... forward passes
of a few batches). A gradient score would only estimate this, and a layer is removed whole, so
its removal can be tried directly. The layers are chosen first, then the neurons are scored
on the model with its layers dropped, so the neuron scores describe the model that is kept.

Attention heads are not pruned: a head count per layer has no place in a standard
BertConfig, and transformers 5 no longer reads `pruned_heads`, so a head-pruned directory would
not load there.

The result records what was done under `pruning` in config.json (source, kept layer indices,
widths, score); the fine-tuning record and labels stay, so `evaluate`, `predict` and `serve`
use the directory as they use its source.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bertforge.compress.config import PruneConfig
from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.fileio import MODEL_FILES, prepare_output, replace_directory

PRUNING_KEY = "pruning"
"""config.json key recording how a model was pruned."""
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")

__all__ = ["PRUNING_KEY", "PruneConfig", "PrunePlan", "alternate_layers", "choose_layers", "gradxact_scores",
           "keep_layers", "keep_neurons", "magnitude_scores", "prune", "task_loss", "top_neurons"]

Batch = dict[str, torch.Tensor]


@dataclass
class PrunePlan:
    """What to keep: layer indices into the source (None: choose `layers` of them by
    `layer_choice`, or keep all) and the feed-forward width (None: all)."""

    keep_layers: list[int] | None = None
    layers: int | None = None
    layer_choice: str = "importance"
    intermediate_size: int | None = None
    score: str = "gradxact"


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    from bertforge.tasks.loading import encoder_of

    return encoder_of(model).encoder.layers  # type: ignore[return-value]


def _configs(model: nn.Module) -> list[BertConfig]:
    """Every distinct config object the model's modules hold (the head's and the encoder's)."""
    found: dict[int, BertConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, BertConfig):
            found[id(config)] = config
    return list(found.values())


# -- the data and the loss --------------------------------------------------------------------------


def task_loss(task: Any, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """(the sum of the batch's per-item task losses, the item count): the model's own loss (a
    mean over labelled items, as fine-tuning computes it) times the items it averages over."""
    from bertforge.tasks.finetune import TaskObjective

    objective = TaskObjective(task.name)
    items = objective.logged_counts(batch)[task.name]
    return model(**batch).loss * items, items


def scoring_batches(task: Any, tokenizer: Any, config: BertConfig, settings: Any, path: Path, count: int,
                    batch_size: int, seed: int) -> list[Batch]:
    """The first `count` shuffled (seeded) training batches of the task file at `path`."""
    from bertforge.tasks.features import FeatureBatches

    examples = task.read(path, settings)
    task.check_labels(examples, config, path)
    features = task.featurize(examples, tokenizer, config, settings, training=True)
    batches = FeatureBatches(features, batch_size, tokenizer.pad_token_id, shuffle=True, seed=seed,
                             collate=task.collate)
    return [batch for batch, _ in zip(batches, range(count))]


def _on(batch: Batch, device: torch.device) -> Batch:
    return {name: value.to(device) for name, value in batch.items()}


def mean_loss(task: Any, model: nn.Module, batches: list[Batch]) -> float:
    """The task loss per item over `batches` (eval mode, no gradients)."""
    device = next(model.parameters()).device
    total, items = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, count = task_loss(task, model, _on(batch, device))
            total, items = total + float(loss), items + count
    return total / max(items, 1)


# -- scores ---------------------------------------------------------------------------------------


def magnitude_scores(model: nn.Module) -> torch.Tensor:
    """(L, F): ||W_in[j, :]||_2 * ||W_out[:, j]||_2 for each feed-forward neuron j of each layer."""
    rows = []
    for layer in encoder_layers(model):
        feed_forward = layer.feed_forward
        rows.append(feed_forward.intermediate.weight.detach().float().norm(dim=1)
                    * feed_forward.output.weight.detach().float().norm(dim=0))
    return torch.stack(rows)


def gradxact_scores(task: Any, model: nn.Module, batches: list[Batch]) -> torch.Tensor:
    """(L, F): the mean over examples of |sum_t a_t dL/da_t| for each feed-forward neuron (see
    the module docstring), on the padded path (padding rows get no gradient, so add nothing)."""
    from bertforge.model.bert import set_fast_paths

    layers = encoder_layers(model)
    captured: list[torch.Tensor] = []

    def keep_input(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])  # (B, T, F): the activations after the nonlinearity

    handles = [layer.feed_forward.output.register_forward_pre_hook(keep_input) for layer in layers]
    fast = [(module, module.unpad_inputs, module.sparse_last_layer) for module in model.modules()
            if hasattr(module, "unpad_inputs")]
    set_fast_paths(model, False)  # per-example sums need the (B, T, F) layout
    was_training = model.training
    model.eval()  # no dropout: the scores are of the model as it predicts
    device = next(model.parameters()).device
    totals = torch.zeros(len(layers), layers[0].feed_forward.intermediate.out_features, dtype=torch.float64)
    examples = 0
    try:
        for batch in batches:
            captured.clear()
            loss, _ = task_loss(task, model, _on(batch, device))
            grads = torch.autograd.grad(loss, captured, allow_unused=True)
            for index, (activation, grad) in enumerate(zip(captured, grads)):
                if grad is not None:
                    per_example = (activation.detach() * grad).flatten(1, -2).sum(1)  # (B, F)
                    totals[index] += per_example.abs().sum(0).double().cpu()
            examples += int(batch["input_ids"].shape[0])
    finally:
        for handle in handles:
            handle.remove()
        for module, unpad, sparse in fast:
            module.unpad_inputs, module.sparse_last_layer = unpad, sparse
        model.train(was_training)
    return (totals / max(examples, 1)).float()


def top_neurons(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """(L, keep) indices of each layer's `keep` highest scores, in ascending index order."""
    return scores.topk(keep, dim=1).indices.sort(dim=1).values


# -- layers ----------------------------------------------------------------------------------------


def alternate_layers(total: int, keep: int) -> list[int]:
    """`keep` evenly spaced layers of `total`, starting at 0: 0, 2, 4 of 6 (DistilBERT)."""
    return [index * total // keep for index in range(keep)]


def keep_layers(model: nn.Module, kept: list[int]) -> None:
    """Keep only the encoder layers `kept` (source indices, in order), in place."""
    from bertforge.tasks.loading import encoder_of

    encoder = encoder_of(model).encoder
    encoder.layers = nn.ModuleList(encoder.layers[index] for index in kept)
    for config in _configs(model):
        config.num_hidden_layers = len(kept)


def _skipping(model: nn.Module, subset: list[int], originals: nn.ModuleList) -> None:
    from bertforge.tasks.loading import encoder_of

    encoder_of(model).encoder.layers = nn.ModuleList(originals[index] for index in subset)


def choose_layers(task: Any, model: nn.Module, batches: list[Batch], keep: int,
                  log: Callable[[str], None] | None = None) -> tuple[list[int], list[dict[str, Any]]]:
    """Greedy backward elimination: drop the layer whose skipping raises the task loss least,
    until `keep` layers are left. Returns (kept indices, one record per step: the loss with
    each candidate layer skipped, and the one dropped). The model is left unchanged."""
    from bertforge.tasks.loading import encoder_of

    originals = encoder_of(model).encoder.layers
    kept = list(range(len(originals)))
    trace: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        while len(kept) > keep:
            losses = {}
            for layer in kept:
                _skipping(model, [index for index in kept if index != layer], originals)
                losses[layer] = mean_loss(task, model, batches)
            dropped = min(losses, key=lambda index: losses[index])
            kept.remove(dropped)
            trace.append({"skipped_loss": {str(index): value for index, value in losses.items()},
                          "dropped": dropped})
            if log is not None:
                log(f"dropped layer {dropped} (task loss {losses[dropped]:.4f} without it)")
    finally:
        encoder_of(model).encoder.layers = originals
        model.train(was_training)
    return kept, trace


def keep_neurons(model: nn.Module, indices: torch.Tensor) -> None:
    """Keep, in layer l, the feed-forward neurons `indices[l]` ((L, k), ascending), in place."""
    with torch.no_grad():
        for layer, kept in zip(encoder_layers(model), indices):
            feed_forward = layer.feed_forward
            first, second = feed_forward.intermediate, feed_forward.output
            kept = kept.to(first.weight.device)
            narrow_in = nn.Linear(first.in_features, len(kept)).to(first.weight.device, first.weight.dtype)
            narrow_in.weight.copy_(first.weight[kept])
            narrow_in.bias.copy_(first.bias[kept])
            narrow_out = nn.Linear(len(kept), second.out_features).to(second.weight.device, second.weight.dtype)
            narrow_out.weight.copy_(second.weight[:, kept])
            narrow_out.bias.copy_(second.bias)
            feed_forward.intermediate, feed_forward.output = narrow_in, narrow_out
    for config in _configs(model):
        config.intermediate_size = int(indices.shape[1])


# -- the command -------------------------------------------------------------------------------------


def plan_from(config: PruneConfig, model_config: BertConfig) -> PrunePlan:
    """The plan the options ask for, checked against the model's sizes."""
    layers, width = model_config.num_hidden_layers, model_config.intermediate_size
    if config.keep_layers is not None and max(config.keep_layers) >= layers:
        raise BertforgeError(f"--keep-layers {max(config.keep_layers)} is out of range: the model has {layers} "
                             f"layers (0..{layers - 1})", path=config.model)
    if config.layers is not None and config.layers > layers:
        raise BertforgeError(f"cannot keep {config.layers} layers: the model has only {layers}", path=config.model)
    size = config.intermediate_size
    if config.keep_ffn is not None:
        size = round(width * config.keep_ffn)
        if size < 1:
            raise BertforgeError(f"--keep-ffn {config.keep_ffn} keeps 0 of the {width} feed-forward neurons; "
                                 "keep at least 1", path=config.model)
    if size is not None and size > width:
        raise BertforgeError(f"--intermediate-size {size} is more than the model's {width} feed-forward neurons",
                             path=config.model)
    return PrunePlan(config.keep_layers, config.layers, config.layer_choice, size, config.score)


def needs_data(plan: PrunePlan, model_config: BertConfig) -> list[str]:
    """The options that need the task loss (and so --task-data and a task head)."""
    reasons = []
    if plan.intermediate_size is not None and plan.intermediate_size < model_config.intermediate_size \
            and plan.score == "gradxact":
        reasons.append("--score gradxact")
    if plan.keep_layers is None and plan.layers is not None and plan.layers < model_config.num_hidden_layers \
            and plan.layer_choice == "importance":
        reasons.append("--layer-choice importance")
    return reasons


def apply_plan(plan: PrunePlan, model: nn.Module, task: Any, batches: list[Batch],
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prune `model` in place as `plan` says; returns the `pruning` record of what was kept."""
    config = model.config
    layers, width = config.num_hidden_layers, config.intermediate_size
    trace: list[dict[str, Any]] = []
    kept = plan.keep_layers
    if kept is None and plan.layers is not None and plan.layers < layers:
        if plan.layer_choice == "alternate":
            kept = alternate_layers(layers, plan.layers)
        else:
            kept, trace = choose_layers(task, model, batches, plan.layers, log)
    kept = list(range(layers)) if kept is None else kept
    if kept != list(range(layers)):
        keep_layers(model, kept)
    size = width if plan.intermediate_size is None else plan.intermediate_size
    if size < width:
        scores = magnitude_scores(model) if plan.score == "magnitude" else gradxact_scores(task, model, batches)
        keep_neurons(model, top_neurons(scores, size))
    return {"kept_layers": kept, "source_layers": layers, "intermediate_size": size,
            "source_intermediate_size": width, "layer_trace": trace}


def _load(config: PruneConfig) -> Any:
    """The model directory as a LoadedModel; a pretraining checkpoint keeps its next-sentence head."""
    from bertforge.tasks.loading import load_model

    given = {} if config.max_length is None else {"max_length": config.max_length}
    loaded = load_model(config.model, device="cpu", settings=given if given else None)
    if loaded.kind == "masked_lm" and "BertForPreTraining" in (loaded.config.extra.get("architectures") or []):
        from bertforge.model import BertForPreTraining

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded.model = BertForPreTraining.from_pretrained(config.model, config=loaded.config).eval()
    return loaded


def _check_task_data(config: PruneConfig, reasons: list[str], loaded: Any) -> None:
    if loaded.task is None:
        raise BertforgeError(f"this {loaded.kind} model has no task head, so there is no task loss for "
                             f"{' and '.join(reasons)}; use --score magnitude with --layer-choice alternate or "
                             "--keep-layers", path=config.model)
    if config.task_data is None:
        raise BertforgeError(f"{' and '.join(reasons)} needs the task's data to measure importance on: pass "
                             "--task-data FILE (the training file), or use --score magnitude / "
                             "--layer-choice alternate")


def _check_file(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise BertforgeError("is a directory; expected the task's training file", path=path)
    if not path.is_file():
        raise BertforgeError("no such file (the task data)", path=path)


def prune(config: PruneConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prune `config.model` into `config.out` (written whole, atomically; an existing model
    there only with `overwrite`). Returns a summary (what was kept, parameters before and after)."""
    from bertforge.train.distributed import resolve_device

    out = Path(config.out)
    prepare_output(out, kind="directory", finished=MODEL_FILES, what="model", overwrite=config.overwrite,
                   inputs=[config.model], whole=True)
    _check_file(config.task_data)
    started = time.perf_counter()
    loaded = _load(config)
    model = loaded.model
    plan = plan_from(config, model.config)
    reasons = needs_data(plan, model.config)
    batches: list[Batch] = []
    if reasons:
        _check_task_data(config, reasons, loaded)
        assert config.task_data is not None
        batches = scoring_batches(loaded.task, loaded.tokenizer, model.config, loaded.settings, config.task_data,
                                  config.batches, config.batch_size, config.seed)
        model.to(resolve_device(config.device))
    before = parameter_count(model)
    record = apply_plan(plan, model, loaded.task, batches, log)
    model.cpu()
    record.update(config.record(), examples=sum(int(batch["input_ids"].shape[0]) for batch in batches))
    model.config.extra = {**model.config.extra, PRUNING_KEY: record}
    write_model(model, Path(config.model), out)
    return {"out": str(out), "layers": {"from": record["source_layers"], "to": len(record["kept_layers"]),
                                        "kept": record["kept_layers"]},
            "intermediate_size": {"from": record["source_intermediate_size"], "to": record["intermediate_size"]},
            "parameters": {"from": before, "to": parameter_count(model)},
            "score": config.score, "seconds": round(time.perf_counter() - started, 2)}


def write_model(model: nn.Module, source: Path, out: Path) -> None:
    """Save `model` with the source's tokenizer files into `out`, whole: staged beside it,
    then renamed into place (complete or absent)."""
    from bertforge.convert.hf import save_pretrained

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_pretrained(model, staging)
        for name in TOKENIZER_FILES:
            if (source / name).exists():
                shutil.copy2(source / name, staging / name)
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
