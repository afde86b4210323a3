"""`python -m benchmarks.compress --chain` (and `--quick`): `bertforge compress` at several
target speed-ups on SST-2, the with/without-teacher comparison, one alternated timing session,
and the table and plot. See the docstring of benchmarks/compress.py for what each stage does."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.compress import DATA, RESULTS, minilm_dir

SST2_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "sst2.yaml"
QUIET = {"progress": False, "tensorboard": False}


def log(message: str) -> None:
    print(message, flush=True)


# -- the teacher ------------------------------------------------------------------------------------


def sst2_rows(work: Path, rows: int) -> Path:
    """The SST-2 training rows benchmarks.finetune draws (seed 0): the issue-5 recipe's data."""
    from benchmarks.finetune import prepare_data

    folder = work / f"sst2-{rows}"
    if not (folder / "train.tsv").exists():
        folder.mkdir(parents=True, exist_ok=True)
        prepare_data("sst2", folder, rows, 0)
    return folder / "train.tsv"


def unlabelled_sst2(work: Path, train: Path, rows: int) -> Path | None:
    """The first `rows` SST-2 training sentences that are not in `train`, text only: what the
    teacher labels for --augment (0 rows: None)."""
    if rows <= 0:
        return None
    out = work / f"sst2-unlabelled-{rows}.txt"
    if not out.exists():
        taken = {line.split("\t")[0] for line in train.read_text(encoding="utf-8").split("\n")[1:] if line.strip()}
        lines = (DATA / "glue/sst2/train.tsv").read_text(encoding="utf-8").split("\n")[1:]
        free = [sentence for sentence in (line.split("\t")[0].strip() for line in lines if line.strip())
                if sentence and sentence not in taken]
        out.write_text("".join(sentence + "\n" for sentence in free[:rows]), encoding="utf-8")
    return out


def minilm_teacher(work: Path, train: Path, dev: Path) -> Path:
    """all-MiniLM-L6-v2 fine-tuned with configs/finetune/sst2.yaml on `train` (cached)."""
    from bertforge.config import load_config
    from bertforge.tasks.finetune import FinetuneRun, finetune

    run = work / "teacher"
    if not (run / "results.json").exists():
        config = load_config(FinetuneRun, SST2_RECIPE, [f"train={train}", f"dev={dev}", f"out={run}",
                                                        f"model={minilm_dir()}", "trainer.progress=false",
                                                        "trainer.tensorboard=false", "overwrite=true"])
        summary = finetune(config)
        log(f"teacher: dev accuracy {summary['dev']['accuracy']:.4f} after {summary['steps']} steps "
            f"({summary['train_seconds']:.0f} s)")
    return run / "final"


def tiny_teacher(work: Path, train: Path, dev: Path) -> Path:
    """--quick: a random tiny 4-layer model (bert-base-uncased vocab) fine-tuned for 200 steps."""
    from bertforge.config import BertConfig
    from bertforge.model import BertModel
    from bertforge.tasks.finetune import FinetuneRun, finetune
    from bertforge.tokenizer import BertTokenizer
    from bertforge.train.config import TrainConfig

    run = work / "teacher"
    if not (run / "results.json").exists():
        tokenizer = BertTokenizer(DATA / "vocab/bert-base-uncased-vocab.txt", lowercase=True)
        torch.manual_seed(0)
        BertModel(BertConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, num_hidden_layers=4,
                                         max_position_embeddings=128)).save_pretrained(work / "base", tokenizer)
        trainer = TrainConfig(batch_size=32, max_steps=200, learning_rate=1e-3, warmup_ratio=0.1, keep_last=1,
                              eval_every=50, **QUIET)
        finetune(FinetuneRun(task="classify", model=work / "base", train=train, dev=dev, out=run, max_steps=200,
                             settings={"max_length": 64}, trainer=trainer, overwrite=True))
    return run / "final"


# -- the chain, and the comparison without a teacher -----------------------------------------------------


