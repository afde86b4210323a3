"""Unpadded ("token-major") batches: the encoder's dense layers run on the real tokens only.

A padded batch (B, T) with attention_mask is turned into a `TokenLayout`: the flat positions of
its N real tokens. Embeddings, the query/key/value and output projections, the feed-forward
layers and the LayerNorms (nearly all of BERT's FLOPs) then run on (N, H) instead of (B, T, H),
as in NVIDIA's BERT and MosaicBERT's `bert_padding.py`. Attention stays within each sequence:

- by default the projected q, k, v are scattered into a (B, L, 3H) grid, where L is the
  longest real row (not the padded T), and go through SDPA with a boolean key mask; the
  context is gathered back to (N, H). The scatter and gather move O(N·H) bytes per layer,
  against O(N·H²) FLOPs in the projections. When the lengths in a batch differ a lot (a
  dynamically padded batch of sentences), the rows are grouped by length into up to
  `MAX_BUCKETS` grids, each as long as its own longest row, so that attention's
  O(rows · L²) work follows the real lengths instead of the longest one;
- on CUDA, with no dropout on the attention probabilities, `torch.nn.attention.varlen.varlen_attn`
  (flash attention over cumulative sequence lengths) runs on (N, heads, D) directly;
- when a head reads only some rows of the last layer (the masked positions, or [CLS]), a
  `QueryLayout` puts just those rows' queries in grids aligned row for row with the key grids,
  so the last layer's attention is (rows, Q, L) instead of (rows, L, L), Q the most rows any
  sequence keeps.

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


MAX_BUCKETS = 4
"""At most this many attention grids per batch."""
BUCKET_MIN_ROWS = 8
"""A grid holds at least this many rows (fewer, larger SDPA calls)."""
BUCKET_RATIO = 0.75
"""A row shorter than this fraction of its grid's longest row starts the next grid."""
BUCKET_GAIN = 0.75
"""Use several grids only when their attention work is below this fraction of one grid's."""


@dataclass
class Grid:
    """One attention grid: `rows` sequences, each padded to `max_len`, holding some of the N tokens."""

    rows: int
    max_len: int
    tokens: torch.Tensor | None
    """(N_g,) which of the N tokens are in this grid, in order; None: all N, in order."""
    slots: torch.Tensor | None
    """(N_g,) flat slot row * max_len + rank of each of those tokens; None: the grid is the tokens reshaped."""
    mask: torch.Tensor | None
    """(rows, 1, 1, max_len) boolean key mask, or None when every row has max_len tokens."""


def plan_buckets(lengths: list[int]) -> list[list[int]] | None:
    """Group row ids by length (longest first) when that cuts attention work enough, else None."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    groups = [[order[0]]]
    for placed, row in enumerate(order[1:], start=1):
        group = groups[-1]
        if (lengths[row] < BUCKET_RATIO * lengths[group[0]] and len(group) >= BUCKET_MIN_ROWS
                and len(groups) < MAX_BUCKETS and len(order) - placed >= BUCKET_MIN_ROWS):
            groups.append([row])
        else:
            group.append(row)
    single = len(lengths) * lengths[order[0]] ** 2
    split = sum(len(group) * lengths[group[0]] ** 2 for group in groups)
    return groups if len(groups) > 1 and split < BUCKET_GAIN * single else None


def scatter_to_grids(tokens: torch.Tensor, grids: list[Grid]) -> tuple[torch.Tensor, ...]:
    """(N, D) tokens -> one (rows * max_len, D) grid per bucket, zeros in the empty slots."""
    outputs = []
    for grid in grids:
        out = tokens.new_zeros(grid.rows * grid.max_len, tokens.shape[-1])
        out.index_copy_(0, grid.slots, tokens.index_select(0, grid.tokens))
        outputs.append(out)
    return tuple(outputs)


def gather_from_grids(grids: list[Grid], num_tokens: int, values: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One (rows * max_len, D) grid per bucket -> the (N, D) tokens."""
    out = values[0].new_empty(num_tokens, values[0].shape[-1])
    for grid, value in zip(grids, values):
        out.index_copy_(0, grid.tokens, value.index_select(0, grid.slots))
    return out


