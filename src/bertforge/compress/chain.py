"""`bertforge compress`: prune -> distill -> int8, over candidate students of decreasing size;
the smallest candidate within the accuracy budget on dev becomes OUT/final.

The chain, for each candidate shape (layers, feed-forward width):
1. prune the teacher to the shape (`bertforge.compress.prune`: layers chosen by the task loss
   when skipped, feed-forward neurons by |activation x gradient| on the training data);
2. distill into that pruned teacher, which is where the student starts, not random weights
   (`bertforge.compress.distill` through `train.Trainer`: T^2 KL of the logits at a
   temperature + hard-label CE, optional hidden-state matching against the teacher layers the
   student kept);
3. quantize to int8 (`bertforge.compress.quantize`: PyTorch dynamic int8 by default, built
   from the fp32 weights as the model loads, or an onnxruntime graph with --quantize-method
   onnx; `bertforge evaluate`, `predict` and `serve` run either, and neither pickles), and score
   the int8 student on dev. With --quantize auto (the default) this happens only where int8
   pays on this machine: the int8 teacher must run faster than the fp32 one and stay within
   the accuracy budget. On a 2-core Xeon with AMX, torch's int8 ran the MiniLM teacher at
   1.39x and lost 0.46 SST-2 points; onnxruntime's ran at 0.8x (PyTorch's fp32 kernels use
   the AMX and AVX-512 units there).

With --augment FILE, the teacher labels each line of FILE and the distillation trains on
--train plus those lines (OUT/augmented-train.jsonl): more of the teacher's knowledge reaches
the student than the labelled rows carry (Tang et al. 2019; TinyBERT's augmentation).

Candidate shapes come from the target speed-up (calibrated once against a timed untrained model
of the first planned shape, `_calibrated`). The int8 teacher is measured first against the
fp32 teacher (same harness, alternated), which gives the share of the target int8 alone
delivers; the rest, target / int8 gain, must come from the smaller shape. A shape's speed-up is
estimated from its multiply-adds per token at the dev set's mean length (per layer 4H^2 for the
attention projections, 2HF for the feed-forward, 2TH for the attention itself); the first
candidate is the largest shape estimated to reach the target, each next one is estimated
`candidate_step` times faster. Among shapes of about the same cost (within 10%) the one that
shrinks depth and width alike is taken. Candidates run from the largest down and the chain
stops at the first one past the budget (accuracy falls with size, so the ones after it would
be past it too); the smallest one within the budget is the result. When none is within, the
most accurate one is kept and the report (and the command) says so plainly.

Every speed in OUT/report.json is measured at the end, in one alternated session
(`bertforge.compress.measure`): the fp32 teacher on PyTorch (as `bertforge evaluate` runs it),
the int8 teacher alone, and every candidate as OUT/final would run it.

Layout: OUT/teacher-int8 (the int8 teacher), OUT/candidates/L<l>-F<f>/{pruned, run, int8},
OUT/final (a copy of the chosen candidate's directory), OUT/report.json. Every model directory
written loads in transformers: a pruned or distilled one as it is, an int8 one as the fp32
weights it keeps (see `bertforge.compress.quantize`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bertforge.compress.config import CompressConfig, PruneConfig
from bertforge.config import BertConfig, to_plain
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_json, atomic_write_text, prepare_output, replace_directory

__all__ = ["Shape", "compress", "estimated_speedup", "plan_shapes"]

Log = Callable[[str], None]
OUTPUTS = ("final", "report.json", "candidates", "teacher-int8", "augmented-train.jsonl")


@dataclass(frozen=True)
class Shape:
    layers: int
    intermediate_size: int
    estimated_speedup: float

    @property
    def name(self) -> str:
        return f"L{self.layers}-F{self.intermediate_size}"


# -- planning -------------------------------------------------------------------------------------


def layer_cost(hidden: int, width: int, length: float) -> float:
    """Multiply-adds per token of one encoder layer: Q, K, V and output projections (4H^2), the
    feed-forward (2HF), attention scores and the weighted sum (2TH)."""
    return 4 * hidden * hidden + 2 * hidden * width + 2 * length * hidden


def estimated_speedup(config: BertConfig, layers: int, width: int, length: float) -> float:
    """The teacher's multiply-adds per token over those of the shape (pooler included)."""
    hidden = config.hidden_size
    full = config.num_hidden_layers * layer_cost(hidden, config.intermediate_size, length) + hidden * hidden
    return full / (layers * layer_cost(hidden, width, length) + hidden * hidden)


