"""Inference throughput: sequence classification on SST-2 dev, bertforge against transformers.

    python -m benchmarks.inference_throughput --presets mini,base --precisions fp32,bf16

The 872 dev sentences, in file order, 64 to a batch, each batch padded to its own longest
sentence (dynamic padding), as a fine-tuned classifier would be evaluated. One repetition is
one pass over the whole dev set; inside it the two sides alternate batch by batch (A B, then
B A on the next batch), so both see the same load. Both run under torch.inference_mode with
the same weights and the same precision (bf16 = autocast). The bertforge side is
`bertforge.tasks.classify.BertForSequenceClassification` when it exists, else BertModel +
pooler + Linear (the same math), with its fast paths: unpadded encoder, attention grids by
length, and torch.compile of each encoder layer (compiled during the warm-up passes;
`--no-compile` for eager). The transformers side is its BertForSequenceClassification with
SDPA attention, eager.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Before torch loads OpenMP: see benchmarks/openmp.py.
    from benchmarks.openmp import choose_wait_policy

    choose_wait_policy(sys.argv)

import argparse
import itertools
import json
import statistics
import time
import warnings

import torch

from benchmarks import common


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mini,base")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes over the dev set")
    parser.add_argument("--reps", type=int, default=3, help="timed passes over the dev set")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--omp-wait-policy", choices=["auto", "passive", "active"], default="auto",
                        help="OpenMP idle threads sleep (passive) or spin (active); auto: passive when the "
                             "1-minute load average exceeds the CPU count (a shared machine)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true",
                        help="bertforge eager (default: torch.compile each encoder layer, compiled in the warm-up)")
    parser.add_argument("--no-unpad", action="store_true", help="bertforge: padded encoder")
    parser.add_argument("--plain", action="store_true", help="bertforge with every fast path off")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


class PooledClassifier(torch.nn.Module):
    """BertModel + pooler + Linear: the classifier, for when bertforge.tasks has none yet."""

    architecture = "BertForSequenceClassification"  # its Hugging Face key layout

    def __init__(self, config):
        super().__init__()
        from bertforge.model import BertModel

        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        pooled = self.bert(input_ids, token_type_ids, attention_mask).pooler_output
        return self.classifier(self.dropout(pooled))


def build_models(preset: str, args, device: torch.device):
    import transformers

    from bertforge.config import BertConfig

    config = BertConfig.from_preset(preset, fused_qkv=not args.plain, id2label={0: "negative", 1: "positive"})
    torch.manual_seed(0)
    try:
        from bertforge.tasks.classify import BertForSequenceClassification

        ours = BertForSequenceClassification(config)
        kind = "bertforge.tasks.classify.BertForSequenceClassification"
    except ImportError:
        ours = PooledClassifier(config)
        kind = "BertModel + pooler + Linear"
    ours.bert.unpad_inputs = not (args.plain or args.no_unpad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.BertForSequenceClassification(common.hf_config(config))
    common.copy_weights_to_hf(ours, theirs)
    ours.to(device).eval()
    theirs.to(device).eval()
    if not (args.no_compile or args.plain):
        from bertforge.model.compiled import compile_encoder

        compile_encoder(ours)
    return config, ours, theirs, kind


def logits_of(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def check_agreement(ours, theirs, batch, device, precision) -> float:
    """Max |logit difference| on one batch: the two sides must compute the same classifier."""
    with torch.inference_mode(), common.autocast(device, precision):
        a = logits_of(ours(**batch)).float()
        b = logits_of(theirs(**batch)).float()
    return float((a - b).abs().max())


def run_one(preset, precision, args, device, peaks, batches, log) -> dict:
    config, ours, theirs, kind = build_models(preset, args, device)
    difference = check_agreement(ours, theirs, batches[0], device, precision)
    models = {"bertforge": ours, "transformers": theirs}
    times = {name: [] for name in models}
    memory = {name: 0 for name in models}

    def run_batch(name: str, batch) -> float:
        common.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(), common.autocast(device, precision):
            logits_of(models[name](**batch)).argmax(-1).tolist()  # the predictions reach the host
        common.synchronize(device)
        return time.perf_counter() - start

    log(f"{preset} {precision}: {kind}, max |logit diff| {difference:.2e}; "
        f"{args.warmup} warm-up + {args.reps} timed passes")
    for rep in range(args.warmup + args.reps):
        totals = {name: 0.0 for name in models}
        for index, batch in enumerate(batches):
            order = list(models) if (rep + index) % 2 == 0 else list(models)[::-1]
            for name in order:
                totals[name] += run_batch(name, batch)
        peaks[precision].sample()
        if rep >= args.warmup:
            for name in models:
                times[name].append(totals[name])
            log(f"  pass {rep - args.warmup}: " + ", ".join(f"{n} {t:.2f}s" for n, t in totals.items()))
    if not args.no_memory:
        # Untimed: the sampling thread would take CPU from the timed passes.
        for name in models:
            for batch in batches:
                with common.PeakMemory(device) as peak:
                    run_batch(name, batch)
                memory[name] = max(memory[name], peak.peak)

    sentences = sum(int(b["input_ids"].shape[0]) for b in batches)
    padded = sum(int(b["input_ids"].numel()) for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    flops = sum(common.forward_flops(config, common.real_lengths(b), heads="classifier") for b in batches)
    row = dict(benchmark="inference", preset=preset, precision=precision, batch_size=args.batch_size,
               device=str(device), model=kind, sentences=sentences, padded_tokens=padded, real_tokens=real,
               model_flops=flops, peak_flops=peaks[precision].flops, max_logit_difference=difference,
               compile=not (args.no_compile or args.plain), plain=args.plain, load_average=common.load_average())
    for name in models:
        median = statistics.median(times[name])
        row[name] = dict(times=times[name], median_s=median, sentences_per_s=sentences / median,
                         tokens_per_s=padded / median, real_tokens_per_s=real / median,
                         mfu=flops / median / peaks[precision].flops, peak_memory_mib=memory[name] / 2**20)
    row["ratio"] = statistics.median(times["transformers"]) / statistics.median(times["bertforge"])
    return row


HEADER = ("| preset | prec | bertforge sent/s | transformers sent/s | ratio | bertforge real tok/s | "
          "transformers real tok/s | MFU bertforge | MFU transformers | peak GFLOP/s | peak batch mem MiB (bf/tf) | "
          "max logit diff |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(row: dict) -> str:
    ours, theirs = row["bertforge"], row["transformers"]
    return (f"| {row['preset']} | {row['precision']} | {ours['sentences_per_s']:,.0f} | "
            f"{theirs['sentences_per_s']:,.0f} | **{row['ratio']:.2f}x** | {ours['real_tokens_per_s']:,.0f} | "
            f"{theirs['real_tokens_per_s']:,.0f} | {100 * ours['mfu']:.1f}% | {100 * theirs['mfu']:.1f}% | "
            f"{row['peak_flops'] / 1e9:,.0f} | {ours['peak_memory_mib']:,.0f} / {theirs['peak_memory_mib']:,.0f} | "
            f"{row['max_logit_difference']:.1e} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    print(f"machine: {common.machine_description(device)}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"command: python -m benchmarks.inference_throughput {' '.join(sys.argv[1:] if argv is None else argv)}")
    precisions = args.precisions.split(",")
    peaks = {p: common.MatmulPeak(device, p) for p in precisions}
    batches = [common.to_device(b, device) for b in common.sst2_batches(args.batch_size)]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(int(b["input_ids"].numel()) for b in batches)
    print(f"SST-2 dev: {sum(len(b['input_ids']) for b in batches)} sentences, {len(batches)} batches of "
          f"{args.batch_size}, {real:,} real of {padded:,} padded tokens ({100 * real / padded:.0f}%)")
    print(f"load average at start: {common.load_average()}")
    print(HEADER)
    for preset, precision in itertools.product(args.presets.split(","), precisions):
        row = run_one(preset, precision, args, device, peaks, batches, log)
        print(format_row(row), flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    for precision, peak in peaks.items():
        print(f"matmul peak {precision}: median {peak.flops / 1e9:,.0f} GFLOP/s over {len(peak.samples)} samples "
              f"(min {min(peak.samples) / 1e9:,.0f}, max {max(peak.samples) / 1e9:,.0f})")
    print(f"load average at end: {common.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
