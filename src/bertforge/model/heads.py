"""The pooler and the pretraining heads (masked LM and next-sentence prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import BertConfig
from bertforge.model.layers import activation


class Pooler(nn.Module):
    """tanh(dense(h_[CLS])): the sentence vector the NSP and classification heads read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class MaskedLMHead(nn.Module):
    """transform (dense, activation, LayerNorm), then the decoder tied to the word embeddings.

    The decoder weight is the word-embedding matrix, passed in at call time, so that the tie
    is explicit and the state dict holds one copy; only the output bias belongs to the head.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (..., H), word_embeddings (V, H) -> logits (..., V)."""
        hidden = self.act(self.transform(hidden))
        # Under bf16 autocast the transform's output is bf16, and CPU autocast leaves LayerNorm
        # in its input's dtype; normalising in the weights' dtype (fp32) keeps the statistics
        # and the output in fp32, as the encoder's LayerNorms get them from the fp32 residual.
        hidden = self.layer_norm(hidden.to(self.layer_norm.weight.dtype))
        return F.linear(hidden, word_embeddings, self.bias)