def _widths(width: int) -> list[int]:
    return sorted({max(1, round(width * step / 16)) for step in range(1, 17)})


def _pick(shapes: list[Shape], teacher: BertConfig, target: float) -> Shape | None:
    """The largest shape estimated to reach `target`; of those within 10% of its cost, the one
    that shrinks depth and width alike."""
    feasible = [shape for shape in shapes if shape.estimated_speedup >= target * (1 - 1e-9)]
    if not feasible:
        return None
    best = min(shape.estimated_speedup for shape in feasible)
    near = [shape for shape in feasible if shape.estimated_speedup <= best * 1.1]

    def imbalance(shape: Shape) -> float:
        return abs(math.log(shape.layers / teacher.num_hidden_layers)
                   - math.log(shape.intermediate_size / teacher.intermediate_size))
    return min(near, key=lambda shape: (imbalance(shape), shape.estimated_speedup))


def plan_shapes(teacher: BertConfig, target: float, count: int, step: float, length: float) -> list[Shape]:
    """Up to `count` distinct shapes, the first estimated to reach `target`, each next one `step`
    times faster; past the smallest shape, that smallest shape alone ends the list."""
    shapes = [Shape(layers, width, estimated_speedup(teacher, layers, width, length))
              for layers in range(1, teacher.num_hidden_layers + 1) for width in _widths(teacher.intermediate_size)]
    chosen: list[Shape] = []
    goal = max(target, 1.0)
    while len(chosen) < count:
        shape = _pick(shapes, teacher, goal)
        if shape is None:
            smallest = max(shapes, key=lambda candidate: candidate.estimated_speedup)
            if smallest not in chosen:
                chosen.append(smallest)
            break
        if shape not in chosen:
            chosen.append(shape)
        goal = max(goal, shape.estimated_speedup) * step
    return chosen


