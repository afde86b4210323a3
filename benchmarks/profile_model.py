"""Where a pretraining step's time goes: torch.profiler on bertforge and transformers.

    python -m benchmarks.profile_model --preset base --precision bf16 --seq-len 128

Profiles one training step (forward, backward, AdamW, zero_grad; train mode) of each side on
the same NSP batch as benchmarks.train_throughput, after two warm-up steps, and prints
markdown: the time per op category (self CPU time; CUDA kernel time on a GPU) and the top ops.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import common
from benchmarks.train_throughput import build_models, make_optimizer, make_step
from benchmarks.train_throughput import parse_args as train_args

CATEGORIES = [
    ("matmul", r"^aten::(mm|addmm|bmm|baddbmm|addbmm|_addmm_activation)$|^mkldnn|gemm|cutlass|sm90|sm80_xmma|ampere"),
    ("loss (log-softmax, NLL)", r"log_softmax|nll_loss|cross_entropy"),
    ("attention", r"scaled_dot_product|flash|efficient_attention|_softmax|fmha"),
    ("dropout", r"bernoulli|dropout|philox"),
    ("LayerNorm", r"layer_norm"),
    ("GELU", r"gelu"),
    ("optimizer", r"adam|_foreach|multi_tensor"),
    ("embedding", r"embedding"),
    ("gather/scatter", r"index_select|index_copy|index_put|^aten::index$|scatter|gather|nonzero|masked_select"),
    ("copy/cast/fill", r"copy_|^aten::to$|_to_copy|fill_|zero_|clone|contiguous|elementwise_kernel.*copy"),
    ("elementwise/reduce", r"^aten::(add|add_|mul|mul_|div|div_|sub|sum|where|tanh|tanh_backward|neg|rsub|"
                           r"masked_fill|masked_fill_|all|any|eq|ne|lt|gt|sqrt|pow|cumsum|remainder)$"),
    ("compiled kernels", r"^Torch-Compiled|CompiledFunction|^cpp_fused|^triton_|inductor"),
]


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


def profile_side(step, device: torch.device) -> tuple[dict[str, float], list[tuple[str, float, int]], float]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for index in range(2):
        step(index)
    common.synchronize(device)
    with profile(activities=activities) as prof:
        step(2)
        common.synchronize(device)
    use_cuda = device.type == "cuda"
    totals: dict[str, float] = defaultdict(float)
    ops = []
    for event in prof.key_averages():
        self_time = (event.self_device_time_total if use_cuda else event.self_cpu_time_total) / 1e3  # ms
        if self_time <= 0:
            continue
        totals[category(event.key)] += self_time
        ops.append((event.key, self_time, event.count))
    ops.sort(key=lambda op: -op[1])
    return dict(totals), ops, sum(totals.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--plain", action="store_true", help="bertforge with every fast path off")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or {128: 32, 512: 8}.get(args.seq_len, 32)

    options = train_args(["--device", args.device] + (["--compile"] if args.compile else [])
                         + (["--plain"] if args.plain else []))
    batches = [common.to_device(b, device) for b in common.pretraining_batches(args.seq_len, batch_size, 3)]
    _, ours, theirs = build_models(args.preset, options, device)
    sides = {"bertforge": ours, "transformers": theirs}
    print(f"machine: {common.machine_description(device)}; load average {common.load_average()}")
    print(f"command: python -m benchmarks.profile_model {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    results = {}
    for name, model in sides.items():
        step = make_step(model, make_optimizer(model, "fused"), batches, device, args.precision)
        results[name] = profile_side(step, device)
    unit = "CUDA kernel" if device.type == "cuda" else "self CPU"
    print(f"### {args.preset}, seq {args.seq_len}, batch {batch_size}, {args.precision}: {unit} ms per step\n")
    print("| category | bertforge ms | % | transformers ms | % |\n|---|---|---|---|---|")
    labels = [label for label, _ in CATEGORIES] + ["other"]
    for label in labels:
        a = results["bertforge"][0].get(label, 0.0)
        b = results["transformers"][0].get(label, 0.0)
        if a or b:
            print(f"| {label} | {a:,.0f} | {100 * a / results['bertforge'][2]:.0f}% | {b:,.0f} | "
                  f"{100 * b / results['transformers'][2]:.0f}% |")
    print(f"| **total** | **{results['bertforge'][2]:,.0f}** | | **{results['transformers'][2]:,.0f}** | |")
    for name in sides:
        print(f"\nTop {args.top} ops, {name}:\n\n| op | ms | calls |\n|---|---|---|")
        for key, self_time, count in results[name][1][:args.top]:
            print(f"| `{key[:70]}` | {self_time:,.1f} | {count} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
