"""The generic training loop shared by pretraining and fine-tuning.

What it takes:
- a model (a `BertPreTrainedModel`, unwrapped; the trainer wraps it for DDP/FSDP/compile),
- an `Objective`, which says how to compute the losses of a micro-batch and how many items
  each loss averages over (masked tokens, sentences, labelled tokens),
- batches: an iterable of micro-batches (dicts of tensors) with `set_epoch`, `state_dict`
  ({"epoch", "position", ...}) and `load_state_dict`, so that resume restores the data position
  directly instead of replaying; iterating yields the rest of the current epoch,
- optionally `evaluate(model) -> dict[str, float]` and a tokenizer to save beside the weights,
- optionally hooks (bertforge.train.hooks: keep-best and early stopping), called after each
  evaluation; their state rides in the checkpoints, so a resumed run keeps its best,
- optionally a clock (seconds, `time.perf_counter` by default) that measures the training time
  the time limit and a time-budget schedule (bertforge.train.schedule) count; the elapsed time
  rides in the checkpoints, so a resumed run goes on with the budget that was left.

Every loss is normalized by its item count over the whole optimizer step (all micro-batches on
all ranks), not per micro-batch. That makes gradient accumulation and any number of ranks give
the same update as one big batch, which plain per-micro-batch means do not.

Each step: prefetch the step's micro-batches, all-reduce their item counts, forward/backward
each (no gradient all-reduce until the last), all-reduce the loss sums, skip the step if the
loss or gradient norm is not finite (stopping after `max_nonfinite_steps` in a row), clip,
step the optimizer, read the clock and step the schedule. The run ends when the budget is spent
(`budget_used` reaches 1: max_steps, or the time limit), with an evaluation and a checkpoint.
Rank 0 logs to metrics.jsonl and the progress bar and writes
checkpoints; `evaluate` runs on every rank (FSDP needs all ranks in each forward).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch
from torch import nn

from bertforge.errors import BertforgeError
from bertforge.model.compiled import compile_encoder
from bertforge.train import checkpoint as checkpoints
from bertforge.train import distributed
from bertforge.train.config import TrainConfig
from bertforge.train.hooks import Hook
from bertforge.train.metrics import MetricsLog, progress_bar
from bertforge.train.optim import build_optimizer
from bertforge.train.precision import resolve_precision
from bertforge.train.schedule import budget_used, build_schedule


class Objective(Protocol):
    """A training objective. It may also define:

    - `logged_counts(batch)`: the item counts the logged losses are averaged over, when `counts`
      are normalizers rather than item counts (bertforge.tasks.finetune.TaskObjective for NER
      on length-grouped batches);
    - `trainable_module`: an `nn.Module` of parameters the objective trains with the model but
      that are no part of it (distillation's hidden-state projections). The trainer moves it to
      the device, steps it with its own optimizer and schedule (the same settings, so the same
      update as one optimizer over both), clips the gradient norm over model and module
      together, averages its gradients over ranks, and keeps it in the checkpoints; the model
      directories written stay plain models.
    """

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """How many items each named loss of this micro-batch averages over."""

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean of each named loss over this micro-batch's items."""


class Batches(Protocol):
    def __iter__(self): ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, int]: ...

    def load_state_dict(self, state: dict[str, int]) -> None: ...


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    """The last evaluation's metrics."""
    first_metrics: dict[str, float] = field(default_factory=dict)
    """The evaluation before the first step (empty when resumed or not asked for)."""
    stopped_early: bool = False
    skipped_steps: int = 0
    elapsed_seconds: float = 0.0


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    def __init__(self, model: nn.Module, config: TrainConfig, run_dir: str | Path, batches: Batches,
                 objective: Objective, *, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 tokenizer: Any = None, context: distributed.Context | None = None,
                 hooks: Sequence[Hook] = (), evaluate_at_start: bool = True,
                 clock: Callable[[], float] = time.perf_counter):
        """`hooks` run after each evaluation, in order; any returning True stops the run (early
        stopping). `evaluate_at_start=False` skips the evaluation before the first step (fine-tuning: a
        freshly drawn head scores at chance, and the pass over dev only costs time). `clock` gives
        seconds; it times training (the time limit, a time-budget schedule, tokens/s)."""
        self.run_dir = Path(run_dir)
        self.context = context or distributed.setup(config.device)
        if config.precision == "fp16" and self.context.device.type != "cuda":
            raise BertforgeError("train.precision fp16 needs CUDA; use bf16 on CPU")
        # "auto" becomes fp32 or bf16 here, once; everything below reads the resolved value.
        self.precision = resolve_precision(config.precision, self.context.device)
        self.config = config = dataclasses.replace(config, precision=self.precision.precision)
        self.print(self.precision.describe())
        if self.precision.warning:
            self.print(self.precision.warning)
        self.bare_model = model.to(self.context.device)
        self.batches = batches
        self.objective = objective
        self.evaluate_fn = evaluate
        self.hooks = list(hooks)
        names = [hook.name for hook in self.hooks]
        if len(set(names)) != len(names):
            raise BertforgeError(f"trainer hooks need distinct names, got {names}")
        self.evaluate_at_start = evaluate_at_start
        self.tokenizer = tokenizer
        self.micro_batch_size, self.accumulation = config.accumulation(self.context.world_size)
        self.step = 0
        self.clock = clock
        self.elapsed_seconds = 0.0
        """Seconds of training so far, including the runs this one resumed from."""
        self._clock_origin: tuple[float, float] | None = None  # (clock reading, elapsed then) of this fit
        self.log = MetricsLog(self.run_dir, enabled=self.context.is_main, tensorboard=config.tensorboard)
        if config.compile:
            # Regional compilation (bertforge.model.compiled): each encoder layer, before DDP or
            # FSDP wraps it, as torchtitan does; the data-dependent unpadding stays eager.
            compile_encoder(self.bare_model)
        self.model = distributed.wrap(self.bare_model, self.context, config.parallelism)
        self.optimizer = build_optimizer(self.model, config, self.context.device)
        self.scheduler = build_schedule(self.optimizer, config, self._elapsed)
        self.optimizers, self.schedulers = [self.optimizer], [self.scheduler]
        self.objective_module: nn.Module | None = getattr(objective, "trainable_module", None)
        if self.objective_module is not None:
            self.objective_module.to(self.context.device)
            self.optimizers.append(build_optimizer(self.objective_module, config, self.context.device))
            self.schedulers.append(build_schedule(self.optimizers[-1], config, self._elapsed))
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")

    # -- resume ---------------------------------------------------------------------------

    def maybe_resume(self) -> bool:
        if not self.config.resume:
            return False
        path = checkpoints.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        state = checkpoints.load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.context,
                                            self.bare_model.config)
        self.step = int(state["step"])
        self.elapsed_seconds = float(state.get("elapsed_seconds", 0.0))
        self.batches.load_state_dict(state["data"])
        self.log.truncate_after(self.step)
        for hook in self.hooks:
            saved = state.get("hooks", {}).get(hook.name)
            if saved is not None:
                hook.load_state_dict(saved)
        if self.objective_module is not None:
            self._load_objective_state(state.get("objective"), path)
        self.print(f"resumed from {path} at step {self.step}")
        return True

    def _load_objective_state(self, saved: dict[str, Any] | None, path: Path) -> None:
        if saved is None:
            raise BertforgeError("cannot resume: the checkpoint holds no state for the objective's own parameters "
                                 "(it was written by a different objective)", path=path)
        assert self.objective_module is not None
        try:
            self.objective_module.load_state_dict(saved["module"])
            self.optimizers[1].load_state_dict(saved["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise BertforgeError(f"cannot resume: the objective's saved parameters do not fit this run ({error})",
                                 path=path) from None
        self.schedulers[1].load_state_dict(saved["scheduler"])

    # -- the loop -------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config, context = self.config, self.context
        resumed = self.maybe_resume()
        result = TrainResult(step=self.step)
        if not resumed and self.evaluate_fn is not None and self.evaluate_at_start:
            result.first_metrics = self.run_evaluation()
            result.metrics = result.first_metrics
        stream = self._micro_batches()
        bar = progress_bar(config.max_steps, self.step, context.is_main and config.progress, "train")
        self._clock_origin = (self.clock(), self.elapsed_seconds)
        window = [self._clock_origin[0], 0]  # start and token count of the tokens/s window
        nonfinite_in_a_row = 0
        stop = False
        while self.step < config.max_steps and not stop:
            micro_batches = [next(stream) for _ in range(self.accumulation)]
            loss, parts, tokens, grad_norm = self._train_step(micro_batches)
            window[1] += tokens
            self.step += 1
            now = self._read_clock()
            # After the clock: a time-budget schedule reads the elapsed time of this very step.
            for scheduler in self.schedulers:
                scheduler.step()
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                nonfinite_in_a_row += 1
                result.skipped_steps += 1
                self.print(f"step {self.step}: non-finite loss or gradient ({loss}, {grad_norm}); step skipped")
                if nonfinite_in_a_row >= config.max_nonfinite_steps:
                    raise BertforgeError(
                        f"the loss or gradient was not finite for {nonfinite_in_a_row} steps in a row "
                        f"(at step {self.step}); lower train.learning_rate, use bf16 instead of fp16, "
                        f"or check the data")
                continue
            nonfinite_in_a_row = 0
            bar.update(1)
            last = budget_used(self.step, config.max_steps, self.elapsed_seconds, config.time_limit_minutes) >= 1
            if self.step % config.log_every == 0 or last:
                self._log_step(bar, window, now, loss, parts, grad_norm)
            if self.evaluate_fn is not None and (last or (config.eval_every and self.step % config.eval_every == 0)):
                result.metrics = self.run_evaluation()
                if self._after_evaluation(result.metrics):
                    stop = result.stopped_early = True
            if last or stop or (config.save_every and self.step % config.save_every == 0):
                self.save()
            if last and self.step < config.max_steps:
                stop = result.stopped_early = True  # the time limit
        bar.close()
        result.step = self.step
        self._read_clock()
        result.elapsed_seconds = self.elapsed_seconds
        self._clock_origin = None
        self.log.close()
        return result

    def _elapsed(self) -> float:
        return self.elapsed_seconds

    def _read_clock(self) -> float:
        """Read the clock once: update `elapsed_seconds` (during `fit`) and return the reading."""
        now = self.clock()
        if self._clock_origin is not None:
            started, before = self._clock_origin
            self.elapsed_seconds = before + now - started
            if self.context.distributed and self.config.time_limit_minutes is not None:
                # One elapsed time for all ranks, so that they stop at the same step (a rank that
                # stopped alone would leave the others waiting in a collective) and share the schedule.
                mean = distributed.all_reduce_sum(torch.tensor([self.elapsed_seconds], dtype=torch.float64),
                                                  self.context) / self.context.world_size
                self.elapsed_seconds = float(mean[0])
        return now

    def _log_step(self, bar: Any, window: list, now: float, loss: float, parts: dict[str, float],
                  grad_norm: float) -> None:
        """One train record in metrics.jsonl (and the progress bar), with the tokens/s since the last."""
        tokens_per_second = window[1] / max(now - window[0], 1e-9)
        window[:] = [now, 0]
        lr = self.scheduler.get_last_lr()[0]
        self.log.write({"step": self.step, "split": "train", "loss": loss, **parts, "lr": lr,
                        "grad_norm": grad_norm, "tokens_per_second": tokens_per_second,
                        "elapsed_seconds": self.elapsed_seconds})
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:,.0f}", lr=f"{lr:.2e}", refresh=False)

    def _micro_batches(self):
        """Micro-batches forever, moving to the next epoch when one runs out."""
        while True:
            produced = False
            for batch in self.batches:
                produced = True
                yield batch
            if not produced:
                raise BertforgeError("the training data yields no batch (too few instances for the batch size?)")
            state = self.batches.state_dict()
            if state["position"] != 0:  # a loader that does not move to the next epoch by itself
                self.batches.set_epoch(state["epoch"] + 1)

    def _train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> tuple[float, dict[str, float], int, float]:
        context, config = self.context, self.config
        counts = [self.objective.counts(batch) for batch in micro_batches]
        logged_counts = getattr(self.objective, "logged_counts", None)
        shown = counts if logged_counts is None else [logged_counts(batch) for batch in micro_batches]
        names = sorted({name for count in counts for name in count})
        # One all-reduce for both: the loss normalizers and the counts the logged means divide by.
        local_counts = torch.tensor([[count.get(n, 0) for n in names] + [logged.get(n, 0) for n in names]
                                     for count, logged in zip(counts, shown)], dtype=torch.float64).sum(0)
        reduced = distributed.all_reduce_sum(local_counts.clone(), context)
        global_counts, global_shown = reduced[:len(names)], reduced[len(names):]
        loss_sums = torch.zeros(len(names), dtype=torch.float64)
        tokens = 0
        self.model.train()
        for index, batch in enumerate(micro_batches):
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            if context.device.type == "cuda":
                # Pinned host memory lets the copy overlap with the previous micro-batch's kernels.
                batch = {key: value.pin_memory().to(context.device, non_blocking=True) for key, value in batch.items()}
            else:
                batch = dict(batch)
            last = index == len(micro_batches) - 1
            with distributed.no_sync(self.model, not last), autocast(context.device, config.precision):
                losses = self.objective.losses(self.model, batch)
                total = None
                for position, name in enumerate(names):
                    if name not in losses or counts[index].get(name, 0) == 0:
                        continue
                    # Mean over this micro-batch's items, reweighted to a mean over the whole
                    # step's items; times world size because DDP averages gradients over ranks.
                    weight = counts[index][name] / max(float(global_counts[position]), 1.0) * context.world_size
                    term = losses[name].float() * weight
                    total = term if total is None else total + term
                    loss_sums[position] += float(losses[name].detach()) * counts[index][name]
            if total is None:
                total = sum(p.sum() * 0.0 for p in self.model.parameters())
            self.scaler.scale(total).backward()
        loss_sums = distributed.all_reduce_sum(loss_sums, context)
        parts = {f"{name}_loss": float(loss_sums[i] / max(float(global_shown[i]), 1.0)) for i, name in enumerate(names)}
        loss = sum(parts.values())
        grad_norm = self._clip_gradients()
        if math.isfinite(loss) and math.isfinite(grad_norm):
            for optimizer in self.optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return loss, parts, tokens, grad_norm

    def _clip_gradients(self) -> float:
        """Unscale, average the objective's own gradients over ranks (DDP does the model's), and
        clip the norm over model and objective parameters together; returns the norm before."""
        parameters = list(self.model.parameters())
        if self.objective_module is not None:
            own = [p for p in self.objective_module.parameters() if p.grad is not None]
            for param in own:
                if self.context.distributed:
                    param.grad.copy_(distributed.all_reduce_sum(param.grad, self.context) / self.context.world_size)
            parameters += own
        for optimizer in self.optimizers:
            self.scaler.unscale_(optimizer)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))

    # -- evaluation and saving ------------------------------------------------------------

    def run_evaluation(self) -> dict[str, float]:
        model = self.model if self.config.parallelism == "fsdp" and self.context.distributed else self.bare_model
        model.eval()
        with torch.no_grad(), autocast(self.context.device, self.config.precision):
            metrics = self.evaluate_fn(model)
        model.train()
        self.log.write({"step": self.step, "split": "eval", **metrics})
        return metrics

    def _after_evaluation(self, metrics: dict[str, float]) -> bool:
        """Run every hook (each sees every evaluation, none is skipped); True: stop the run."""
        return any([hook.on_evaluate(self, metrics) for hook in self.hooks])

    def save(self) -> Path:
        self._read_clock()  # the time spent evaluating at this step counts too, after a resume
        state: dict[str, Any] = {"data": self.batches.state_dict(), "elapsed_seconds": self.elapsed_seconds,
                                 "hooks": {hook.name: hook.state_dict() for hook in self.hooks}}
        if self.objective_module is not None:
            state["objective"] = {"module": self.objective_module.state_dict(),
                                  "optimizer": self.optimizers[1].state_dict(),
                                  "scheduler": self.schedulers[1].state_dict()}
        return checkpoints.save_checkpoint(self.run_dir, self.step, self.model, self.bare_model, self.optimizer,
                                           self.scheduler, state, self.tokenizer, self.context, self.config.keep_last)

    def print(self, text: str) -> None:
        if self.context.is_main:
            import sys

            print(text, file=sys.stderr, flush=True)