# -- the steps ------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every step of the chain reads: the config, the teacher's task, tokenizer and
    settings, the dev examples and the timing batches."""

    config: CompressConfig
    out: Path
    task: Any
    tokenizer: Any
    settings: Any
    teacher_config: BertConfig
    dev: list[Any]
    batches: list[dict[str, Any]]
    log: Log
    int8: bool = False
    """Whether the students are quantized (--quantize, and for auto what the teacher measured)."""
    int8_measured_gain: float | None = None
    """The int8 teacher's sentences/s over the fp32 teacher's, measured before the candidates."""
    calibration: dict[str, Any] | None = None
    """How the multiply-add estimate compared with a timed untrained model (`_calibrated`)."""
    distill_train: Path | None = None
    """The distillation data: --train, plus the teacher-labelled --augment text when given."""


def _accuracy(context: Context, model: Any) -> float:
    result = context.task.evaluate(model, context.tokenizer, context.dev, context.settings,
                                   context.config.eval_batch_size)
    return float(result.metrics["accuracy"])


def _describe(context: Context, directory: Path, backend: str) -> dict[str, Any]:
    """Size, parameters and dev accuracy of a model directory on `backend`."""
    from bertforge.compress.measure import directory_bytes, parameter_count, weights_bytes
    from bertforge.tasks.loading import load_model

    loaded = load_model(directory, backend=backend, device="cpu")  # type: ignore[arg-type]
    config = loaded.config
    return {"directory": str(directory), "backend": backend, "layers": config.num_hidden_layers,
            "intermediate_size": config.intermediate_size, "parameters": parameter_count(directory),
            "weights_bytes": weights_bytes(directory, backend), "directory_bytes": directory_bytes(directory),
            "dev_accuracy": _accuracy(context, loaded.model)}


def _quantize(context: Context, source: Path, out: Path) -> None:
    from bertforge.compress.quantize import quantize_model

    config = context.config
    quantize_model(source, out, method=config.quantize_method, per_channel=config.per_channel,
                   fp32_ffn_output=config.fp32_ffn_output, overwrite=True)


def _int8_backend(context: Context) -> str:
    """The backend an int8 directory runs on: torch for PyTorch dynamic int8, onnx for a graph."""
    return "onnx" if context.config.quantize_method == "onnx" else "torch"


def _sides(context: Context, directories: dict[str, tuple[Path, str]]) -> dict[str, dict[str, Any]]:
    """sentences/s of each (directory, backend), measured together (compress.measure)."""
    from bertforge.compress.measure import forward_of, sentences_per_second
    from bertforge.tasks.loading import load_model

    sides = {name: forward_of(load_model(directory, backend=backend, device="cpu").model)  # type: ignore[arg-type]
             for name, (directory, backend) in directories.items()}
    return sentences_per_second(sides, context.batches, context.config.timing_rounds)


def run_candidate(context: Context, shape: Shape) -> dict[str, Any]:
    """Prune, distill and quantize one candidate; its record for the report."""
    from bertforge.compress.distill import DistillConfig, distill
    from bertforge.compress.prune import prune

    config = context.config
    root = context.out / "candidates" / shape.name
    layers = shape.layers if shape.layers < context.teacher_config.num_hidden_layers else None
    context.log(f"candidate {shape.name}: prune (estimated {shape.estimated_speedup:.2f}x fewer multiply-adds)")
    pruned = prune(PruneConfig(model=config.teacher, out=root / "pruned", task_data=config.train,
                               intermediate_size=shape.intermediate_size, layers=layers,
                               layer_choice=config.layer_choice, score=config.score, batches=config.score_batches,
                               batch_size=config.trainer.batch_size, max_length=config.max_length,
                               seed=config.trainer.seed, device=config.trainer.device, overwrite=True), context.log)
    pruned_accuracy = _describe(context, root / "pruned", "torch")["dev_accuracy"]
    context.log(f"candidate {shape.name}: dev accuracy {pruned_accuracy:.4f} after pruning; distill")
    summary = distill(DistillConfig(
        teacher=config.teacher, train=context.distill_train or config.train, dev=config.dev, out=root / "run",
        student_init=root / "pruned",
        task=config.task, temperature=config.temperature, alpha=config.alpha, hidden_weight=config.hidden_weight,
        patience=config.patience, eval_batch_size=config.eval_batch_size, max_length=config.max_length,
        trainer=dataclasses.replace(config.trainer), overwrite=True))
    fp32 = root / "run" / "final"
    if context.int8:
        _quantize(context, fp32, root / "int8")
    model_dir, backend = (root / "int8", _int8_backend(context)) if context.int8 else (fp32, "torch")
    record = {"name": shape.name, **_describe(context, model_dir, backend),
              "estimated_speedup": round(shape.estimated_speedup, 3), "kept_layers": pruned["layers"]["kept"],
              "pruned_dev_accuracy": pruned_accuracy, "fp32_dev_accuracy": summary["dev"].get("accuracy"),
              "distill": {"steps": summary["steps"], "best_step": summary["best_step"],
                          "train_seconds": round(summary["train_seconds"], 1)}}
    context.log(f"candidate {shape.name}: dev accuracy {record['dev_accuracy']:.4f} ({backend}), "
                f"{record['parameters']:,} parameters")
    return record


# -- the command ----------------------------------------------------------------------------------


def _compress_state(directory: Path) -> str | None:
    found = [name for name in OUTPUTS if (directory / name).exists()]
    return f"the outputs of an earlier compress ({', '.join(found)})" if found else None


def _context(config: CompressConfig, out: Path, log: Log) -> Context:
    from bertforge.compress.distill import load_teacher
    from bertforge.compress.measure import timing_batches
    from bertforge.compress.config import DistillConfig

    for path in (config.train, config.dev, *([config.augment] if config.augment is not None else [])):
        if not Path(path).is_file():
            raise BertforgeError("is a directory; expected a data file" if Path(path).is_dir() else "no such file",
                                 path=path)
    probe = DistillConfig(teacher=config.teacher, train=config.train, dev=config.dev, out=out, task=config.task,
                          max_length=config.max_length)
    task, teacher, tokenizer, settings = load_teacher(probe)
    dev = task.read(config.dev, settings)
    task.check_labels(dev, teacher.config, config.dev)
    timed = dev[:config.timing_sentences] if config.timing_sentences else dev
    pairs = [example.text_pair for example in timed]
    batches = timing_batches(tokenizer, [example.text for example in timed],
                             pairs if all(pair is not None for pair in pairs) else None,
                             config.timing_batch_size, settings.max_length)
    return Context(config, out, task, tokenizer, settings, teacher.config, dev, batches, log)


def _choose(candidates: list[dict[str, Any]], floor: float) -> tuple[dict[str, Any], bool]:
    within = [candidate for candidate in candidates if candidate["dev_accuracy"] >= floor]
    if within:
        return min(within, key=lambda candidate: candidate["parameters"]), True
    return max(candidates, key=lambda candidate: candidate["dev_accuracy"]), False


def _copy_final(source: Path, out: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        replace_directory(staging, out / "final")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def compress(config: CompressConfig, log: Log | None = None) -> dict[str, Any]:
    """Run the chain (module docstring); write OUT/final and OUT/report.json. Returns the report."""
    out = prepare_output(config.out, kind="directory", finished=_compress_state, overwrite=config.overwrite,
                         inputs=[config.teacher, config.train, config.dev],
                         hint="pass --overwrite to start over")
    log = log or (lambda line: None)
    started = time.perf_counter()
    context = _context(config, out, log)
    for name in OUTPUTS:  # a new run starts without an earlier one's outputs
        entry = out / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    teacher = _describe(context, config.teacher, "torch")
    log(f"teacher: dev accuracy {teacher['dev_accuracy']:.4f}, {teacher['parameters']:,} parameters")
    sides: dict[str, tuple[Path, str]] = {"teacher": (Path(config.teacher), "torch")}
    floor = teacher["dev_accuracy"] - config.accuracy_budget / 100
    gain, teacher_int8 = _int8_teacher(context, sides, floor)
    if config.augment is not None:
        context.distill_train = _augmented_train(context)
    lengths = [int(batch["attention_mask"].sum()) / int(batch["attention_mask"].shape[0]) for batch in context.batches]
    length = sum(lengths) / len(lengths)
    goal = _calibrated(context, config.speedup / max(gain, 1e-6), length)
    shapes = plan_shapes(context.teacher_config, goal, config.candidates, config.candidate_step, length)
    log("candidates: " + ", ".join(f"{shape.name} (~{shape.estimated_speedup:.2f}x)" for shape in shapes))
    candidates = []
    for shape in shapes:
        candidates.append(run_candidate(context, shape))
        if candidates[-1]["dev_accuracy"] < floor:
            log(f"candidate {shape.name} is past the accuracy budget; smaller ones are not tried")
            break
    return _finish(context, teacher, teacher_int8, candidates, sides, gain, floor, started)


def _calibrated(context: Context, target: float, length: float) -> float:
    """The structural target in multiply-add terms. Fewer multiply-adds speed a model up less than
    their ratio (embeddings, layer norms and per-call overheads stay), so an untrained model of
    the first planned shape is timed against the teacher (speed depends on the shape, not on the
    weights) and the target is raised by the estimate's excess over what was measured."""
    from bertforge.compress.measure import forward_of, sentences_per_second
    from bertforge.tasks.loading import load_model

    config = context.config
    shape = plan_shapes(context.teacher_config, target, 1, config.candidate_step, length)[0]
    teacher = load_model(config.teacher, backend="torch", device="cpu").model
    probe_config = dataclasses.replace(context.teacher_config, num_hidden_layers=shape.layers,
                                       intermediate_size=shape.intermediate_size)
    probe = type(teacher)(probe_config).eval()
    speeds = sentences_per_second({"teacher": forward_of(teacher), "probe": forward_of(probe)}, context.batches, 1)
    measured = speeds["probe"]["sentences_per_s"] / speeds["teacher"]["sentences_per_s"]
    factor = max(shape.estimated_speedup / max(measured, 1e-6), 1.0)
    context.calibration = {"shape": shape.name, "estimated_speedup": round(shape.estimated_speedup, 3),
                           "measured_speedup": round(measured, 3), "factor": round(factor, 3)}
    context.log(f"calibration: an untrained {shape.name} ran {measured:.2f}x the teacher's sentences/s against "
                f"{shape.estimated_speedup:.2f}x estimated; planning for {target * factor:.2f}x fewer multiply-adds")
    return target * factor