def compress_at(args: argparse.Namespace, teacher: Path, train: Path, dev: Path, speedup: float) -> dict[str, Any]:
    from bertforge.compress.chain import compress
    from bertforge.compress.config import CompressConfig, CompressTrainConfig

    out = args.work / f"compress-x{speedup:g}"
    if (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())
    steps = args.chain_steps
    trainer = CompressTrainConfig(max_steps=steps, batch_size=32, learning_rate=args.chain_learning_rate,
                                  eval_every=max(steps // 5, 1), seed=args.seed, device="cpu", precision="fp32",
                                  **QUIET)
    config = CompressConfig(teacher=teacher, train=train, dev=dev, out=out, speedup=speedup, augment=args.augment,
                            accuracy_budget=args.accuracy_budget, candidates=args.candidates,
                            hidden_weight=args.hidden_weight, temperature=args.temperature, alpha=args.alpha,
                            timing_rounds=2, timing_sentences=256 if args.quick else None, trainer=trainer,
                            overwrite=True)
    started = time.perf_counter()
    report = compress(config, log=log)
    log(f"x{speedup:g}: {json.dumps(report['summary'])} ({time.perf_counter() - started:.0f} s)")
    return report


def baseline(args: argparse.Namespace, report: dict[str, Any], teacher: Path, train: Path, dev: Path) -> dict[str, Any]:
    """The chosen student's shape, distilled from its pruned init with and without the teacher,
    for each seed (same steps, batches, learning rate): fp32 dev accuracy."""
    from bertforge.compress.config import CompressTrainConfig, DistillConfig
    from bertforge.compress.distill import distill

    chosen = report["student"]
    pruned = Path(report["options"]["out"]) / "candidates" / chosen["name"] / "pruned"
    seeds = [int(seed) for seed in args.baseline_seeds.split(",") if seed.strip()]
    results: dict[str, Any] = {"student": chosen["name"], "init": str(pruned), "seeds": seeds}
    for use_teacher in (True, False):
        scores = []
        for seed in seeds:
            out = args.work / "baseline" / f"{chosen['name']}-{'teacher' if use_teacher else 'alone'}-s{seed}"
            if not (out / "results.json").exists():
                steps = args.chain_steps
                trainer = CompressTrainConfig(max_steps=steps, batch_size=32, learning_rate=args.chain_learning_rate,
                                              eval_every=max(steps // 5, 1), seed=seed, device="cpu",
                                              precision="fp32", **QUIET)
                # With the teacher, the data compress distilled on (--augment included); without
                # one, the labelled rows alone: nothing labels the extra text.
                data = Path(report["augmented_train"]) if use_teacher and report.get("augmented_train") else train
                distill(DistillConfig(teacher=teacher, train=data, dev=dev, out=out, student_init=pruned,
                                      use_teacher=use_teacher, temperature=args.temperature, alpha=args.alpha,
                                      hidden_weight=args.hidden_weight, trainer=trainer, overwrite=True))
            scores.append(json.loads((out / "results.json").read_text())["dev"]["accuracy"])
        name = "with_teacher" if use_teacher else "without_teacher"
        results[name] = {"accuracy": scores, "mean": statistics.fmean(scores)}
        log(f"{chosen['name']} {name}: {scores}")
    results["gain_points"] = 100 * (results["with_teacher"]["mean"] - results["without_teacher"]["mean"])
    return results


# -- timing, the table and the plot ----------------------------------------------------------------------


def points(reports: dict[float, dict[str, Any]]) -> list[dict[str, Any]]:
    """The plotted models: the fp32 teacher, the int8 teacher alone, each target's student."""
    first = next(iter(reports.values()))
    found = [{**first["teacher"], "name": "teacher (fp32)"}, {**first["teacher_int8"], "name": "teacher int8 alone"}]
    for speedup, report in reports.items():
        kind = "int8" if report["students_int8"] else "fp32"
        found.append({**report["student"], "name": f"student x{speedup:g} ({report['student']['name']}, {kind})",
                      "shape": report["student"]["name"], "target": speedup,
                      "within_budget": report["summary"]["within_budget"]})
    return found


def time_all(found: list[dict[str, Any]], dev: Path, rounds: int, quick: bool) -> None:
    """One alternated session over every point (adds sentences_per_s and speedup in place)."""
    from bertforge.compress.measure import forward_of, sentences_per_second, timing_batches
    from bertforge.tasks.loading import load_model

    teacher = load_model(found[0]["directory"], backend="torch", device="cpu")
    examples = teacher.task.read(dev, teacher.settings)[:256 if quick else None]
    batches = timing_batches(teacher.tokenizer, [example.text for example in examples], None, 64,
                             teacher.settings.max_length)
    sides = {}
    for point in found:
        if point["name"] not in sides:
            sides[point["name"]] = forward_of(load_model(point["directory"], backend=point["backend"]).model)
    speeds = sentences_per_second(sides, batches, rounds)
    base = speeds[found[0]["name"]]["sentences_per_s"]
    for point in found:
        point["sentences_per_s"] = speeds[point["name"]]["sentences_per_s"]
        point["speedup"] = point["sentences_per_s"] / base
        point["timing_s"] = speeds[point["name"]]["times"]


def table(found: list[dict[str, Any]], teacher_accuracy: float) -> str:
    lines = ["| model | layers | FFN | parameters | weights MB | dev accuracy | Δ points | sentences/s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for point in found:
        lines.append(f"| {point['name']} | {point['layers']} | {point['intermediate_size']} | "
                     f"{point['parameters'] / 1e6:.1f}M | {point['weights_bytes'] / 2**20:.1f} | "
                     f"{point['dev_accuracy']:.4f} | {100 * (point['dev_accuracy'] - teacher_accuracy):+.2f} | "
                     f"{point['sentences_per_s']:,.0f} | {point['speedup']:.2f}x |")
    return "\n".join(lines)


def plot(found: list[dict[str, Any]], candidates: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5))
    if candidates:
        axes.scatter([c["sentences_per_s"] for c in candidates], [100 * c["dev_accuracy"] for c in candidates],
                     s=18, color="0.75", label="other candidates (their own run's timing)", zorder=1)
    colors = {"teacher (fp32)": "black", "teacher int8 alone": "tab:blue"}
    for point in found:
        axes.scatter(point["sentences_per_s"], 100 * point["dev_accuracy"], s=60, zorder=2,
                     color=colors.get(point["name"], "tab:red"))
        axes.annotate(point["name"], (point["sentences_per_s"], 100 * point["dev_accuracy"]),
                      textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("CPU sentences/s (SST-2 dev, batch 64, dynamic padding)")
    axes.set_ylabel("SST-2 dev accuracy (%)")
    axes.set_title("bertforge compress: prune -> distill -> int8")
    axes.grid(True, alpha=0.3)
    if candidates:
        axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _chain_notes(args: argparse.Namespace, results: dict[str, Any]) -> str:
    """What the chain decided: the distillation data, int8 or not, the speed calibration."""
    report = next(iter(results["reports"].values()))
    augment = f" plus {args.augment_rows:,} unlabelled SST-2 training sentences the teacher labels (--augment)" \
        if args.augment else ""
    int8 = ("int8 students (the int8 teacher measured faster and within the budget)" if report["students_int8"]
            else f"fp32 students on PyTorch: quantize auto measured the int8 teacher at "
                 f"{report['int8_measured_gain']}x the fp32 teacher's sentences/s and "
                 f"{report['teacher_int8']['dev_accuracy']:.4f} dev accuracy, so int8 does not pay here "
                 "(slower, or past the accuracy budget)")
    calibration = report.get("calibration") or {}
    return (f"Distillation data: the {args.train_rows or 20000:,} labelled rows{augment}. {int8}. Speed "
            f"calibration: an untrained {calibration.get('shape')} ran {calibration.get('measured_speedup')}x "
            f"against {calibration.get('estimated_speedup')}x estimated from multiply-adds.")


def write_results(args: argparse.Namespace, results: dict[str, Any], found: list[dict[str, Any]],
                  candidates: list[dict[str, Any]]) -> None:
    folder = args.results or (args.work if args.quick else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compress.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    teacher_accuracy = found[0]["dev_accuracy"]
    lines = [f"# bertforge compress on SST-2 ({'quick smoke run' if args.quick else 'issue 17'})", "",
             f"Machine: {results['machine']}; load average {results['load_before']} before, "
             f"{results['load_after']} after.", "",
             f"Teacher: {results['teacher']}. Targets {args.speedups}, accuracy budget {args.accuracy_budget} "
             f"points, {args.chain_steps} distillation steps per candidate. Timing: "
             f"{results['timing_sentences']} dev sentences, batch 64, dynamic padding, all models alternated batch "
             f"by batch, median of {args.rounds} passes.", "", _chain_notes(args, results), "",
             table(found, teacher_accuracy), ""]
    if "baseline" in results:
        comparison = results["baseline"]
        lines += [f"Distillation against no teacher ({comparison['student']}, from the same pruned init, seeds "
                  f"{comparison['seeds']}): {comparison['with_teacher']['mean']:.4f} with the teacher, "
                  f"{comparison['without_teacher']['mean']:.4f} without: {comparison['gain_points']:+.2f} points.", ""]
    command = " ".join(["python -m benchmarks.compress", *sys.argv[1:]])
    lines += ["![accuracy against sentences/s](compress.png)", "", f"Command: `{command}`", ""]
    (folder / "compress.md").write_text("\n".join(lines), encoding="utf-8")
    plot(found, candidates, folder / "compress.png")
    log(f"wrote {folder / 'compress.md'}, compress.json, compress.png")


def run_chain(args: argparse.Namespace) -> None:
    from benchmarks.common import load_average, machine_description

    results: dict[str, Any] = {"machine": machine_description(torch.device("cpu")), "load_before": load_average()}
    dev = DATA / "glue/sst2/dev.tsv"
    if args.quick:
        args.train_rows = args.train_rows or 600
        args.chain_steps = min(args.chain_steps, 60)
        args.candidates = min(args.candidates, 2)
        args.rounds = min(args.rounds, 2)
        args.speedups = args.speedups if args.speedups != "2,3,4" else "2,3"
        args.baseline_seeds = "0,1" if args.baseline_seeds == "0,1,2" else args.baseline_seeds
    train = sst2_rows(args.work, args.train_rows or 20000)
    args.augment = unlabelled_sst2(args.work, train, args.augment_rows if not args.quick else min(args.augment_rows, 200))
    teacher = args.teacher or (tiny_teacher if args.quick else minilm_teacher)(args.work, train, dev)
    results["teacher"] = str(teacher) if args.teacher else (
        f"tiny 4-layer, 200 steps on {args.train_rows} rows" if args.quick
        else f"all-MiniLM-L6-v2, configs/finetune/sst2.yaml on {args.train_rows or 20000} SST-2 rows")
    reports = {float(speedup): compress_at(args, teacher, train, dev, float(speedup))
               for speedup in args.speedups.split(",")}
    results["reports"] = {f"x{speedup:g}": report for speedup, report in reports.items()}
    if args.baseline_seeds.strip():
        at = args.baseline_at if args.baseline_at in reports else max(reports)
        results["baseline"] = baseline(args, reports[at], teacher, train, dev)
    found = points(reports)
    time_all(found, dev, args.rounds, args.quick)
    results["points"] = found
    results["timing_sentences"] = 256 if args.quick else 872
    results["load_after"] = load_average()
    shown = {point["directory"] for point in found}
    candidates = [candidate for report in reports.values() for candidate in report["candidates"]
                  if candidate["directory"] not in shown]
    write_results(args, results, found, candidates)
    print(table(found, found[0]["dev_accuracy"]))
    print(f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
