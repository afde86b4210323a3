"""Dynamic int8 on PyTorch: the `nn.Linear` layers of a loaded model become torch.ao's dynamic
int8 Linear (int8 weights with one scale per output channel, or per tensor; activations
quantized on the fly with one scale per tensor; fbgemm's or oneDNN's int8 kernels on the CPU).
By default the feed-forward output projections stay fp32 (`int8_linears` says why).

The weights stay fp32 on disk: a directory marked with this method (config.json's
`quantization` record, written by `bertforge quantize --method torch`) holds the ordinary fp32
model.safetensors, and the loader quantizes it when it loads it. Quantizing is deterministic
and takes milliseconds, so the model that runs is the same each time, and no pickle of torch.ao's
packed modules (which have no safetensors form) is ever written or read. transformers loads such
a directory as the float model.

torch 2.13 marks torch.ao.quantization as deprecated in favour of torchao (the warnings are
silenced here): this path holds for the pinned torch, and a later torch may need torchao.

Embeddings, LayerNorms and the attention itself stay fp32. The fused query-key-value weight is
also split into a query part and a key-value part before quantizing, because the sparse last
layer (`SelfAttention.query_projection`) projects only the rows it keeps and cannot slice a
packed int8 weight. CPU only: torch's dynamic int8 kernels have no CUDA form.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from bertforge.model.layers import FeedForward, SelfAttention

TORCH_INT8 = "torch dynamic int8"
"""The `method` of a config.json `quantization` record that this module runs."""


def quantize_linear_int8(model: nn.Module, per_channel: bool = True, fp32_ffn_output: bool = True) -> nn.Module:
    """`model` (on the CPU, in eval mode) with its nn.Linear layers as dynamic int8 Linears, in
    place; with `fp32_ffn_output`, each layer's feed-forward output projection stays fp32 (see
    `int8_linears`)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        raise ValueError("dynamic int8 runs on the CPU only")
    for module in model.modules():
        if isinstance(module, SelfAttention) and module.fused:
            module.split_fused_projection()
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in int8_linears(model, fp32_ffn_output)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        return quantize_dynamic(model.eval(), spec, dtype=torch.qint8, inplace=True)


def int8_linears(model: nn.Module, fp32_ffn_output: bool = True) -> list[str]:
    """Names of the Linear layers quantize_linear_int8 makes int8: all of them, or all but the
    feed-forward output projections. Those read the GELU activations, whose few large values
    set the one activation scale of the whole batch and round the rest coarsely. On SST-2 dev
    (issue 17, benchmarks/results/compress.md): the 3-layer student compressed from the
    fine-tuned MiniLM lost 1.61 points all-int8 (4.67x the teacher's sentences/s) and 0.80 with
    these fp32 (4.25x; fp32: -0.57 at 3.24x); on the teacher the two were within a few sentences
    of each other and moved with the batching (all-int8 -1.03 with batches of 128, -0.34 with 64)."""
    output_projections = {id(module.output) for module in model.modules() if isinstance(module, FeedForward)}
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)
            and not (fp32_ffn_output and id(module) in output_projections)]
