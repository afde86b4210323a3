"""Held-out masked-LM and NSP accuracy against wall time: bertforge vs transformers.

Both sides pretrain the same preset from the same initial weights on the same batches (the
English corpora in the shared data, prepared once by bertforge, dynamic 80/10/10 masking),
with the same optimizer (AdamW, foreach), learning-rate schedule, batch size and precision,
for the same wall time. By default the two sides run at the same time, each in its own process
on one core (`--threads 1`), so that both see the same machine for the same minutes;
`--sequential` runs them one after the other with every core. Every `--eval-seconds` of
training the same held-out batches are scored (evaluation time is not counted).

`--against plain` replaces transformers by bertforge with every fast path off (padded encoder,
dense masked-LM logits, separate query/key/value projections, fp32, a for-loop AdamW), so the
curve shows whether the fast paths (unpadding, sparse prediction, fused QKV, `--precision`
autocast, the foreach AdamW and, with `--compile`, torch.compile) learn as well per token.

    python -m benchmarks.pretrain_curve --minutes 30 --preset mini --precision bf16
    python -m benchmarks.pretrain_curve --minutes 10 --against plain --against-minutes 15 --compile

Writes benchmarks/results/pretrain_curve.{json,md,png} (with `--against plain`:
fast_paths_curve.{json,md,png}, with a table of both sides at equal token budgets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bertforge.config import BertConfig
from bertforge.model import BertForPreTraining
from bertforge.train import autocast
from bertforge.train.optim import parameter_groups
from bertforge.train.pretraining import evaluate_pretraining
from bertforge.train.schedule import schedule_factor

RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    env = os.environ.get("BERTFORGE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


class HFAdapter(torch.nn.Module):
    """transformers' BertForPreTraining behind bertforge's output fields (dense MLM logits)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None, next_sentence_label=None):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                         labels=labels, next_sentence_label=next_sentence_label)
        # A plain namespace: an object that only the cycle collector frees would keep each
        # step's dense (batch, length, vocab) logits alive, gigabytes at a time.
        return SimpleNamespace(loss=out.loss, mlm_logits=out.prediction_logits, mlm_labels=labels,
                               nsp_logits=out.seq_relationship_logits)


def side_precision(name: str, args) -> str:
    """The plain side runs fp32 (autocast is one of the fast paths); the others `--precision`."""
    return "fp32" if name == "plain" else args.precision


def train_for(name, model, batches, eval_batches, args, total_steps) -> list[dict]:
    precision = side_precision(name, args)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=args.learning_rate, eps=1e-6,
                                  foreach=name != "plain")
    warmup = int(0.02 * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule_factor(s, warmup, total_steps, "linear"))
    device = torch.device("cpu")
    curve = []

    def evaluate(elapsed, step, tokens):
        model.eval()
        eval_batches.set_epoch(0)
        with torch.no_grad(), autocast(device, precision):
            metrics = evaluate_pretraining(model, eval_batches, device, args.eval_batches)
        model.train()
        curve.append({"side": name, "seconds": elapsed, "step": step, "tokens": tokens, **metrics})
        print(f"{name:12s} {elapsed:7.0f}s step {step:5d} tokens {tokens / 1e6:6.2f}M  mlm acc {metrics.get('mlm_accuracy', 0):.3f}  "
              f"nsp acc {metrics.get('nsp_accuracy', 0):.3f}", flush=True)

    minutes = args.against_minutes if name != "bertforge" and args.against_minutes else args.minutes
    # The same batches in the same order: N steps are the bertforge side's first N steps' tokens.
    by_steps = name != "bertforge" and bool(args.against_steps)
    budget = float("inf") if by_steps else minutes * 60
    evaluate(0.0, 0, 0)
    batches.set_epoch(0)
    stream = iter(batches)
    trained, step, tokens, next_eval = 0.0, 0, 0, args.eval_seconds
    model.train()
    last_step = args.against_steps if by_steps else total_steps  # the schedule stays total_steps long
    while trained < budget and step < last_step:
        try:
            batch = next(stream)
        except StopIteration:
            stream = iter(batches)
            batch = next(stream)
        start = time.perf_counter()
        with autocast(device, precision):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        trained += time.perf_counter() - start  # evaluation time is not training time
        step += 1
        tokens += int(batch["attention_mask"].sum())
        if trained >= next_eval:
            evaluate(trained, step, tokens)
            next_eval += args.eval_seconds
    if curve[-1]["step"] != step:
        evaluate(trained, step, tokens)
    return curve


