"""The BERT encoder: embeddings, self-attention, feed-forward and the post-LayerNorm layer.

Shape legend: B batch, T sequence length, H hidden size, N attention heads, D head size (H / N),
F feed-forward size, V vocab size.

Departures from the paper's TF code, none of which changes the numbers:
- attention runs through `torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU
  and CUDA, flash attention on CUDA when no padding mask is needed); the explicit
  softmax(QK^T/sqrt(D)) path is used only when the caller asks for attention probabilities;
- query, key and value are one (H, 3H) projection by default (`config.fused_qkv`), saved and
  loaded as Hugging Face's three separate tensors by `bertforge.convert`;
- every module also runs "token-major" on the N real tokens of an unpadded batch, (N, H)
  instead of (B, T, H), given a `TokenLayout` (see `bertforge.model.unpad`); the last layer
  can be asked for a subset of its output rows only (`queries`), which is all a sparse masked-LM
  loss or a pooler reads: only those rows are projected to queries, attend, and go through the
  output projection and feed-forward (their keys and values still come from every token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import BertConfig
from bertforge.model.unpad import (QueryLayout, TokenLayout, gather_rows, varlen_attention,
                                   varlen_attention_available)


def activation(name: str):
    """The feed-forward nonlinearity named in config.json (`gelu` is the exact erf form)."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unsupported activation {name!r}")


