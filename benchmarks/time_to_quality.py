"""Time to quality (issue 16): what B minutes of pretraining buy downstream, for bertforge,
transformers and random init.

For each budget B (minutes of training, `--budgets`, default 15 30 60):

- **bertforge**: `bertforge pretrain --config RECIPE train.time_limit_minutes=B run_dir=WORK/bertforge-B`
  (RECIPE: `--recipe`, default configs/pretrain/cpu-hour.yaml), a separate run with its own
  budget-aware schedule (the decay ends when the time limit does).
- **transformers**: its BertForPreTraining (SDPA attention, the dense masked-LM head at every
  position, every sequence padded to the prepared max length as run_mlm's fixed-length blocks
  are) pretrained for the same B minutes on the same prepared data (the bertforge run's
  data directory: same vocab, same instances, same order and masking seed), with the same
  architecture (the bertforge run's final/config.json, dropout included). The loop is
  run_mlm-style: AdamW without decay on biases and LayerNorm weights, gradient clipping at 1.0,
  warmup then a linear decay. run_mlm has no time-based schedule, so by default the decay is
  the same budget-aware one bertforge uses (`--hf-schedule budget`: a run cut by its time limit
  ends fully decayed); `--hf-schedule probe` instead estimates the steps that fit in B minutes
  from a short timed probe on a throwaway copy and gives run_mlm's plain linear schedule that
  many steps. Its other settings are the bertforge recipe's (peak learning rate, batch size,
  warmup, betas, epsilon, weight decay, masking rate), the best known for this data and budget;
  `--hf-learning-rate`, `--hf-warmup-steps` and `--hf-mask-prob` change them. MLM+NSP where the
  data has sentence pairs (`--hf-objective mlm`: MLM only, BertForMaskedLM; packed MLM-only data
  gets BertForMaskedLM whatever the option says). The model is written with save_pretrained
  (safetensors) beside the run's vocab.txt, and bertforge fine-tunes it as any Hugging Face BERT
  directory. Its minutes hold only training steps (no evaluation during the run), where
  bertforge's trainer clock also counts its periodic evaluations and checkpoints.
- **random init**: the same architecture (the bertforge run's config.json) from random weights
  (`bertforge finetune --init random`). Runs of the same architecture share one result.

Every model is fine-tuned by the same `bertforge finetune` command lines:
SST-2 (configs/finetune/sst2.yaml) on the first 2,000 train rows for 3 epochs, scored on dev
accuracy, 3 seeds (mean and standard error); CoNLL-2003 (configs/finetune/conll2003.yaml) on
the first 2,000 train sentences for 3 epochs, scored on test entity F1 (`--conll-seeds`, one
seed by default).

Held-out masked-LM accuracy is measured the same way for both pretrained sides after training
(bertforge's BertForMaskedLM loaded from each final/ directory, on the first `--eval-batches`
batches of the eval split with BERT's 15% masking and seed 0), so the masking rate a recipe
trains with does not change the figure; bertforge's own end-of-run figures are kept in the JSON.

Caching: every unit of work (a pretraining run, a fine-tune) writes its result to
WORK/results/*.json and is skipped when that file exists, so the benchmark can be run budget by
budget across sessions (`--budgets 15`, later `--budgets 30 60`); the table always shows
everything in WORK. A cached result made with other settings (another preset override, another
number of rows) is an error rather than a silent mix. Run it on an idle machine: the budgets are
wall time.

    python -m benchmarks.time_to_quality --budgets 15
    python -m benchmarks.time_to_quality --budgets 30 60 --conll-seeds 0 1 2
    python -m benchmarks.time_to_quality --render-only          # the table from WORK as it is
    python -m benchmarks.time_to_quality --quick --work /tmp/ttq-quick   # smoke run, a few minutes

Writes benchmarks/results/time_to_quality.{md,json,png} (with --quick: into WORK).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("BERTFORGE_DATA", ROOT.parent / "shared" / "data"))
SIDES = ("bertforge", "transformers", "random")
SIDE_LABELS = {"bertforge": "bertforge", "transformers": "transformers", "random": "random init"}


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """One downstream task as the benchmark runs it."""

    task: str
    """sst2 or conll2003 (the name of its configs/finetune/*.yaml)."""
    rows: int
    """Training rows (SST-2) or sentences (CoNLL) from the start of the train file."""
    epochs: float
    seeds: tuple[int, ...]

    @property
    def metric(self) -> tuple[str, str]:
        """(split, metric) of the reported figure: SST-2 dev accuracy, CoNLL test entity F1."""
        return ("dev", "accuracy") if self.task == "sst2" else ("test", "f1")

    def key(self, seed: int) -> str:
        return f"{self.task}-n{self.rows}-e{self.epochs:g}-s{seed}"


# -- pure pieces: statistics, data subsets, the cache, the table ------------------------------------


def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); the error is
    None for fewer than two values, the mean None for none."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def first_tsv_rows(text: str, count: int) -> str:
    """The header and the first `count` non-empty data rows of a TSV file's text."""
    lines = text.split("\n")
    rows = [line for line in lines[1:] if line.strip()][:count]
    return "\n".join([lines[0], *rows]) + "\n"


def first_conll_sentences(text: str, count: int) -> str:
    """The first `count` sentences (blank-line separated blocks) of a CoNLL file's text, without
    the -DOCSTART- markers (as benchmarks.finetune takes its CoNLL subset)."""
    blocks = [block.strip("\n") for block in re.split(r"\n[ \t\r]*\n", text)]
    kept = [block for block in blocks if block.strip() and not block.startswith("-DOCSTART-")]
    return "\n\n".join(kept[:count]) + "\n"


def budget_name(minutes: float) -> str:
    return f"{minutes:g}"


def cached(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The unit's stored result if `path` exists and was made with `settings`; None if it does
    not exist. A result made with other settings is an error: mixing them would make the table lie."""
    if not path.exists():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("settings") != settings:
        raise SystemExit(f"{path}: made with settings {result.get('settings')}, not {settings}; "
                         "use another --work directory or delete that file")
    return result


def run_unit(path: Path, settings: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The unit's result: the stored one when it exists (nothing runs), else `compute()`'s,
    stored atomically with `settings` and the load average at its start."""
    found = cached(path, settings)
    if found is not None:
        print(f"cached: {path.name}", flush=True)
        return found
    from bertforge.fileio import atomic_write_json

    load = os.getloadavg()
    started = time.time()
    print(f"running: {path.stem} (load average {load[0]:.2f})", flush=True)
    result = {**compute(), "settings": settings, "load_average_at_start": list(load),
              "wall_seconds": time.time() - started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine()}
    atomic_write_json(path, result)
    return result


def tokens_from_metrics(records: list[dict[str, Any]]) -> int:
    """Real (non-padding) tokens trained, from a run's metrics.jsonl train records: each record's
    tokens/s covers the steps since the record before, over exactly its elapsed-time difference
    (the trainer reads one clock for both), so the sum of rate x interval is the token count."""
    tokens, before = 0.0, 0.0
    for record in records:
        if record.get("split") != "train":
            continue
        tokens += record["tokens_per_second"] * (record["elapsed_seconds"] - before)
        before = record["elapsed_seconds"]
    return int(round(tokens))


def summarize(results: list[dict[str, Any]], specs: list[FinetuneSpec]) -> list[dict[str, Any]]:
    """Table rows, one per (budget, side) with a pretraining result: its pretraining figures and
    each task's mean and standard error over the seeds found. Random init, which does not depend on
    the budget, appears at each budget whose bertforge run has its architecture."""
    pretraining = {(r["budget"], r["side"]): r for r in results if r.get("kind") == "pretrain"}
    finetunes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        if result.get("kind") == "finetune":
            finetunes.setdefault((result["model_key"], result["task_key"]), []).append(result)
    rows = []
    for budget in sorted({budget for budget, _ in pretraining}):
        ours = pretraining.get((budget, "bertforge"))
        for side in SIDES:
            source = ours if side == "random" else pretraining.get((budget, side))
            if source is None:
                continue
            model_key = f"random-{source['architecture']}" if side == "random" else source["model_key"]
            row = {"budget": budget, "side": side, "steps": 0 if side == "random" else source["steps"],
                   "tokens": 0 if side == "random" else source["tokens"],
                   "seconds": 0.0 if side == "random" else source["train_seconds"],
                   "mlm_accuracy": None if side == "random" else source.get("heldout", {}).get("mlm_accuracy"),
                   "recipe_sha256": source.get("recipe_sha256"), "machine": source.get("machine")}
            for spec in specs:
                values = [r["value"] for seed in spec.seeds for r in finetunes.get((model_key, spec.key(seed)), [])]
                mean, se = mean_se(values)
                row[spec.task] = {"mean": mean, "se": se, "n": len(values), "values": values}
            rows.append(row)
    return rows


def _score(cell: dict[str, Any] | None) -> str:
    if not cell or cell["mean"] is None:
        return "–"
    if cell["se"] is None:
        return f"{cell['mean']:.3f} (n={cell['n']})"
    return f"{cell['mean']:.3f} ± {cell['se']:.3f} (n={cell['n']})"


def _difference(rows: list[dict[str, Any]], budget: float, task: str, side: str, other: str) -> float | None:
    """Points (x 100) by which `side` beats `other` on `task` at `budget`; None if either is missing."""
    found = {row["side"]: row.get(task) for row in rows if row["budget"] == budget}
    ours, theirs = found.get(side), found.get(other)
    if not ours or not theirs or ours["mean"] is None or theirs["mean"] is None:
        return None
    return 100.0 * (ours["mean"] - theirs["mean"])


TARGETS = [(15.0, "sst2", "random", 5.0), (60.0, "sst2", "random", 10.0), (60.0, "sst2", "transformers", 3.0),
           (60.0, "conll2003", "random", 10.0)]
"""Issue 16's "done means": (budget, task, against, points bertforge must be ahead by)."""


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per issue-16 target whose figures are measured: the margin, the target, met or not."""
    lines = []
    for budget, task, other, points in TARGETS:
        margin = _difference(rows, budget, task, "bertforge", other)
        if margin is not None:
            verdict = "met" if margin >= points else "not met"
            lines.append(f"- {budget:g} min, {task}: bertforge {margin:+.1f} points against {SIDE_LABELS[other]} "
                         f"(target +{points:g}): **{verdict}**")
    return lines


def machine_lines(rows: list[dict[str, Any]], current: str) -> list[str]:
    """Where the pretraining ran: one line when every budget ran on one machine, else one per
    budget (budgets run in different sessions may land on different CPUs). Units stored before
    results carried their machine count as `current`'s."""
    by_budget = {row["budget"]: row.get("machine") or current for row in rows if row["side"] != "random"}
    if len(set(by_budget.values())) <= 1:
        return [f"Machine: {next(iter(by_budget.values()), current)}"]
    return ["Machines (pretraining minutes are wall time, so each budget's figures belong to its machine):", "",
            *[f"- {budget:g} min: {name}" for budget, name in sorted(by_budget.items())]]


def plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}" + ("" if count == 1 else "s")


def render_markdown(rows: list[dict[str, Any]], specs: list[FinetuneSpec], meta: dict[str, Any]) -> str:
    """The results page: the table, the margins, the targets, the machine and the commands."""
    names = {spec.task: spec for spec in specs}
    sst2, conll = names.get("sst2"), names.get("conll2003")
    lines = ["# Time to quality: pretraining minutes against downstream scores", "",
             f"bertforge (`{meta['recipe']}` with `train.time_limit_minutes=B`), transformers' BertForPreTraining "
             f"(run_mlm-style loop, {meta['hf_schedule']}, same data and architecture) and random init, each "
             f"fine-tuned by the same `bertforge finetune` runs: SST-2 on the first {sst2.rows:,} train rows "
             f"({plural(sst2.epochs, 'epoch')}, dev accuracy, mean ± standard error over seeds), CoNLL-2003 on the first "
             f"{conll.rows:,} train sentences ({plural(conll.epochs, 'epoch')}, test entity F1). Held-out MLM accuracy: the "
             "same evaluation for both pretrained sides (15% masking, seed 0). Pretraining minutes are training "
             "wall time on the machine below.", "",
             *machine_lines(rows, meta["machine"]), "",
             "| budget (min) | side | pretrain steps | real tokens (M) | train s | held-out MLM acc | "
             f"SST-2 dev acc ({sst2.rows:,}) | CoNLL-2003 test F1 ({conll.rows:,}) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        mlm = "–" if row["mlm_accuracy"] is None else f"{row['mlm_accuracy']:.3f}"
        lines.append(f"| {row['budget']:g} | {SIDE_LABELS[row['side']]} | {row['steps']:,} | "
                     f"{row['tokens'] / 1e6:.2f} | {row['seconds']:.0f} | {mlm} | {_score(row.get('sst2'))} | "
                     f"{_score(row.get('conll2003'))} |")
    budgets = sorted({row["budget"] for row in rows})
    margins = ["", "Margins of bertforge, in points:", "",
               "| budget (min) | SST-2 vs random init | SST-2 vs transformers | CoNLL vs random init | "
               "CoNLL vs transformers |", "|---:|---:|---:|---:|---:|"]
    for budget in budgets:
        cells = [_difference(rows, budget, task, "bertforge", other)
                 for task in ("sst2", "conll2003") for other in ("random", "transformers")]
        margins.append(f"| {budget:g} | " + " | ".join("–" if c is None else f"{c:+.1f}" for c in cells) + " |")
    lines += margins if budgets else []
    targets = target_lines(rows)
    if targets:
        lines += ["", "Issue 16's targets:", "", *targets]
    shas = sorted({row["recipe_sha256"][:12] for row in rows if row.get("recipe_sha256")})
    if len(shas) > 1:
        lines += ["", f"Note: the pretraining runs used {len(shas)} versions of the recipe (sha256 "
                      f"{', '.join(shas)}); see time_to_quality.json for which."]
    lines += ["", "Produced by (the units were cached, so a table may come from several commands):", ""]
    lines += [f"    {command}" for command in meta["commands"]]
    return "\n".join(lines) + "\n"


# -- the machine ------------------------------------------------------------------------------------


def machine() -> str:
    """CPU model, cores, whether it computes bf16 natively (avx512_bf16 or amx_bf16 in
    /proc/cpuinfo), torch and transformers versions."""
    import torch
    import transformers

    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    native = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    bf16 = f"native bf16 ({', '.join(native)})" if native else "no native bf16 (neither avx512_bf16 nor amx_bf16)"
    return (f"{model}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), transformers {transformers.__version__}")


# -- running the units -------------------------------------------------------------------------------


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run `command` from the repository root with its output in `log` (`env` added to this
    process's environment); on failure, show the log's end and stop (a benchmark with a missing
    unit would render a misleading table)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ {shlex.join(command)}\n    (output: {log})", flush=True)
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.call(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise SystemExit(f"failed with exit status {code}: {shlex.join(command)}\n" + "\n".join(tail))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def architecture_key(final: Path) -> str:
    """A short hash of a model's config.json and vocab.txt: runs with the same key share one
    random-init result."""
    config = json.loads((final / "config.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8"))
    digest.update((final / "vocab.txt").read_bytes())
    return digest.hexdigest()[:12]


def data_directory(run_dir: Path) -> Path:
    """The prepared data a bertforge pretraining run trained on (its config.yaml says)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    prepared = (config.get("data") or {}).get("prepared")
    return Path(prepared) if prepared else run_dir / "data"


def pretrain_bertforge(args: argparse.Namespace, minutes: float) -> dict[str, Any]:
    """`bertforge pretrain` for `minutes`, then the common held-out evaluation of its final/."""
    from benchmarks.finetune import in_child

    run_dir = args.work / f"bertforge-{budget_name(minutes)}"
    command = [sys.executable, "-m", "bertforge", "pretrain", "--config", str(args.recipe),
               f"train.time_limit_minutes={minutes:g}", f"run_dir={run_dir}", "--quiet", *args.pretrain_overrides]
    if run_dir.exists():
        command.append("--overwrite")  # a run that stopped before its result was stored
    run_logged(command, args.work / "logs" / f"bertforge-{budget_name(minutes)}.log")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    train = [record for record in records if record.get("split") == "train"]
    own = [record for record in records if record.get("split") == "eval"]
    heldout = in_child(heldout_mlm, run_dir / "final", data_directory(run_dir), args.eval_batches)
    return {"kind": "pretrain", "side": "bertforge", "budget": minutes,
            "model_key": f"bertforge-{budget_name(minutes)}", "final": str(run_dir / "final"),
            "steps": train[-1]["step"], "tokens": tokens_from_metrics(records),
            "train_seconds": train[-1]["elapsed_seconds"], "heldout": heldout,
            "own_last_eval": own[-1] if own else None, "architecture": architecture_key(run_dir / "final"),
            "recipe": str(args.recipe), "recipe_sha256": file_sha256(ROOT / args.recipe),
            "command": shlex.join(["bertforge", *command[3:]])}


def heldout_mlm(final: Path, data_dir: Path, max_batches: int) -> dict[str, float]:
    """Held-out masked-LM figures of the model in `final`, the same way for every side: bertforge's
    BertForMaskedLM from that directory, the first `max_batches` batches of 64 of the eval split,
    BERT's masking (15%, 80/10/10) drawn with seed 0, fp32."""
    import warnings

    import torch

    from bertforge.data import MaskingConfig, PretrainingBatches, PretrainingDataset
    from bertforge.model import BertForMaskedLM
    from bertforge.train.pretraining import evaluate_pretraining, most_common_token

    train_set, eval_set = PretrainingDataset(data_dir, "train"), PretrainingDataset(data_dir, "eval")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NSP head and pooler are not needed here
        model = BertForMaskedLM.from_pretrained(final).eval()
    batches = PretrainingBatches(eval_set, batch_size=64, masking=MaskingConfig(), seed=0, shuffle=False,
                                 drop_last=False)
    baseline = most_common_token(train_set.token_counts(), train_set.special_ids.values())
    with torch.no_grad():
        return evaluate_pretraining(model, batches, torch.device("cpu"), max_batches, baseline)


def hf_model(final: Path, objective: str):
    """transformers' BertForPreTraining (or BertForMaskedLM for `mlm`) with SDPA attention, the
    architecture of bertforge's `final`/config.json, transformers' own initialization."""
    import transformers

    from benchmarks.common import hf_config
    from bertforge.config import BertConfig

    config = hf_config(BertConfig.from_json_file(final / "config.json"), "sdpa")
    config.architectures = ["BertForMaskedLM" if objective == "mlm" else "BertForPreTraining"]
    cls = transformers.BertForMaskedLM if objective == "mlm" else transformers.BertForPreTraining
    return cls(config)


def _hf_step(model, batch: dict[str, Any], micro: int, precision: str, max_grad_norm: float | None) -> None:
    """Forward and backward of one optimizer step's batch in micro-batches of `micro` rows (each
    micro-batch's mean loss weighted equally, as transformers' Trainer accumulates), then clipping."""
    import torch

    rows = batch["input_ids"].shape[0]
    parts = max(1, -(-rows // micro))
    for start in range(0, rows, micro):
        piece = {key: value[start:start + micro] for key, value in batch.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**piece).loss / parts
        loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)


def _hf_optimizer(model, train):
    """run_mlm's AdamW: no weight decay on biases and LayerNorm weights (the 1-D parameters)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=train.learning_rate,
                             betas=(train.beta1, train.beta2), eps=train.epsilon)


def _batch_stream(batches, objective: str):
    """Batches forever, epoch after epoch; without the NSP labels for an MLM-only objective."""
    while True:
        for batch in batches:
            batch = dict(batch)
            if objective == "mlm":
                batch.pop("next_sentence_label", None)
            yield batch


def probe_steps(model, batches, train, minutes: float, objective: str, precision: str, probe: int = 8) -> int:
    """Steps that fit in `minutes`, from the median time of `probe` steps (after 2 untimed ones)
    on a throwaway copy of the model and optimizer: run_mlm's schedule needs a step count."""
    import copy
    import statistics

    scratch = copy.deepcopy(model)
    optimizer = _hf_optimizer(scratch, train)
    stream = _batch_stream(batches, objective)
    micro = train.micro_batch_size or train.batch_size
    times = []
    for index in range(probe + 2):
        start = time.perf_counter()
        _hf_step(scratch, next(stream), micro, precision, train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= 2:
            times.append(time.perf_counter() - start)
    batches.set_epoch(0)
    return max(1, int(minutes * 60 / statistics.median(times)))


def hf_train(model, batches, train, minutes: float, objective: str, precision: str, schedule: str) -> dict[str, Any]:
    """Train `model` for `minutes` of wall time (batch building included, as bertforge's trainer
    clock counts it). `schedule`: budget (bertforge's budget-aware decay on this loop's own
    clock) or probe (a linear decay over the steps a timed probe says fit)."""
    import torch

    from bertforge.train.schedule import budget_used, build_schedule

    if schedule == "probe":
        plan = dataclasses.replace(train, max_steps=probe_steps(model, batches, train, minutes, objective, precision),
                                   time_limit_minutes=None, schedule_budget="steps")
    else:
        plan = dataclasses.replace(train, time_limit_minutes=minutes, schedule_budget="time")
    optimizer = _hf_optimizer(model, plan)
    clock = {"elapsed": 0.0}
    scheduler = build_schedule(optimizer, plan, lambda: clock["elapsed"])
    micro = plan.micro_batch_size or plan.batch_size
    step, tokens, positions = 0, 0, 0
    model.train()
    stream = _batch_stream(batches, objective)
    start = time.perf_counter()
    while True:
        batch = next(stream)
        _hf_step(model, batch, micro, precision, plan.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += int(batch["attention_mask"].sum())
        positions += int(batch["attention_mask"].numel())
        clock["elapsed"] = time.perf_counter() - start
        scheduler.step()
        # The same end as bertforge's trainer: max_steps or the time limit, whichever comes first.
        if budget_used(step, plan.max_steps, clock["elapsed"], minutes) >= 1:
            break
    return {"steps": step, "tokens": tokens, "padded_positions": positions, "train_seconds": clock["elapsed"],
            "schedule_steps": plan.max_steps, "final_lr": scheduler.get_last_lr()[0],
            "torch_threads": torch.get_num_threads()}


def pretrain_transformers_child(bertforge_dir: str, out: str, minutes: float, objective: str, schedule: str,
                                learning_rate: float | None, mask_prob: float | None,
                                warmup_steps: int | None = None) -> dict[str, Any]:
    """The transformers side, in its own process: the bertforge run's data and settings, the HF
    model and loop, save_pretrained into `out`/final with the run's vocab beside it."""
    import torch
    import yaml

    from bertforge.data import MaskingConfig, PretrainingBatches, PretrainingDataset
    from bertforge.fileio import replace_directory
    from bertforge.train.config import TrainConfig
    from bertforge.train.precision import resolve_precision

    run_dir, out_dir = Path(bertforge_dir), Path(out)
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    train = TrainConfig(**recipe["train"])
    if learning_rate is not None:
        train = dataclasses.replace(train, learning_rate=learning_rate)
    if warmup_steps is not None:
        train = dataclasses.replace(train, warmup_steps=warmup_steps)
    masking = MaskingConfig(**(recipe["data"].get("masking") or {}))
    if mask_prob is not None:
        masking = dataclasses.replace(masking, masked_lm_prob=mask_prob)
    train_set = PretrainingDataset(data_directory(run_dir), "train")
    if train_set.mode == "mlm":
        objective = "mlm"  # packed single segments: there is no sentence pair to predict
    precision = resolve_precision(train.precision, torch.device("cpu")).precision
    batches = PretrainingBatches(train_set, batch_size=train.batch_size, masking=masking, seed=train.seed,
                                 pad_to="max_length")
    torch.manual_seed(train.seed)
    model = hf_model(run_dir / "final", objective)
    figures = hf_train(model, batches, train, minutes, objective, precision, schedule)
    temporary = out_dir / ".final.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    for name in ("vocab.txt", "tokenizer_config.json"):
        if (run_dir / "final" / name).exists():
            shutil.copy2(run_dir / "final" / name, temporary / name)
    replace_directory(temporary, out_dir / "final")
    return {**figures, "objective": objective, "precision": precision, "attention": model.config._attn_implementation,
            "learning_rate": train.learning_rate, "warmup_steps": train.warmup(), "batch_size": train.batch_size,
            "masked_lm_prob": masking.masked_lm_prob, "padding": f"max_length {train_set.max_seq_length}"}


def pretrain_transformers(args: argparse.Namespace, minutes: float, ours: dict[str, Any]) -> dict[str, Any]:
    """The transformers side for `minutes` beside the bertforge run `ours`, then the common
    held-out evaluation."""
    from benchmarks.finetune import in_child

    name = budget_name(minutes)
    run_dir, out = args.work / f"bertforge-{name}", args.work / f"transformers-{name}"
    out.mkdir(parents=True, exist_ok=True)
    figures = in_child(pretrain_transformers_child, str(run_dir), str(out), minutes, args.hf_objective,
                       args.hf_schedule, args.hf_learning_rate, args.hf_mask_prob, args.hf_warmup_steps)
    heldout = in_child(heldout_mlm, out / "final", data_directory(run_dir), args.eval_batches)
    return {"kind": "pretrain", "side": "transformers", "budget": minutes, "model_key": f"transformers-{name}",
            "final": str(out / "final"), **figures, "heldout": heldout, "architecture": ours["architecture"],
            "recipe": ours["recipe"], "recipe_sha256": ours["recipe_sha256"],
            "command": "benchmarks.time_to_quality (transformers side, in process)"}


def subset_files(args: argparse.Namespace, specs: list[FinetuneSpec]) -> dict[str, Path]:
    """The training subsets (the first N rows or sentences), written once under WORK/data."""
    from bertforge.fileio import atomic_write_text

    paths = {}
    for spec in specs:
        if spec.task == "sst2":
            source, suffix, take = DATA / "glue/sst2/train.tsv", "tsv", first_tsv_rows
        else:
            source, suffix, take = DATA / "conll2003/train.txt", "txt", first_conll_sentences
        path = args.work / "data" / f"{spec.task}-train-{spec.rows}.{suffix}"
        if not path.exists():
            atomic_write_text(path, take(source.read_text(encoding="utf-8"), spec.rows))
        paths[spec.task] = path
    return paths


def finetune(args: argparse.Namespace, spec: FinetuneSpec, seed: int, model_key: str, model_dir: Path,
             random_init: bool, train_file: Path) -> dict[str, Any]:
    """One `bertforge finetune` run (the task's configs/finetune recipe, the subset, `seed`)."""
    out = args.work / "finetune" / f"{model_key}-{spec.key(seed)}"
    evaluation = (["--dev", str(DATA / "glue/sst2/dev.tsv")] if spec.task == "sst2" else
                  ["--dev", str(DATA / "conll2003/valid.txt"), "--test", str(DATA / "conll2003/test.txt")])
    command = [sys.executable, "-m", "bertforge", "finetune", "--config", f"configs/finetune/{spec.task}.yaml",
               "--model", str(model_dir), "--train", str(train_file), *evaluation, "--out", str(out),
               "--epochs", f"{spec.epochs:g}", f"trainer.seed={seed}", "trainer.progress=false"]
    if random_init:
        command += ["--init", "random"]
    if out.exists():
        command.append("--overwrite")  # a run that stopped before its result was stored
    run_logged(command, args.work / "logs" / f"{out.name}.log")
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))
    split, metric = spec.metric
    return {"kind": "finetune", "model_key": model_key, "task_key": spec.key(seed), "task": spec.task, "seed": seed,
            "split": split, "metric": metric, "value": float(summary[split][metric]), "metrics": summary[split],
            "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "command": shlex.join(["bertforge", *command[3:]])}


def run_budget(args: argparse.Namespace, minutes: float, specs: list[FinetuneSpec], subsets: dict[str, Path]) -> None:
    """Every unit of one budget: the pretraining runs, then each side's fine-tunes (cached units skip)."""
    results = args.work / "results"
    name = budget_name(minutes)
    pretrain_settings = {"recipe": str(args.recipe), "overrides": args.pretrain_overrides,
                         "eval_batches": args.eval_batches}
    ours = run_unit(results / f"pretrain-bertforge-{name}.json", pretrain_settings,
                    lambda: pretrain_bertforge(args, minutes))
    models = {}
    if "bertforge" in args.sides:
        models["bertforge"] = (ours["model_key"], Path(ours["final"]), False)
    if "transformers" in args.sides:
        hf_settings = {**pretrain_settings, "objective": args.hf_objective, "schedule": args.hf_schedule,
                       "learning_rate": args.hf_learning_rate, "mask_prob": args.hf_mask_prob,
                       "warmup_steps": args.hf_warmup_steps}
        theirs = run_unit(results / f"pretrain-transformers-{name}.json", hf_settings,
                          lambda: pretrain_transformers(args, minutes, ours))
        models["transformers"] = (theirs["model_key"], Path(theirs["final"]), False)
    if "random" in args.sides:
        models["random"] = (f"random-{ours['architecture']}", Path(ours["final"]), True)
    for side, (model_key, model_dir, random_init) in models.items():
        for spec in specs:
            for seed in spec.seeds:
                run_unit(results / f"finetune-{model_key}-{spec.key(seed)}.json",
                         {"rows": spec.rows, "epochs": spec.epochs},
                         lambda: finetune(args, spec, seed, model_key, model_dir, random_init, subsets[spec.task]))


# -- output --------------------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Downstream score against pretraining minutes, one line per side: SST-2 (error bars: the
    standard error over seeds) and CoNLL-2003. False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("sst2", "SST-2 dev accuracy"), ("conll2003", "CoNLL-2003 test entity F1"))
    for axis, (task, label) in zip(axes, panels):
        for side in SIDES:
            points = [(row["budget"], row[task]) for row in rows
                      if row["side"] == side and row.get(task) and row[task]["mean"] is not None]
            if not points:
                continue
            axis.errorbar([budget for budget, _ in points], [cell["mean"] for _, cell in points],
                          yerr=[cell["se"] or 0.0 for _, cell in points], marker="o", capsize=3,
                          linestyle="--" if side == "random" else "-", label=SIDE_LABELS[side])
        axis.set_xlabel("pretraining minutes (training wall time)")
        axis.set_ylabel(label)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle("Time to quality: what the pretraining minutes buy downstream")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def record_command(work: Path, module: str = "benchmarks.time_to_quality") -> list[str]:
    """This invocation's command line (`python -m MODULE ...`) added to WORK/commands.json
    (once); all of them, in order."""
    from bertforge.fileio import atomic_write_json

    path = work / "commands.json"
    commands = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    command = shlex.join(["python", "-m", module, *sys.argv[1:]])
    if command not in commands:
        commands.append(command)
        atomic_write_json(path, commands)
    return commands


def write_outputs(args: argparse.Namespace, specs: list[FinetuneSpec]) -> None:
    """time_to_quality.{md,json,png} from every result in WORK/results."""
    from bertforge.fileio import atomic_write_json, atomic_write_text

    results = [json.loads(path.read_text(encoding="utf-8")) for path in sorted((args.work / "results").glob("*.json"))]
    rows = summarize(results, specs)
    commands_file = args.work / "commands.json"
    # The recipes the stored runs used (a later --recipe does not relabel earlier runs).
    recipes = sorted({r["recipe"] for r in results if r.get("kind") == "pretrain"}) or [str(args.recipe)]
    meta = {"recipe": "`, `".join(recipes), "machine": machine(),
            "hf_schedule": ("budget-aware decay as bertforge's" if args.hf_schedule == "budget"
                            else "linear decay over the steps a timed probe fits in the budget"),
            "commands": json.loads(commands_file.read_text(encoding="utf-8")) if commands_file.exists() else []}
    out = args.results_dir
    atomic_write_text(out / "time_to_quality.md", render_markdown(rows, specs, meta))
    atomic_write_json(out / "time_to_quality.json", {"meta": meta, "rows": rows, "units": results})
    drawn = plot(rows, out / "time_to_quality.png")
    print(f"wrote {out / 'time_to_quality.md'}, .json" + (", .png" if drawn else " (no matplotlib: no plot)"))


# -- command line -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[15.0, 30.0, 60.0],
                        help="pretraining budgets in minutes of training, one run each")
    parser.add_argument("--recipe", type=Path, default=Path("configs/pretrain/cpu-hour.yaml"),
                        help="bertforge's pretraining recipe (relative to the repository root)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where runs and cached results live (default runs/time_to_quality; "
                             "with --quick runs/time_to_quality-quick)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the table goes (default benchmarks/results; with --quick the work directory)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--sst2-rows", type=int, default=2000)
    parser.add_argument("--sst2-epochs", type=float, default=3.0)
    parser.add_argument("--sst2-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conll-rows", type=int, default=2000)
    parser.add_argument("--conll-epochs", type=float, default=3.0)
    parser.add_argument("--conll-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hf-objective", choices=("nsp", "mlm"), default="nsp",
                        help="transformers side: MLM+NSP (BertForPreTraining; MLM only when the data has no "
                             "sentence pairs) or MLM only (BertForMaskedLM)")
    parser.add_argument("--hf-schedule", choices=("budget", "probe"), default="budget",
                        help="transformers side: bertforge's budget-aware decay, or run_mlm's linear decay over "
                             "the steps a timed probe fits in the budget")
    parser.add_argument("--hf-learning-rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--hf-mask-prob", type=float, default=None, help="default: the recipe's masking rate")
    parser.add_argument("--hf-warmup-steps", type=int, default=None,
                        help="default: the recipe's (a side that takes fewer steps may want fewer)")
    parser.add_argument("--eval-batches", type=int, default=50,
                        help="held-out batches of 64 for the common masked-LM evaluation")
    parser.add_argument("--render-only", action="store_true", help="only rebuild the table from the work directory")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of the whole path: 0.5 min, the tiny preset, 200 SST-2 rows, 1 epoch, "
                             "1 seed, 100 CoNLL sentences")
    args = parser.parse_args(argv)
    args.pretrain_overrides = []
    if args.quick:
        args.budgets, args.pretrain_overrides = [0.5], ["model.preset=tiny"]
        args.sst2_rows, args.sst2_epochs, args.sst2_seeds = 200, 1.0, [0]
        args.conll_rows, args.conll_epochs, args.conll_seeds = 100, 1.0, [0]
        args.eval_batches = min(args.eval_batches, 10)
    args.work = args.work or Path("runs/time_to_quality-quick" if args.quick else "runs/time_to_quality")
    args.results_dir = args.results_dir or (args.work if args.quick else RESULTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = [FinetuneSpec("sst2", args.sst2_rows, args.sst2_epochs, tuple(args.sst2_seeds)),
             FinetuneSpec("conll2003", args.conll_rows, args.conll_epochs, tuple(args.conll_seeds))]
    if not args.render_only:
        recipe = args.recipe if args.recipe.is_absolute() else ROOT / args.recipe
        if not recipe.exists():
            raise SystemExit(f"{args.recipe}: no such recipe (pass --recipe, e.g. configs/pretrain/mini-cpu.yaml)")
        # Absolute: the child processes run from the repository root, wherever this was started.
        args.work = args.work.resolve()
        record_command(args.work)
        subsets = subset_files(args, specs)
        started = time.time()
        for minutes in args.budgets:
            run_budget(args, minutes, specs, subsets)
        print(f"all units done in {(time.time() - started) / 60:.1f} min", flush=True)
    write_outputs(args, specs)


if __name__ == "__main__":
    main()
