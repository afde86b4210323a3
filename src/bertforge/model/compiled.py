"""torch.compile for BERT, one encoder layer at a time ("regional" compilation).

Compiling each `EncoderLayer` rather than the whole model keeps compile time to one layer's
graph (every layer shares the compiled code; their weights are inputs to it), and keeps the
data-dependent parts outside (the unpadding layout, the masked-position gather), which would
otherwise break the graph. Inductor then fuses what eager PyTorch runs as separate passes over
memory: bias + GELU, dropout + residual + LayerNorm, the casts around bf16 matmuls.
The token count of an unpadded batch changes from batch to batch, so the token dimension is
compiled as dynamic.
"""

from __future__ import annotations

from torch import nn

from bertforge.model.layers import EncoderLayer


def compile_encoder(model: nn.Module, *, dynamic: bool | None = True, mode: str | None = None,
                    backend: str = "inductor") -> nn.Module:
    """Compile every EncoderLayer of `model` in place (parameter names do not change); returns it."""
    for module in model.modules():
        if isinstance(module, EncoderLayer):
            module.compile(dynamic=dynamic, mode=mode, backend=backend)
    return model
