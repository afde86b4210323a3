"""Unpadded ("token-major") batches: the encoder's dense layers run on the real tokens only.

A padded batch (B, T) with attention_mask is turned into a `TokenLayout`: the flat positions of
its N real tokens. Embeddings, the query/key/value and output projections, the feed-forward
layers and the LayerNorms (nearly all of BERT's FLOPs) then run on (N, H) instead of (B, T, H),
as in NVIDIA's BERT and MosaicBERT's `bert_padding.py`. Attention stays within each sequence:

- by default the projected q, k, v are scattered into a (B, L, 3H) grid, where L is the
  longest real row (not the padded T), and go through SDPA with a boolean key mask; the
  context is gathered back to (N, H). The scatter and gather move O(N·H) bytes per layer,
  against O(N·H²) FLOPs in the projections;
- on CUDA, with no dropout on the attention probabilities, `torch.nn.attention.varlen.varlen_attn`
  (flash attention over cumulative sequence lengths) runs on (N, heads, D) directly.

Nothing here changes the numbers: a padded key gets no attention either way, and a padded
position never reaches a loss. The outputs at padded positions are zeros instead of the values
a padded encoder computes there (which no loss reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class _GatherRows(torch.autograd.Function):
    """source[indices] for distinct indices; the backward writes the rows back with index_copy_.

    autograd's own backward of index_select is index_add_, which must allow repeated indices
    and runs several times slower on CPU; ours never repeat.
    """

    @staticmethod
    def forward(ctx, source: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.num_rows = source.shape[0]
        return source.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (indices,) = ctx.saved_tensors
        source_grad = grad.new_zeros(ctx.num_rows, *grad.shape[1:])
        source_grad.index_copy_(0, indices, grad)
        return source_grad, None


def gather_rows(source: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(R, ...) -> (K, ...): the rows `indices` (distinct) of `source`."""
    return _GatherRows.apply(source, indices)


@dataclass
class TokenLayout:
    """Where the N real tokens of a (B, T) batch are, and the (B, L) grid attention runs on.

    `indices` is None when every position is real (then the tokens are the batch, reshaped).
    """

    batch_size: int
    seq_len: int
    """T of the padded input."""
    max_len: int
    """L: the longest real row; attention runs on (B, L)."""
    indices: torch.Tensor | None
    """(N,) flat positions b * T + t of the real tokens, in row-major order; None: all real."""
    grid_indices: torch.Tensor | None
    """(N,) flat positions b * L + slot in the attention grid (slot = rank of the token in its row)."""
    mask: torch.Tensor | None
    """(B, 1, 1, L) boolean key mask of the grid, or None when every row has L real tokens."""
    cu_seqlens: torch.Tensor
    """(B + 1,) int32 cumulative real lengths, for varlen attention kernels."""

    @property
    def num_tokens(self) -> int:
        return self.batch_size * self.seq_len if self.indices is None else int(self.indices.shape[0])

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int,
                  device: torch.device) -> "TokenLayout":
        """attention_mask (B, T) of 1 for real tokens and 0 for padding, or None (all real)."""
        if attention_mask is None or bool(attention_mask.bool().all()):
            lengths = torch.full((batch_size,), seq_len, dtype=torch.int32, device=device)
            cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
            return cls(batch_size, seq_len, seq_len, None, None, None, cu_seqlens)
        real = attention_mask.bool()  # (B, T)
        lengths = real.sum(1)  # (B,)
        max_len = max(int(lengths.max()), 1)
        indices = real.flatten().nonzero().squeeze(1)  # (N,)
        # A token's slot is its rank among the real tokens of its row, so the grid holds each
        # row's tokens left-aligned whatever the padding side; attention does not depend on
        # the order of the keys, and positions were already added by the embeddings.
        slots = (real.cumsum(1) - 1).flatten()[indices]  # (N,)
        rows = torch.div(indices, seq_len, rounding_mode="floor")  # (N,)
        grid_indices = rows * max_len + slots
        grid_real = torch.arange(max_len, device=device) < lengths[:, None]  # (B, L)
        mask = None if bool(grid_real.all()) else grid_real[:, None, None, :]
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return cls(batch_size, seq_len, max_len, indices, grid_indices, mask, cu_seqlens)

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the real tokens, row-major."""
        flat = padded.reshape(self.batch_size * self.seq_len, *padded.shape[2:])
        return flat if self.indices is None else gather_rows(flat, self.indices)

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padded positions."""
        if self.indices is None:
            return tokens.reshape(self.batch_size, self.seq_len, *tokens.shape[1:])
        flat = tokens.new_zeros(self.batch_size * self.seq_len, *tokens.shape[1:])
        flat.index_copy_(0, self.indices, tokens)  # in place on fresh zeros: no clone
        return flat.view(self.batch_size, self.seq_len, *tokens.shape[1:])

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, L, D) attention grid, zeros in the empty slots."""
        if self.grid_indices is None:
            return tokens.view(self.batch_size, self.max_len, tokens.shape[-1])
        grid = tokens.new_zeros(self.batch_size * self.max_len, tokens.shape[-1])
        grid.index_copy_(0, self.grid_indices, tokens)
        return grid.view(self.batch_size, self.max_len, -1)

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (N, D)."""
        flat = grid.reshape(self.batch_size * self.max_len, grid.shape[-1])
        return flat if self.grid_indices is None else gather_rows(flat, self.grid_indices)

    def positions(self, device: torch.device) -> torch.Tensor:
        """(N,) the position id (column t) of each real token."""
        if self.indices is None:
            return torch.arange(self.seq_len, device=device).repeat(self.batch_size)
        return self.indices.remainder(self.seq_len)

    def select(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) boolean of wanted positions (all real) -> (K,) their row indices in (N, ...)."""
        flat = positions.flatten().nonzero().squeeze(1)  # (K,) flat positions, row-major
        if self.indices is None:
            return flat
        token_of = torch.full((self.batch_size * self.seq_len,), -1, dtype=torch.long, device=flat.device)
        token_of[self.indices] = torch.arange(self.indices.shape[0], device=flat.device)
        return token_of[flat]


def varlen_attention_available(q: torch.Tensor, dropout_p: float) -> bool:
    """Flash varlen attention: CUDA, half precision, no dropout on the probabilities."""
    if not q.is_cuda or dropout_p > 0.0 or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """q, k, v (N, heads, D) -> (N, heads, D), each token attending within its own sequence."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, layout.cu_seqlens, layout.cu_seqlens, layout.max_len, layout.max_len)