class Embeddings(nn.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # padding_idx keeps the [PAD] row out of the gradient, as transformers does.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, H)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(x))

    def forward_tokens(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                       layout: TokenLayout) -> torch.Tensor:
        """The same sum for the real tokens only: (B, T) ids -> (N, H)."""
        ids = layout.gather(input_ids)  # (N,)
        x = self.word_embeddings(ids) + self.position_embeddings(layout.positions(ids.device))  # (N, H)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(layout.gather(token_type_ids))
        return self.dropout(self.layer_norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with the output projection (not the residual or LayerNorm)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.fused = config.fused_qkv
        hidden = config.hidden_size
        if self.fused:
            self.qkv = nn.Linear(hidden, 3 * hidden)
        else:
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)
        self.dropout_p = config.attention_probs_dropout_prob
        self.split_parts: nn.ModuleDict | None = None
        """Set by split_fused_projection (int8 inference only)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H); mask (B, 1, 1, T) boolean, True where a key may be attended, or None."""
        batch, seq_len, hidden = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(hidden, dim=-1)  # 3 x (B, T, H)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q = q.view(batch, seq_len, self.num_heads, self.head_size).transpose(1, 2)  # (B, N, T, D)
        k = k.view(batch, seq_len, self.num_heads, self.head_size).transpose(1, 2)  # (B, N, T, D)
        v = v.view(batch, seq_len, self.num_heads, self.head_size).transpose(1, 2)  # (B, N, T, D)
        dropout_p = self.dropout_p if self.training else 0.0
        probs = None
        if return_probs:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, N, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ v  # (B, N, T, D)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(batch, seq_len, hidden)  # (B, T, H)
        return self.output(context), probs

    def context_tokens(self, x: torch.Tensor, layout: TokenLayout,
                       queries: QueryLayout | None = None) -> torch.Tensor:
        """x (N, H) real tokens -> attention context (N, H) before the output projection, or
        (K, H) for the `queries` rows only."""
        hidden = x.shape[-1]
        dropout_p = self.dropout_p if self.training else 0.0
        if queries is not None:
            key_value = self.key_value_projection(x)  # (N, 2H)
            if not varlen_attention_available(key_value, dropout_p):
                query = self.query_projection(gather_rows(x, queries.keep))  # (K, H)
                return self.query_grid_attention(query, key_value, layout, queries, dropout_p)
            # Flash varlen attention takes every query here; the kept rows are gathered after.
            qkv = torch.cat([self.query_projection(x), key_value], dim=-1)  # (N, 3H)
        elif self.fused:
            qkv = self.qkv(x)  # (N, 3H)
        else:
            qkv = torch.cat([self.query(x), self.key(x), self.value(x)], dim=-1)  # (N, 3H)
        if varlen_attention_available(qkv, dropout_p):
            q, k, v = qkv.view(-1, 3, self.num_heads, self.head_size).unbind(1)  # 3 x (N, heads, D)
            context = varlen_attention(q, k, v, layout).reshape(-1, hidden)  # (N, H)
            return context if queries is None else gather_rows(context, queries.keep)
        contexts = []
        for grid, values in zip(layout.grids, layout.to_grids(qkv)):  # (R, L, 3H) each
            rows, length = values.shape[0], values.shape[1]
            q, k, v = values.view(rows, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)  # (R, N, L, D)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=grid.mask, dropout_p=dropout_p)
            contexts.append(context.transpose(1, 2).reshape(rows, length, hidden))  # (R, L, H)
        return layout.from_grids(contexts)  # (N, H)

    def query_grid_attention(self, query: torch.Tensor, key_value: torch.Tensor, layout: TokenLayout,
                             queries: QueryLayout, dropout_p: float) -> torch.Tensor:
        """query (K, H) of the kept rows, key_value (N, 2H) of every token -> context (K, H)."""
        hidden = query.shape[-1]
        contexts = []
        key_value_grids, query_grids = layout.to_grids(key_value), queries.to_grids(query)
        for grid, pairs, questions in zip(layout.grids, key_value_grids, query_grids):  # (R, L, 2H), (R, Q, H)
            rows, length, width = pairs.shape[0], pairs.shape[1], questions.shape[1]
            k, v = pairs.view(rows, length, 2, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)  # (R, N, L, D)
            q = questions.view(rows, width, self.num_heads, self.head_size).transpose(1, 2)  # (R, N, Q, D)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=grid.mask, dropout_p=dropout_p)
            contexts.append(context.transpose(1, 2).reshape(rows, width, hidden))  # (R, Q, H)
        return queries.from_grids(contexts)  # (K, H)

    def query_projection(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> queries (..., H); with the fused weight, its first H output rows."""
        if not self.fused:
            return self.query(x)
        if self.split_parts is not None:
            return self.split_parts["query"](x)
        hidden = x.shape[-1]
        return F.linear(x, self.qkv.weight[:hidden], self.qkv.bias[:hidden])

    def key_value_projection(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> keys and values (..., 2H); with the fused weight, its last 2H output rows."""
        if not self.fused:
            return torch.cat([self.key(x), self.value(x)], dim=-1)
        if self.split_parts is not None:
            return self.split_parts["key_value"](x)
        hidden = x.shape[-1]
        return F.linear(x, self.qkv.weight[hidden:], self.qkv.bias[hidden:])

    def split_fused_projection(self) -> None:
        """Copies of the fused weight's query rows and key-value rows as Linear modules of their
        own, which the two projections above use from then on: a quantized Linear cannot be sliced
        (`bertforge.model.int8`). For inference only: a model split so is not saved again."""
        hidden = self.qkv.in_features
        parts = {"query": nn.Linear(hidden, hidden), "key_value": nn.Linear(hidden, 2 * hidden)}
        with torch.no_grad():
            for part, rows in zip(parts.values(), (slice(None, hidden), slice(hidden, None))):
                part.weight.copy_(self.qkv.weight[rows])
                part.bias.copy_(self.qkv.bias[rows])
                part.to(self.qkv.weight.device)
        self.split_parts = nn.ModuleDict(parts)


class FeedForward(nn.Module):
    """H -> F -> H with the configured activation (exact GELU for BERT)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.act(self.intermediate(x)))


class EncoderLayer(nn.Module):
    """One post-LayerNorm Transformer layer, as in the paper:

        x = LayerNorm(x + Dropout(Attention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | TokenLayout | None, return_probs: bool = False,
                queries: QueryLayout | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) with a (B, 1, 1, T) mask or None; or x (N, H) real tokens with their TokenLayout.

        queries: token-major only, the K rows of the output wanted; the others are not computed
        beyond their keys and values, and the result is (K, H).
        """
        if isinstance(mask, TokenLayout):
            context = self.attention.context_tokens(x, mask, queries)  # (N, H) or (K, H)
            if queries is not None:
                x = gather_rows(x, queries.keep)  # (K, H)
            attended, probs = self.attention.output(context), None
        else:
            attended, probs = self.attention(x, mask, return_probs)
        x = self.attention_norm(x + self.dropout(attended))
        x = self.output_norm(x + self.dropout(self.feed_forward(x)))
        return x, probs


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | TokenLayout | None, output_attentions: bool = False,
                output_hidden_states: bool = False, queries: QueryLayout | None = None):
        """x (B, T, H) and a padding mask, or x (N, H) and a TokenLayout; queries: see EncoderLayer."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index == last and queries is not None:
                x, probs = layer(x, mask, output_attentions, queries)
            else:
                x, probs = layer(x, mask, output_attentions)
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(probs)
        return (x, None if hidden_states is None else tuple(hidden_states),
                None if attentions is None else tuple(attentions))