def _int8_teacher(context: Context, sides: dict[str, tuple[Path, str]],
                  floor: float) -> tuple[float, dict[str, Any] | None]:
    """Quantize and time the teacher (unless --quantize off); decide whether the students are
    int8 (context.int8). Returns (the speed-up int8 gives the students, the int8 teacher's record)."""
    config, out = context.config, context.out
    if config.quantize == "off":
        return 1.0, None
    _quantize(context, Path(config.teacher), out / "teacher-int8")
    teacher_int8 = _describe(context, out / "teacher-int8", _int8_backend(context))
    sides["teacher-int8"] = (out / "teacher-int8", _int8_backend(context))
    first = _sides(context, sides)
    gain = first["teacher-int8"]["sentences_per_s"] / first["teacher"]["sentences_per_s"]
    context.log(f"int8 teacher: {gain:.2f}x the fp32 teacher's sentences/s, dev accuracy "
                f"{teacher_int8['dev_accuracy']:.4f}")
    context.int8_measured_gain = round(gain, 3)
    pays = gain > 1.0 and teacher_int8["dev_accuracy"] >= floor
    context.int8 = config.quantize == "int8" or pays
    if not context.int8:
        context.log("quantize auto: int8 does not pay on this machine (slower, or past the accuracy budget); "
                    "the students stay fp32 on PyTorch")
        return 1.0, teacher_int8
    return gain, teacher_int8


