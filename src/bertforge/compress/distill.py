"""Task distillation: a small student learns a fine-tuned teacher's classifier.

Loss per batch (Hinton et al. 2015; TinyBERT, Jiao et al. 2020, for the intermediate terms):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))     soft targets
  + (1 - alpha) * CE(student, gold label)                              hard labels
  + hidden_weight * mean_l MSE(W h_student[l], h_teacher[g(l)])        hidden states (TinyBERT)
  + attention_weight * mean_l MSE(A_student[l], A_teacher[g(l)])       attention (TinyBERT)

The T^2 factor keeps the soft term's gradients the same size whatever the temperature. Layer
l of an L_s-layer student (l = 0 is the embeddings) is matched to teacher layer
g(l) = l * L_t / L_s (TinyBERT's uniform map); W is a trainable H_s -> H_t projection, dropped
after training. Only real tokens count in the hidden and attention terms.

Departures from TinyBERT: attention is matched on probabilities (TinyBERT uses the scores
before softmax, which bertforge's encoder does not expose), averaged over heads when the
student and teacher have different head counts; the distillation is one stage on the task
data (TinyBERT also distills during pretraining and augments the data).

`use_teacher=False` trains the same student on the same batches, steps and seed with the hard
loss only: the baseline that shows what the teacher adds. The student shares the teacher's
vocab (the intermediate terms need the same tokens); its weights start random, or from
`student_init` (e.g. a pretrained mini). The result, OUT/final, is an ordinary fine-tuned
model directory that `predict`, `evaluate`, `serve` and `export` take.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import PRESETS, BertConfig, to_plain
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_json, replace_directory

DISTILLATION_KEY = "distillation"


@dataclass
class DistillConfig:
    teacher: Path
    train: Path
    dev: Path
    out: Path
    student_preset: str = "mini"
    student_init: Path | None = None
    """A pretrained directory to start the student from (its size wins over the preset)."""
    task: str = "classify"
    use_teacher: bool = True
    temperature: float = 1.0
    alpha: float = 0.5
    """Weight of the soft-target term; 1 - alpha goes to the hard labels. The defaults (0.5, T=1)
    are the setting that beat the teacher-free student on SST-2 in benchmarks/results/
    serve_compress.md, where alpha 0.9 at T=2 did not."""
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    max_steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eval_every: int = 0
    """Evaluate on dev every N steps and keep the best student (0: only at the end)."""
    eval_batch_size: int = 128
    max_length: int | None = None
    """Tokens per example (default: the teacher's fine-tuning setting)."""
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task != "classify":
            raise BertforgeError(f"distillation supports --task classify only, not {self.task!r}")
        if self.student_init is None and self.student_preset not in PRESETS:
            raise BertforgeError(f"unknown student preset {self.student_preset!r}; choose one of {', '.join(PRESETS)}")
        if self.temperature <= 0:
            raise BertforgeError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise BertforgeError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise BertforgeError("hidden-weight and attention-weight must be >= 0")
        for name in ("max_steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise BertforgeError(f"{name.replace('_', '-')} must be positive")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise BertforgeError("learning-rate must be > 0 and warmup-ratio in [0, 1)")


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


class Student(nn.Module):
    """The student with the projections its hidden states need (trained, then dropped)."""

    def __init__(self, model: nn.Module, teacher_hidden: int, project: bool):
        super().__init__()
        self.model = model
        hidden = model.config.hidden_size
        self.projections = nn.ModuleList(
            [nn.Linear(hidden, teacher_hidden) for _ in range(model.config.num_hidden_layers + 1)] if project else [])


def distillation_losses(config: DistillConfig, student: Student, teacher: nn.Module | None,
                        batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The named loss terms of one batch (see the module docstring)."""
    intermediate = teacher is not None and (config.hidden_weight > 0 or config.attention_weight > 0)
    inputs = {name: batch[name] for name in ("input_ids", "token_type_ids", "attention_mask")}
    output = student.model(**inputs, output_hidden_states=intermediate and config.hidden_weight > 0,
                           output_attentions=intermediate and config.attention_weight > 0)
    hard = F.cross_entropy(output.logits.float(), batch["labels"])
    if teacher is None:
        return {"hard": hard}
    with torch.no_grad():
        target = teacher(**inputs, output_hidden_states=intermediate and config.hidden_weight > 0,
                         output_attentions=intermediate and config.attention_weight > 0)
    losses = {"hard": (1.0 - config.alpha) * hard,
              "soft": config.alpha * soft_target_loss(output.logits, target.logits, config.temperature)}
    if not intermediate:
        return losses
    real = batch["attention_mask"].float()  # (B, T)
    if config.hidden_weight > 0:
        mapping = layer_map(len(output.hidden_states) - 1, len(target.hidden_states) - 1)
        terms = [masked_mse(student.projections[layer](output.hidden_states[layer]),
                            target.hidden_states[mapping[layer]], real[..., None])
                 for layer in range(len(output.hidden_states))]
        losses["hidden"] = config.hidden_weight * torch.stack(terms).mean()
    if config.attention_weight > 0:
        mapping = layer_map(len(output.attentions), len(target.attentions))
        pair = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, T, T): real query and key
        terms = []
        for layer, maps in enumerate(output.attentions, start=1):
            wanted = target.attentions[mapping[layer] - 1]  # (B, N_t, T, T)
            if maps.shape[1] != wanted.shape[1]:
                maps, wanted = maps.mean(1, keepdim=True), wanted.mean(1, keepdim=True)
            terms.append(masked_mse(maps, wanted, pair))
        losses["attention"] = config.attention_weight * torch.stack(terms).mean()
    return losses


def build_student(config: DistillConfig, teacher_config: BertConfig) -> nn.Module:
    from bertforge.tasks.classify import BertForSequenceClassification

    label_fields = {"id2label": teacher_config.id2label, "problem_type": teacher_config.problem_type}
    if config.student_init is not None:
        base = BertConfig.from_json_file(Path(config.student_init) / "config.json")
        if base.vocab_size != teacher_config.vocab_size:
            raise BertforgeError(f"the student's vocab ({base.vocab_size}) differs from the teacher's "
                                 f"({teacher_config.vocab_size}); they must share a vocab", path=config.student_init)
        student_config = base.replace(**label_fields)
        student_config.extra = {}
        return BertForSequenceClassification.from_pretrained(config.student_init, config=student_config)
    sizes = {key: teacher_config.__dict__[key] for key in ("vocab_size", "max_position_embeddings", "type_vocab_size",
                                                             "pad_token_id", "hidden_act", "layer_norm_eps")}
    student_config = BertConfig.from_preset(config.student_preset, **sizes, **label_fields)
    return BertForSequenceClassification(student_config)


def distill(config: DistillConfig) -> dict[str, Any]:
    """Train the student; write OUT/final (best on dev), OUT/metrics.jsonl and OUT/results.json."""
    import warnings

    from bertforge.tasks.classify import is_regression
    from bertforge.tasks.common import FeatureBatches
    from bertforge.tasks.finetune import SETTINGS_KEY, load_finetuned
    from bertforge.tasks.settings import TaskSettings
    from bertforge.train.config import TrainConfig
    from bertforge.train.metrics import MetricsLog, progress_bar
    from bertforge.train.optim import build_optimizer
    from bertforge.train.schedule import build_schedule

    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if config.device == "auto" else config.device))
    task, teacher, tokenizer, settings = load_finetuned(config.teacher, config.task, TaskSettings(), str(device))
    if is_regression(teacher.config):
        raise BertforgeError("distillation needs a classifier teacher (this one does regression)", path=config.teacher)
    if config.max_length is not None:
        settings = dataclasses.replace(settings, max_length=config.max_length)
    teacher.eval()
    torch.manual_seed(config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a pretrained student has no classifier yet: that is expected
        model = build_student(config, teacher.config)
    model.config.extra = {SETTINGS_KEY: {"task": task.name, "settings": to_plain(settings)}}
    project = config.use_teacher and config.hidden_weight > 0
    student = Student(model, teacher.config.hidden_size, project).to(device)

    train_examples = task.read(config.train, settings)
    dev_examples = task.read(config.dev, settings)
    task.check_labels(train_examples, model.config, config.train)
    features = task.featurize(train_examples, tokenizer, model.config, settings, training=True)
    dev_features = task.featurize(dev_examples, tokenizer, model.config, settings, training=False)
    batches = FeatureBatches(features, config.batch_size, tokenizer.pad_token_id, shuffle=True, seed=config.seed)
    train_config = TrainConfig(batch_size=config.batch_size, max_steps=config.max_steps,
                               learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                               warmup_ratio=config.warmup_ratio, seed=config.seed, progress=config.progress)
    optimizer = build_optimizer(student, train_config, device)
    schedule = build_schedule(optimizer, train_config)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # a new run, not a continuation
    log = MetricsLog(out, tensorboard=False)
    best: dict[str, Any] = {"accuracy": -math.inf, "step": None}

    def evaluate(step: int) -> None:
        result = task.evaluate(model, tokenizer, dev_examples, settings, config.eval_batch_size, dev_features)
        record = {"step": step, "split": "dev", **{k: float(v) for k, v in result.metrics.items()}}
        log.write(record)
        if record["accuracy"] > best["accuracy"]:
            best.update(accuracy=record["accuracy"], step=step, metrics=result.metrics)
            _save(model, tokenizer, out / "final", config)

    def stream():
        while True:
            yield from batches

    started = time.perf_counter()
    bar = progress_bar(config.max_steps, 0, config.progress, "distill" if config.use_teacher else "baseline")
    data = stream()
    for step in range(1, config.max_steps + 1):
        student.train()
        batch = {name: value.to(device) for name, value in next(data).items()}
        losses = distillation_losses(config, student, teacher if config.use_teacher else None, batch)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[union-attr]
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.update(1)
        if step % 10 == 0 or step == config.max_steps:
            record = {"step": step, "split": "train", "loss": float(total.detach()),
                      **{f"{name}_loss": float(value.detach()) for name, value in losses.items()}}
            log.write(record)
            bar.set_postfix(loss=f"{float(total.detach()):.3f}", refresh=False)
        if config.eval_every and step % config.eval_every == 0 and step != config.max_steps:
            evaluate(step)
    bar.close()
    evaluate(config.max_steps)
    train_seconds = time.perf_counter() - started
    log.close()
    summary = {"teacher": str(config.teacher), "use_teacher": config.use_teacher,
               "student": {"layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
                           "parameters": sum(p.numel() for p in model.parameters())},
               "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
               "steps": config.max_steps, "best_step": best["step"], "dev": best.get("metrics", {}),
               "train_seconds": train_seconds, "options": to_plain(config)}
    atomic_write_json(out / "results.json", summary)
    return summary


def _save(model: nn.Module, tokenizer: Any, directory: Path, config: DistillConfig) -> None:
    model.config.extra = {**model.config.extra, DISTILLATION_KEY: {
        "teacher": str(config.teacher), "use_teacher": config.use_teacher, "temperature": config.temperature,
        "alpha": config.alpha, "hidden_weight": config.hidden_weight, "attention_weight": config.attention_weight,
        "steps": config.max_steps, "seed": config.seed}}
    temporary = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary, tokenizer=tokenizer)
    replace_directory(temporary, directory)