def build_models(preset: str, against: str = "transformers", compile: bool = False) -> dict[str, torch.nn.Module]:
    """bertforge's BertForPreTraining and the `against` side, with the same seeded initial weights."""
    from bertforge.convert import to_hf_state_dict

    torch.manual_seed(0)
    ours = BertForPreTraining(BertConfig.from_preset(preset, vocab_size=30522))
    if compile:
        from bertforge.model.compiled import compile_encoder

        compile_encoder(ours)
    if against == "plain":
        from bertforge.convert import from_hf_state_dict
        from bertforge.model.bert import set_fast_paths

        plain = BertForPreTraining(BertConfig.from_preset(preset, vocab_size=30522, sparse_prediction=False,
                                                          fused_qkv=False))
        from_hf_state_dict(plain, to_hf_state_dict(ours))
        set_fast_paths(plain, False)
        return {"bertforge": ours, "plain": plain}
    import transformers

    hf_config = transformers.BertConfig(**{k: v for k, v in ours.config.to_dict().items() if k != "bertforge"})
    theirs = transformers.BertForPreTraining(hf_config)
    state = to_hf_state_dict(ours)
    theirs.load_state_dict({**state, "cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"],
                            "cls.predictions.decoder.bias": state["cls.predictions.bias"]}, strict=False)
    return {"bertforge": ours, "transformers": HFAdapter(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall time per side")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: fp32 on a CPU (bertforge.train.precision says why)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--eval-seconds", type=float, default=120.0)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--steps-for-schedule", type=int, default=6000,
                        help="the schedule's total steps (the same on both sides)")
    parser.add_argument("--data-dir", default="runs/bench-data")
    parser.add_argument("--threads", type=int, default=1, help="threads per side when the sides run together")
    parser.add_argument("--sequential", action="store_true", help="one side after the other, every core each")
    parser.add_argument("--against", choices=["transformers", "plain"], default="transformers",
                        help="the other side: transformers, or bertforge with every fast path off")
    parser.add_argument("--compile", action="store_true", help="bertforge side: torch.compile each encoder layer")
    parser.add_argument("--against-minutes", type=float, default=None,
                        help="training wall time of the other side (default: --minutes); longer lets a slower "
                             "side reach more of the faster one's token budget")
    parser.add_argument("--against-steps", type=int, default=None,
                        help="train the other side for exactly this many steps whatever the time (the "
                             "bertforge side's step count: the same token budget)")
    parser.add_argument("--only-against", action="store_true",
                        help="train only the other side and reuse the bertforge curve of the last run in "
                             "--data-dir (to extend the other side with --against-steps)")
    parser.add_argument("--side", choices=["bertforge", "transformers", "plain"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        torch.set_num_threads(args.threads)
    from bertforge.train.precision import resolve_precision

    choice = resolve_precision(args.precision, torch.device("cpu"))
    args.precision = choice.precision
    if args.side is None:
        print(choice.warning or choice.describe(), file=sys.stderr)

    from bertforge.data import MaskingConfig, PrepareConfig, PretrainingBatches, PretrainingDataset, prepare_corpus

    root = data_root() / "corpora"
    prepare_corpus(PrepareConfig(inputs=[str(root / "gutenberg"), str(root / "wikitext-2-raw/wiki.test.raw"),
                                         str(root / "tinyshakespeare/input.txt")],
                                 vocab=str(data_root() / "vocab/bert-base-uncased-vocab.txt"), out=args.data_dir,
                                 max_seq_length=args.max_seq_length, eval_fraction=0.02), progress=True)
    train_set, eval_set = PretrainingDataset(args.data_dir, "train"), PretrainingDataset(args.data_dir, "eval")

    def loaders():
        return (PretrainingBatches(train_set, batch_size=args.batch_size, masking=MaskingConfig(), seed=0),
                PretrainingBatches(eval_set, batch_size=64, seed=0, shuffle=False, drop_last=False))

    if args.side is not None:  # one side, in a child process of the concurrent run
        batches, eval_batches = loaders()
        model = build_models(args.preset, args.against, args.compile and args.side == "bertforge")[args.side]
        curve = train_for(args.side, model, batches, eval_batches, args, args.steps_for_schedule)
        Path(args.out).write_text(json.dumps(curve))
        return
    curve = []
    if args.sequential:
        for name, model in build_models(args.preset, args.against, args.compile).items():
            batches, eval_batches = loaders()
            curve += train_for(name, model, batches, eval_batches, args, args.steps_for_schedule)
    else:
        children, outputs = [], {}
        for name in ("bertforge", args.against):
            outputs[name] = Path(args.data_dir) / f"curve-{name}.json"
            if name == "bertforge" and args.only_against:
                if not outputs[name].exists():
                    raise SystemExit(f"--only-against: no bertforge curve at {outputs[name]}")
                continue
            environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            children.append(subprocess.Popen([sys.executable, "-m", "benchmarks.pretrain_curve", *sys.argv[1:],
                                              "--side", name, "--out", str(outputs[name])], env=environment))
        if any([child.wait() != 0 for child in children]):  # a list: wait for every child
            raise SystemExit("a side failed; see its output above")
        for name in ("bertforge", args.against):
            curve += json.loads(outputs[name].read_text())
    args.layout = "sequential, every core" if args.sequential else f"concurrent, {args.threads} thread(s) per side"

    write_results(args, curve, "pretrain_curve" if args.against == "transformers" else "fast_paths_curve")


def accuracy_at(rows: list[dict], tokens: float) -> float | None:
    """Held-out MLM accuracy of one side's curve at `tokens`, linearly interpolated (None past its end)."""
    for before, after in zip(rows, rows[1:]):
        if before["tokens"] <= tokens <= after["tokens"]:
            share = (tokens - before["tokens"]) / max(1, after["tokens"] - before["tokens"])
            return before["mlm_accuracy"] + share * (after["mlm_accuracy"] - before["mlm_accuracy"])
    return None


def write_results(args, curve: list[dict], stem: str) -> None:
    sides = ("bertforge", args.against)
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(args), "machine": machine, "curve": curve}, indent=1))
    precisions = ", ".join(f"{side} {side_precision(side, args)}" for side in sides)
    if args.against_steps:
        duration = f"{args.minutes:g} min (the other side the same {args.against_steps} steps)"
    else:
        duration = f"{args.minutes:g} min" + (f" (the other side {args.against_minutes:g} min)" if args.against_minutes
                                              else " per side")
    lines = [f"# Pretraining curve: {args.preset}, {precisions}, batch {args.batch_size}, seq {args.max_seq_length}, "
             f"{duration}", "", f"Machine: {machine}; sides {args.layout}", "",
             "| side | train seconds | steps | real tokens (M) | held-out MLM acc | held-out MLM loss | held-out NSP acc |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['side']} | {r['seconds']:.0f} | {r['step']} | {r['tokens'] / 1e6:.2f} | "
              f"{r.get('mlm_accuracy', 0):.3f} | {r.get('mlm_loss', 0):.3f} | {r.get('nsp_accuracy', 0):.3f} |"
              for r in curve]
    if args.against == "plain":
        # Equal token budgets: each of the plain side's evaluations beside the fast side's
        # curve at the same number of real tokens.
        fast = [r for r in curve if r["side"] == "bertforge"]
        lines += ["", "At equal token budgets (bertforge interpolated at the plain side's evaluation points):", "",
                  "| real tokens (M) | plain MLM acc | all fast paths MLM acc | difference |", "|---|---|---|---|"]
        for row in (r for r in curve if r["side"] == "plain" and r["tokens"] > 0):
            ours = accuracy_at(fast, row["tokens"])
            if ours is not None:
                lines.append(f"| {row['tokens'] / 1e6:.2f} | {row['mlm_accuracy']:.3f} | {ours:.3f} | "
                             f"{ours - row['mlm_accuracy']:+.3f} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # The third panel puts both sides on the same token budget: there the fast paths
        # and the plain math should learn alike, step for step.
        figure, axes = plt.subplots(1, 3, figsize=(15, 4))
        panels = (("seconds", 1 / 60, "training minutes", "mlm_accuracy"),
                  ("seconds", 1 / 60, "training minutes", "nsp_accuracy"),
                  ("tokens", 1e-6, "real tokens trained (millions)", "mlm_accuracy"))
        for side in sides:
            rows = [r for r in curve if r["side"] == side]
            for axis, (x_key, scale, x_label, y_key) in zip(axes, panels):
                axis.plot([r[x_key] * scale for r in rows], [r.get(y_key, 0) for r in rows], marker="o", label=side)
                axis.set_xlabel(x_label)
                axis.set_ylabel("held-out " + y_key.replace("_", " "))
                axis.legend()
        figure.suptitle(f"{args.preset} ({precisions}) on the English corpora ({machine})")
        figure.tight_layout()
        figure.savefig(RESULTS / f"{stem}.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