class _ToGrids(torch.autograd.Function):
    """scatter_to_grids, whose backward gathers with index_copy_ (slots never repeat)."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, grids: list[Grid]):
        ctx.grids = grids
        ctx.num_tokens = tokens.shape[0]
        return scatter_to_grids(tokens, grids)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        first = next(g for g in grads if g is not None)
        tokens_grad = first.new_zeros(ctx.num_tokens, first.shape[-1])
        for grid, grad in zip(ctx.grids, grads):
            if grad is not None:
                tokens_grad.index_copy_(0, grid.tokens, grad.index_select(0, grid.slots))
        return tokens_grad, None


class _FromGrids(torch.autograd.Function):
    """gather_from_grids, whose backward scatters with index_copy_."""

    @staticmethod
    def forward(ctx, grids: list[Grid], num_tokens: int, *values: torch.Tensor) -> torch.Tensor:
        ctx.grids = grids
        return gather_from_grids(grids, num_tokens, values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grads = []
        for grid in ctx.grids:
            value_grad = grad.new_zeros(grid.rows * grid.max_len, grad.shape[-1])
            value_grad.index_copy_(0, grid.slots, grad.index_select(0, grid.tokens))
            grads.append(value_grad)
        return (None, None, *grads)


@dataclass
class TokenLayout:
    """Where the N real tokens of a (B, T) batch are, and the grids attention runs on.

    `indices` is None when every position is real (then the tokens are the batch, reshaped).
    """

    batch_size: int
    seq_len: int
    """T of the padded input."""
    max_len: int
    """L: the longest real row."""
    indices: torch.Tensor | None
    """(N,) flat positions b * T + t of the real tokens, in row-major order; None: all real."""
    grids: list[Grid]
    """The attention grids: one (B, L) grid, or several for rows grouped by length."""
    cu_seqlens: torch.Tensor
    """(B + 1,) int32 cumulative real lengths, for varlen attention kernels."""

    @property
    def num_tokens(self) -> int:
        return self.batch_size * self.seq_len if self.indices is None else int(self.indices.shape[0])

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int,
                  device: torch.device, bucket: bool = True) -> "TokenLayout":
        """attention_mask (B, T) of 1 for real tokens and 0 for padding, or None (all real).

        bucket: allow several attention grids grouped by length (see `plan_buckets`).
        """
        if attention_mask is None or bool(attention_mask.bool().all()):
            lengths = torch.full((batch_size,), seq_len, dtype=torch.int32, device=device)
            cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
            grid = Grid(batch_size, seq_len, None, None, None)
            return cls(batch_size, seq_len, seq_len, None, [grid], cu_seqlens)
        real = attention_mask.bool()  # (B, T)
        lengths = real.sum(1)  # (B,)
        length_list = lengths.tolist()
        max_len = max(max(length_list), 1)
        indices = real.flatten().nonzero().squeeze(1)  # (N,)
        # A token's slot is its rank among the real tokens of its row, so a grid holds each
        # row's tokens left-aligned whatever the padding side; attention does not depend on
        # the order of the keys, and positions were already added by the embeddings.
        ranks = (real.cumsum(1) - 1).flatten()[indices]  # (N,)
        rows = torch.div(indices, seq_len, rounding_mode="floor")  # (N,)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        groups = plan_buckets(length_list) if bucket else None
        if groups is None:
            grid_real = torch.arange(max_len, device=device) < lengths[:, None]  # (B, L)
            mask = None if bool(grid_real.all()) else grid_real[:, None, None, :]
            grids = [Grid(batch_size, max_len, None, rows * max_len + ranks, mask)]
        else:
            grids = []
            for group in groups:
                group_rows = torch.tensor(group, device=device)
                group_len = max(length_list[group[0]], 1)
                place = torch.full((batch_size,), -1, dtype=torch.long, device=device)
                place[group_rows] = torch.arange(len(group), device=device)  # row -> row in this grid
                token_place = place[rows]  # (N,)
                tokens = (token_place >= 0).nonzero().squeeze(1)  # (N_g,)
                slots = token_place[tokens] * group_len + ranks[tokens]
                grid_real = torch.arange(group_len, device=device) < lengths[group_rows][:, None]
                mask = None if bool(grid_real.all()) else grid_real[:, None, None, :]
                grids.append(Grid(len(group), group_len, tokens, slots, mask))
        return cls(batch_size, seq_len, max_len, indices, grids, cu_seqlens)

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

    def to_grids(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(N, D) -> one (rows, max_len, D) attention grid per Grid, zeros in the empty slots."""
        return tokens_to_grids(tokens, self.grids)

    def from_grids(self, values: list[torch.Tensor]) -> torch.Tensor:
        """One (rows, max_len, D) grid per Grid -> (N, D)."""
        return grids_to_tokens(values, self.grids, self.num_tokens)

    def token_rows(self) -> torch.Tensor:
        """(N,) the batch row of each real token."""
        if self.indices is None:
            return torch.arange(self.num_tokens, device=self.cu_seqlens.device).div(self.seq_len, rounding_mode="floor")
        return self.indices.div(self.seq_len, rounding_mode="floor")

    def queries(self, keep: torch.Tensor) -> "QueryLayout":
        """The attention grids of the `keep` tokens (K,), ascending indices into the N: each kept
        token sits in the same grid row as its sequence's keys, so only the K queries attend."""
        device = keep.device
        token_rows = self.token_rows()
        rows = token_rows[keep]  # (K,) batch row of each kept token
        counts = torch.bincount(rows, minlength=self.batch_size)  # (B,) kept tokens per row
        ranks = torch.arange(keep.shape[0], device=device) - (counts.cumsum(0) - counts)[rows]  # (K,)
        grids = []
        for grid in self.grids:
            if grid.tokens is None:  # the grid's rows are the batch's rows, in order
                width = max(int(counts.max()), 1)
                slots = None if bool((counts == width).all()) else rows * width + ranks
                grids.append(Grid(grid.rows, width, None, slots, None))
                continue
            place = torch.full((self.batch_size,), -1, dtype=torch.long, device=device)  # row -> grid row
            place[token_rows[grid.tokens]] = grid.slots.div(grid.max_len, rounding_mode="floor")
            kept_place = place[rows]  # (K,)
            members = (kept_place >= 0).nonzero().squeeze(1)  # kept tokens in this grid
            width = max(int(counts[place >= 0].max()), 1)
            grids.append(Grid(grid.rows, width, members, kept_place[members] * width + ranks[members], None))
        return QueryLayout(keep, grids)

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


