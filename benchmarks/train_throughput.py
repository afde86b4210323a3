"""Pretraining throughput: bertforge's BertForPreTraining against transformers', side by side.

    python -m benchmarks.train_throughput --presets mini,base --seq-lens 128 --precisions fp32,bf16

One training step = forward (MLM + NSP loss) + backward + AdamW step + zero_grad, in train mode
(dropout on), on NSP pairs of Gutenberg text with BERT's 15% masking; both sides get the same
weights, batches and optimizer. See benchmarks/common.py for how FLOPs, MFU and memory are
counted. Prints one markdown row per (preset, seq_len, precision).
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

DEFAULT_BATCH = {128: 32, 512: 8}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mini,base", help="comma list of mini, small, base, ...")
    parser.add_argument("--seq-lens", default="128", help="comma list, e.g. 128,512")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 (autocast)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 at seq 128, 8 at 512")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5, help="timed steps per side (alternated)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--omp-wait-policy", choices=["auto", "passive", "active"], default="auto",
                        help="OpenMP idle threads sleep (passive) or spin (active); auto: passive when the "
                             "1-minute load average exceeds the CPU count (a shared machine)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                        help="AdamW implementation, the same on both sides")
    parser.add_argument("--compile", action="store_true", help="bertforge: torch.compile each encoder layer")
    parser.add_argument("--no-unpad", action="store_true", help="bertforge: padded encoder")
    parser.add_argument("--no-sparse-last-layer", action="store_true")
    parser.add_argument("--no-sparse-prediction", action="store_true", help="bertforge: dense MLM logits")
    parser.add_argument("--no-fused-qkv", action="store_true")
    parser.add_argument("--plain", action="store_true", help="bertforge with every fast path off")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory sampling")
    parser.add_argument("--json", default=None, help="append one JSON object per row to this file")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def build_models(preset: str, args: argparse.Namespace, device: torch.device):
    import transformers

    from bertforge.config import BertConfig
    from bertforge.model import BertForPreTraining
    from bertforge.model.bert import set_fast_paths

    plain = args.plain
    config = BertConfig.from_preset(preset, sparse_prediction=not (plain or args.no_sparse_prediction),
                                    fused_qkv=not (plain or args.no_fused_qkv))
    torch.manual_seed(0)
    ours = BertForPreTraining(config)
    set_fast_paths(ours, not plain)
    ours.bert.unpad_inputs = not (plain or args.no_unpad)
    ours.sparse_last_layer = not (plain or args.no_sparse_last_layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.BertForPreTraining(common.hf_config(config))
    common.copy_weights_to_hf(ours, theirs)
    ours.to(device).train()
    theirs.to(device).train()
    if args.compile:
        from bertforge.model.compiled import compile_encoder

        compile_encoder(ours)
    return config, ours, theirs


def make_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "fused":
        return torch.optim.AdamW(groups, lr=1e-4, fused=True)
    return torch.optim.AdamW(groups, lr=1e-4, foreach=True)


def make_step(model, optimizer, batches, device: torch.device, precision: str):
    def step(index: int) -> dict[str, float]:
        batch = batches[index % len(batches)]
        with common.autocast(device, precision):
            output = model(**batch)
        output.loss.backward()
        common.synchronize(device)
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        common.synchronize(device)
        return {"optimizer": time.perf_counter() - start}

    return step


def run_one(preset: str, seq_len: int, precision: str, args, device, peaks, batches_cache, log) -> dict:
    batch_size = args.batch_size or DEFAULT_BATCH.get(seq_len, max(1, 4096 // seq_len))
    count = args.warmup + args.reps
    key = (seq_len, batch_size)
    if key not in batches_cache:
        batches_cache[key] = common.pretraining_batches(seq_len, batch_size, count, seed=0)
    batches = [common.to_device(b, device) for b in batches_cache[key]]
    config, ours, theirs = build_models(preset, args, device)
    sides = {
        "bertforge": make_step(ours, make_optimizer(ours, args.optimizer), batches, device, precision),
        "transformers": make_step(theirs, make_optimizer(theirs, args.optimizer), batches, device, precision),
    }
    log(f"{preset} seq {seq_len} {precision} batch {batch_size}: warm-up {args.warmup}, {args.reps} reps each")
    peak = peaks[precision]
    results = common.alternate(sides, device, args.warmup, args.reps, not args.no_memory, log, between=peak.sample)

    timed = [batches[(args.warmup + r) % len(batches)] for r in range(args.reps)]
    padded_tokens = statistics.mean(b["input_ids"].numel() for b in timed)
    real_tokens = statistics.mean(int(b["attention_mask"].sum()) for b in timed)
    flops = statistics.mean(
        3 * common.forward_flops(config, common.real_lengths(b), int((b["labels"] != -100).sum()), "pretraining")
        for b in timed)
    row = dict(benchmark="train", preset=preset, seq_len=seq_len, precision=precision, batch_size=batch_size,
               device=str(device), padded_tokens=padded_tokens, real_tokens=real_tokens, model_flops=flops,
               peak_flops=peak.flops, compile=args.compile, plain=args.plain, optimizer=args.optimizer,
               load_average=common.load_average())
    for name, result in results.items():
        median = result.median
        row[name] = dict(times=result.times, median_s=median, tokens_per_s=padded_tokens / median,
                         real_tokens_per_s=real_tokens / median, mfu=flops / median / peak.flops,
                         optimizer_ms=1000 * statistics.median(result.extra["optimizer"]),
                         peak_memory_mib=result.peak_memory / 2**20)
    row["ratio"] = results["transformers"].median / results["bertforge"].median
    del ours, theirs
    return row


HEADER = ("| preset | seq | prec | batch | bertforge tok/s | transformers tok/s | ratio | bertforge real tok/s | "
          "MFU bertforge | MFU transformers | peak GFLOP/s | AdamW step ms (bf/tf) | peak step mem MiB (bf/tf) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(row: dict) -> str:
    ours, theirs = row["bertforge"], row["transformers"]
    return (f"| {row['preset']} | {row['seq_len']} | {row['precision']} | {row['batch_size']} | "
            f"{ours['tokens_per_s']:,.0f} | {theirs['tokens_per_s']:,.0f} | **{row['ratio']:.2f}x** | "
            f"{ours['real_tokens_per_s']:,.0f} | {100 * ours['mfu']:.1f}% | {100 * theirs['mfu']:.1f}% | "
            f"{row['peak_flops'] / 1e9:,.0f} | {ours['optimizer_ms']:.0f} / {theirs['optimizer_ms']:.0f} | "
            f"{ours['peak_memory_mib']:,.0f} / {theirs['peak_memory_mib']:,.0f} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    print(f"machine: {common.machine_description(device)}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"command: python -m benchmarks.train_throughput {' '.join(sys.argv[1:] if argv is None else argv)}")
    precisions = args.precisions.split(",")
    peaks = {p: common.MatmulPeak(device, p) for p in precisions}
    print(f"load average at start: {common.load_average()}")
    print(HEADER)
    cache: dict = {}
    for preset, seq_len, precision in itertools.product(args.presets.split(","),
                                                        [int(s) for s in args.seq_lens.split(",")], precisions):
        row = run_one(preset, seq_len, precision, args, device, peaks, cache, log)
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
