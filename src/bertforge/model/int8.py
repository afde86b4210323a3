"""Dynamic int8 on PyTorch: every `nn.Linear` of a loaded model becomes torch.ao's dynamic int8
Linear (int8 weights with one scale per output channel, or per tensor; activations quantized on
the fly; fbgemm's or oneDNN's int8 kernels on the CPU).

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

from bertforge.model.layers import SelfAttention

TORCH_INT8 = "torch dynamic int8"
"""The `method` of a config.json `quantization` record that this module runs."""


def quantize_linear_int8(model: nn.Module, per_channel: bool = True) -> nn.Module:
    """`model` (on the CPU, in eval mode) with every nn.Linear as a dynamic int8 Linear, in place."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        raise ValueError("dynamic int8 runs on the CPU only")
    for module in model.modules():
        if isinstance(module, SelfAttention) and module.fused:
            module.split_fused_projection()
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        return quantize_dynamic(model.eval(), {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)


def linear_count(model: nn.Module) -> int:
    """How many Linear layers a model has (what quantize_linear_int8 turns into int8 ones)."""
    return sum(1 for module in model.modules() if isinstance(module, nn.Linear))