def _augmented_train(context: Context) -> Path:
    """OUT/augmented-train.jsonl: the --train examples, then each line of --augment with the
    teacher's predicted label (its argmax)."""
    from bertforge.tasks.finetune import predict

    config = context.config
    path = Path(config.augment)  # type: ignore[arg-type]
    texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not texts:
        raise BertforgeError("has no text lines to augment with", path=path)
    train = context.task.read(config.train, context.settings)
    if any(example.text_pair is not None for example in train):
        raise BertforgeError("--augment takes single texts, but the training data are text pairs", path=config.train)
    context.log(f"augment: the teacher labels {len(texts):,} lines of {path}")
    labelled = predict(model_dir=Path(config.teacher), task_name=config.task, texts=texts, device="cpu",
                       backend="torch", batch_size=config.eval_batch_size)
    key = context.settings.text_column or "text"
    rows = [{key: example.text, "label": example.label} for example in train]
    rows += [{key: text, "label": record["label"]} for text, record in zip(texts, labelled)]
    out = context.out / "augmented-train.jsonl"
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return out


def _finish(context: Context, teacher: dict[str, Any], teacher_int8: dict[str, Any] | None,
            candidates: list[dict[str, Any]], sides: dict[str, tuple[Path, str]], gain: float, floor: float,
            started: float) -> dict[str, Any]:
    """Time everything together, pick the student, write OUT/final and OUT/report.json."""
    import torch

    config, out = context.config, context.out
    for candidate in candidates:
        sides[candidate["name"]] = (Path(candidate["directory"]), candidate["backend"])
    context.log("timing the teacher, the int8 teacher and every candidate (alternated)")
    speeds = _sides(context, sides)
    base = speeds["teacher"]["sentences_per_s"]
    for record, name in [(teacher, "teacher"), (teacher_int8, "teacher-int8"),
                         *[(candidate, candidate["name"]) for candidate in candidates]]:
        if record is not None:
            record.update(sentences_per_s=round(speeds[name]["sentences_per_s"], 2),
                          speedup=round(speeds[name]["sentences_per_s"] / base, 3), timing_s=speeds[name]["times"])
    for candidate in candidates:
        candidate["within_budget"] = candidate["dev_accuracy"] >= floor
    chosen, within = _choose(candidates, floor)
    _copy_final(Path(chosen["directory"]), out)
    drop = round(100 * (teacher["dev_accuracy"] - chosen["dev_accuracy"]), 2)
    summary = {"final": str(out / "final"), "chosen": chosen["name"], "within_budget": within,
               "teacher_dev_accuracy": teacher["dev_accuracy"], "student_dev_accuracy": chosen["dev_accuracy"],
               "accuracy_drop_points": drop, "accuracy_budget_points": config.accuracy_budget,
               "speedup": chosen["speedup"], "speedup_target": config.speedup,
               "speedup_met": chosen["speedup"] >= config.speedup,
               "parameters": {"teacher": teacher["parameters"], "student": chosen["parameters"]},
               "loads_in_transformers": True}
    if not within:
        summary["note"] = (f"no candidate stayed within {config.accuracy_budget} points of the teacher; OUT/final is "
                           f"the most accurate one, {drop} points below it")
        context.log("warning: " + summary["note"])
    report = {"summary": summary, "teacher": teacher, "teacher_int8": teacher_int8, "student": chosen,
              "candidates": candidates, "int8_gain": round(gain, 3), "students_int8": context.int8,
              "int8_measured_gain": context.int8_measured_gain, "calibration": context.calibration,
              "augmented_train": str(context.distill_train) if context.distill_train else None,
              "structural_target": round(config.speedup / max(gain, 1e-6), 3),
              "transformers": "every model directory written loads in transformers' BertFor* classes; an int8 "
                              "directory (model.onnx) loads there as the fp32 weights kept beside its graph",
              "timing": {"sentences": sum(int(batch["input_ids"].shape[0]) for batch in context.batches),
                         "batch_size": config.timing_batch_size, "rounds": config.timing_rounds,
                         "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                         "machine": platform.processor() or platform.machine()},
              "seconds": round(time.perf_counter() - started, 1), "options": to_plain(config)}
    atomic_write_json(out / "report.json", report)
    return report
