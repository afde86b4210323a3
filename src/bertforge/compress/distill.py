"""Task distillation: a small student learns a fine-tuned teacher's classifier.

Loss per batch (Hinton et al. 2015; TinyBERT, Jiao et al. 2020, for the intermediate terms):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))     soft targets
  + (1 - alpha) * CE(student, gold label)                              hard labels
  + hidden_weight * mean_l MSE(W h_student[l], h_teacher[g(l)])        hidden states (TinyBERT)
  + attention_weight * mean_l MSE(A_student[l], A_teacher[g(l)])       attention (TinyBERT)

The T^2 factor keeps the soft term's gradients the same size whatever the temperature. Layer
l of an L_s-layer student (l = 0 is the embeddings) is matched to teacher layer
g(l) = l * L_t / L_s (TinyBERT's uniform map), or, for a student pruned from the teacher
(`bertforge prune`: its config.json records the teacher layers it kept), to the teacher layer
it was kept from; W is a trainable H_s -> H_t projection, dropped after training. Only real
tokens count in the hidden and attention terms.

The training runs through `bertforge.train.Trainer` with `DistillationObjective`, so it has the
trainer's resume, precision, gradient accumulation, clipping (`trainer.max_grad_norm`) and
non-finite guard; the projections W are the objective's own parameters, trained and
checkpointed beside the student. The best student on dev accuracy is kept by the trainer's
`KeepBest` hook (`patience` stops early).

Departures from TinyBERT: attention is matched on probabilities (TinyBERT uses the scores
before softmax, which bertforge's encoder does not expose), averaged over heads when the
student and teacher have different head counts; the distillation is one stage on the task
data (TinyBERT also distills during pretraining and augments the data).

`use_teacher=False` trains the same student on the same batches, steps and seed with the hard
loss only: the baseline that shows what the teacher adds. The student shares the teacher's
vocab (the intermediate terms need the same tokens); its weights start random, or from
`student_init` (e.g. a pretrained mini, or the teacher pruned by `bertforge prune`, whose
`pruning` record the student keeps). The result, OUT/final, is an ordinary fine-tuned model
directory that `predict`, `evaluate`, `serve` and `export` take.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.compress.config import DistillConfig, DistillTrainConfig
from bertforge.config import BertConfig, to_plain
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_json, prepare_run_directory, start_run

DISTILLATION_KEY = "distillation"
"""config.json key recording how a student was distilled."""

__all__ = ["DISTILLATION_KEY", "DistillConfig", "DistillTrainConfig", "DistillationObjective", "build_student",
           "distill", "layer_map", "load_teacher", "masked_mse", "soft_target_loss"]


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch; logits (B, C)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer 0..L_s (0 = embeddings): g(l) = l * L_t / L_s."""
    return [round(layer * teacher_layers / student_layers) for layer in range(student_layers + 1)]


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where `weights` (broadcast to the inputs) is 1."""
    squared = (student.float() - teacher.float()) ** 2 * weights
    count = weights.expand_as(squared).sum().clamp(min=1.0)
    return squared.sum() / count


class DistillationObjective:
    """The trainer's view of distillation: the named, weighted loss terms of the module docstring.

    Without a teacher only `hard` (unweighted) is computed. `counts` are what each term averages
    over: sentences for `hard` and `soft`, real tokens for `hidden`, real (query, key) pairs for
    `attention`, so accumulated micro-batches give the update of one big batch. The teacher runs
    without gradients, in eval mode, on the batch's device; `trainable_module` holds the
    projections W (one per student layer and the embeddings) when hidden states are matched.
    """

    def __init__(self, config: DistillConfig, teacher: nn.Module | None, student_config: BertConfig,
                 teacher_layers: list[int] | None = None):
        self.config = config
        self.teacher = teacher
        # The teacher hidden-state index of each student one (0 = embeddings); None: the uniform map.
        self.teacher_layers = teacher_layers
        self.hidden = teacher is not None and config.hidden_weight > 0
        self.attention = teacher is not None and config.attention_weight > 0
        self.trainable_module = None if not self.hidden else nn.ModuleList(
            [nn.Linear(student_config.hidden_size, teacher.config.hidden_size)  # type: ignore[union-attr]
             for _ in range(student_config.num_hidden_layers + 1)])

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        rows = float(batch["labels"].shape[0])
        if self.teacher is None:
            return {"hard": rows}
        counts = {"hard": rows, "soft": rows}
        real = batch["attention_mask"].sum(dim=1).double()  # (B,) real tokens per row
        if self.hidden:
            counts["hidden"] = float(real.sum())
        if self.attention:
            counts["attention"] = float((real ** 2).sum())
        return counts

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        config = self.config
        inputs = {name: batch[name] for name in ("input_ids", "token_type_ids", "attention_mask")}
        wanted = {"output_hidden_states": self.hidden, "output_attentions": self.attention}
        output = model(**inputs, **wanted)
        hard = F.cross_entropy(output.logits.float(), batch["labels"])
        if self.teacher is None:
            return {"hard": hard}
        with torch.no_grad():
            target = self.teacher(**inputs, **wanted)
        losses = {"hard": (1.0 - config.alpha) * hard,
                  "soft": config.alpha * soft_target_loss(output.logits, target.logits, config.temperature)}
        real = batch["attention_mask"].float()  # (B, T)
        if self.hidden:
            assert self.trainable_module is not None
            mapping = self.teacher_layers or layer_map(len(output.hidden_states) - 1, len(target.hidden_states) - 1)
            terms = [masked_mse(self.trainable_module[layer](output.hidden_states[layer]),
                                target.hidden_states[mapping[layer]], real[..., None])
                     for layer in range(len(output.hidden_states))]
            losses["hidden"] = config.hidden_weight * torch.stack(terms).mean()
        if self.attention:
            mapping = self.teacher_layers or layer_map(len(output.attentions), len(target.attentions))
            pair = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, T, T): real query and key
            terms = []
            for layer, maps in enumerate(output.attentions, start=1):
                goal = target.attentions[mapping[layer] - 1]  # (B, N_t, T, T)
                if maps.shape[1] != goal.shape[1]:
                    maps, goal = maps.mean(1, keepdim=True), goal.mean(1, keepdim=True)
                terms.append(masked_mse(maps, goal, pair))
            losses["attention"] = config.attention_weight * torch.stack(terms).mean()
        return losses


def build_student(config: DistillConfig, teacher_config: BertConfig, model_class: type) -> nn.Module:
    """A student of `model_class` with the teacher's labels and vocab: from `student_init`, or
    random at `student_preset` size."""
    label_fields = {"id2label": teacher_config.id2label, "problem_type": teacher_config.problem_type}
    if config.student_init is not None:
        base = BertConfig.from_json_file(Path(config.student_init) / "config.json")
        if base.vocab_size != teacher_config.vocab_size:
            raise BertforgeError(f"the student's vocab ({base.vocab_size}) differs from the teacher's "
                                 f"({teacher_config.vocab_size}); they must share a vocab", path=config.student_init)
        student_config = base.replace(**label_fields)
        student_config.extra = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a pretrained student has no classifier yet: that is expected
            return model_class.from_pretrained(config.student_init, config=student_config)
    sizes = {key: teacher_config.__dict__[key] for key in ("vocab_size", "max_position_embeddings", "type_vocab_size",
                                                             "pad_token_id", "hidden_act", "layer_norm_eps")}
    return model_class(BertConfig.from_preset(config.student_preset, **sizes, **label_fields))


def pruned_layer_map(student_config: BertConfig, teacher_config: BertConfig) -> list[int] | None:
    """[0, k_1 + 1, ..., k_L + 1] for a student pruned from a teacher of this depth, whose
    `pruning` record says it kept teacher layers k_1 .. k_L; None for any other student."""
    from bertforge.compress.prune import PRUNING_KEY

    record = student_config.extra.get(PRUNING_KEY)
    kept = record.get("kept_layers") if isinstance(record, dict) else None
    if not isinstance(kept, list) or len(kept) != student_config.num_hidden_layers \
            or record.get("source_layers") != teacher_config.num_hidden_layers:
        return None
    return [0] + [int(index) + 1 for index in kept]


def load_teacher(config: DistillConfig) -> tuple[Any, nn.Module, Any, Any]:
    """(task, teacher in eval mode on the CPU, tokenizer, task settings) from `config.teacher`;
    the trainer moves the teacher to its device."""
    from bertforge.tasks.loading import ENCODER_OUTPUTS, kind_of, load_model, read_config

    kind = kind_of(read_config(config.teacher))
    if kind in ENCODER_OUTPUTS:  # with --task given, its head would be a fresh random one
        raise BertforgeError(f"this {kind} model has no task head: the teacher must be a fine-tuned classifier",
                             path=config.teacher)
    given = {} if config.max_length is None else {"max_length": config.max_length}
    loaded = load_model(config.teacher, task_name=config.task, device="cpu", settings=given)
    if loaded.task.primary(loaded.config) != "accuracy":  # a classifier's metric; regression's is pearson
        raise BertforgeError("distillation needs a classifier teacher (this one does regression)", path=config.teacher)
    return loaded.task, loaded.model.eval(), loaded.tokenizer, loaded.settings


def distill(config: DistillConfig) -> dict[str, Any]:
    """Train the student; write OUT/final (best on dev), OUT/metrics.jsonl, OUT/checkpoints and
    OUT/results.json. With `trainer.resume`, a run goes on from its newest checkpoint."""
    from bertforge.tasks.features import FeatureBatches
    from bertforge.tasks.loading import SETTINGS_KEY
    from bertforge.train import Trainer
    from bertforge.train.hooks import KeepBest

    out = prepare_run_directory(config.out, overwrite=config.overwrite, resume=config.trainer.resume,
                                resume_hint="trainer.resume=true", inputs=[config.teacher, config.student_init])
    task, teacher, tokenizer, settings = load_teacher(config)
    torch.manual_seed(config.trainer.seed)
    model = build_student(config, teacher.config, task.model_class)
    model.config.extra = {SETTINGS_KEY: {"task": task.name, "settings": to_plain(settings)},
                          DISTILLATION_KEY: config.record()}
    if config.student_init is not None:  # a pruned student keeps the record of what it was cut from
        from bertforge.compress.prune import PRUNING_KEY

        pruning = BertConfig.from_json_file(Path(config.student_init) / "config.json").extra.get(PRUNING_KEY)
        if pruning is not None:
            model.config.extra[PRUNING_KEY] = pruning
    teacher_layers = pruned_layer_map(model.config, teacher.config)
    train_examples = task.read(config.train, settings)
    dev_examples = task.read(config.dev, settings)
    task.check_labels(train_examples, model.config, config.train)
    features = task.featurize(train_examples, tokenizer, model.config, settings, training=True)
    dev_features = task.evaluation_features(dev_examples, tokenizer, model.config, settings)
    micro_batch_size, _ = config.trainer.accumulation(1)
    batches = FeatureBatches(features, micro_batch_size, tokenizer.pad_token_id, shuffle=True,
                             seed=config.trainer.seed, collate=task.collate)

    def evaluate(student: nn.Module) -> dict[str, float]:
        result = task.evaluate(student, tokenizer, dev_examples, settings, config.eval_batch_size, dev_features)
        return {f"dev_{name}": float(value) for name, value in result.metrics.items()
                if isinstance(value, (int, float))}

    start_run(out, resume=config.trainer.resume)  # a new run starts without the old one's metrics
    out.mkdir(parents=True, exist_ok=True)
    keep = KeepBest(out / "final", f"dev_{task.primary(model.config)}", patience=config.patience)
    objective = DistillationObjective(config, teacher if config.use_teacher else None, model.config, teacher_layers)
    trainer = Trainer(model, config.trainer, out, batches, objective, evaluate=evaluate, tokenizer=tokenizer,
                      hooks=[keep], evaluate_at_start=False)
    if config.use_teacher:
        teacher.to(trainer.context.device)
    result = trainer.fit()
    summary = {"teacher": str(config.teacher), "use_teacher": config.use_teacher,
               "student": {"layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
                           "parameters": sum(p.numel() for p in model.parameters())},
               "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
               "steps": result.step, "best_step": keep.best_step, "stopped_early": result.stopped_early,
               "dev": {name.removeprefix("dev_"): value for name, value in keep.best_metrics.items()},
               "train_seconds": result.elapsed_seconds, "options": to_plain(config)}
    atomic_write_json(out / "results.json", summary)
    return summary
