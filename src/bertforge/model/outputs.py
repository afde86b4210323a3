"""Typed model outputs. Every forward returns one of these, never a tuple."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    """(B, T, H) the final layer's hidden states; (K, H) at the K positions asked for
    (`BertModel.forward(wanted=...)`), in row-major order."""
    pooler_output: torch.Tensor | None = None
    """(B, H) tanh(dense([CLS])), or None for a model built without a pooler."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    """The embeddings' output and each layer's, (num_layers + 1) x (B, T, H), when asked for."""
    attentions: tuple[torch.Tensor, ...] | None = None
    """Each layer's attention probabilities, num_layers x (B, N, T, T), when asked for."""


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None
    """Masked-LM plus NSP cross-entropy (whichever labels were given), or None without labels."""
    mlm_loss: torch.Tensor | None
    nsp_loss: torch.Tensor | None
    mlm_logits: torch.Tensor
    """(num_masked, V) under sparse prediction with labels, else (B, T, V)."""
    mlm_labels: torch.Tensor | None
    """The labels row-aligned with `mlm_logits`: (num_masked,) under sparse prediction, else (B, T)."""
    nsp_logits: torch.Tensor | None
    """(B, 2) next-sentence (or sentence-order) logits; None for a masked-LM-only model."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