@dataclass
class QueryLayout:
    """The K tokens whose last-layer output a sparse head reads (`TokenLayout.queries`), placed
    in grids that line up with the key grids row for row: grid g holds, in row r, the kept
    tokens of the sequence in row r of key grid g (`max_len` is the most any row keeps)."""

    keep: torch.Tensor
    """(K,) ascending indices into the N tokens."""
    grids: list[Grid]
    """One per key grid; no masks (an empty query slot computes a context nobody reads)."""

    @property
    def num_tokens(self) -> int:
        return int(self.keep.shape[0])

    def to_grids(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(K, D) -> one (rows, max_len, D) query grid per Grid."""
        return tokens_to_grids(tokens, self.grids)

    def from_grids(self, values: list[torch.Tensor]) -> torch.Tensor:
        """One (rows, max_len, D) grid per Grid -> (K, D)."""
        return grids_to_tokens(values, self.grids, self.num_tokens)


def tokens_to_grids(tokens: torch.Tensor, grids: list[Grid]) -> list[torch.Tensor]:
    """(N, D) -> one (rows, max_len, D) grid per Grid, zeros in the empty slots."""
    if len(grids) > 1:
        values = _to_grids(tokens, grids) if torch.is_grad_enabled() else scatter_to_grids(tokens, grids)
        return [value.view(grid.rows, grid.max_len, -1) for grid, value in zip(grids, values)]
    grid = grids[0]
    if grid.slots is None:
        return [tokens.view(grid.rows, grid.max_len, tokens.shape[-1])]
    value = tokens.new_zeros(grid.rows * grid.max_len, tokens.shape[-1])
    value.index_copy_(0, grid.slots, tokens)  # in place on fresh zeros: no clone
    return [value.view(grid.rows, grid.max_len, -1)]


def grids_to_tokens(values: list[torch.Tensor], grids: list[Grid], num_tokens: int) -> torch.Tensor:
    """One (rows, max_len, D) grid per Grid -> the (N, D) tokens."""
    flat = [value.reshape(-1, value.shape[-1]) for value in values]
    if len(grids) > 1:
        if torch.is_grad_enabled():
            return _from_grids(grids, num_tokens, flat)
        return gather_from_grids(grids, num_tokens, tuple(flat))
    slots = grids[0].slots
    return flat[0] if slots is None else gather_rows(flat[0], slots)


# Dynamo cannot trace an autograd.Function whose arguments are Grid objects when gradients are
# on (torch.compile of a training step fails inside it), so with gradients the several-grid
# scatter and gather run eagerly: a graph break on each side, around work that is only a copy.
# Without gradients (inference) the plain functions are traced into the compiled layer.
@torch.compiler.disable
def _to_grids(tokens: torch.Tensor, grids: list[Grid]) -> tuple[torch.Tensor, ...]:
    return _ToGrids.apply(tokens, grids)


@torch.compiler.disable
def _from_grids(grids: list[Grid], num_tokens: int, flat: list[torch.Tensor]) -> torch.Tensor:
    return _FromGrids.apply(grids, num_tokens, *flat)


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
