"""Reading prepared shards for training: `PretrainingDataset` (memory-mapped instances) and
`PretrainingBatches` (order, masking, padding, ranks, exact resume).

Order and masks are pure functions, so nothing has to be replayed:

- the instance order of epoch e is a permutation drawn from (seed, e) alone;
- the global batch at step s is `order[s*G:(s+1)*G]`, G = batch_size x world_size;
- rank r takes the contiguous slice `[r*batch_size:(r+1)*batch_size]` of that global batch, so
  the union of the ranks' batches at step s is exactly the single-process batch of size G at
  step s, and no instance is seen by two ranks within an epoch;
- the mask of an instance is drawn from (seed, e, global instance index) (`masking`).

Resuming from `state_dict()` ({"epoch", "position"}, position = steps done in the epoch) gives
the very batches an uninterrupted run would have seen, for any world size with the same global
batch size.

Batches are dicts of torch tensors: input_ids, token_type_ids, attention_mask (B, T) int64,
labels (B, T) with -100 where nothing is predicted, and next_sentence_label (B,) in nsp/sop
mode. T is the longest instance of the batch (dynamic padding) unless `pad_to="max_length"`.
The dict also carries, as attributes, `indices` (the global instance indices), `num_tokens`
(non-padding tokens) and `num_predictions` (masked-LM targets): counts for throughput and loss
normalisation without a device sync.

`num_workers > 0` builds batches ahead in worker processes (a torch DataLoader over steps);
the batches and the resume state are the same as when they are built in the trainer's process.

Departure from torch's DistributedSampler: it strides (rank r takes every W-th index), so its
union at a step is not a single-process batch; contiguous slices of one global order keep
"world size 2 x batch b" identical to "world size 1 x batch 2b".
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from bertforge.config import IGNORE_INDEX
from bertforge.data.masking import ORDER_STREAM, MaskingConfig, VocabTables, instance_generator, mask_sequence
from bertforge.data.shards import Shard, prepared_manifest
from bertforge.errors import BertforgeError


class Instance(NamedTuple):
    input_ids: np.ndarray
    """(L,) int64: [CLS] A [SEP] B [SEP] (masked ids when the data was masked statically)."""
    segment_a_length: int
    """Tokens of type 0 ([CLS] A [SEP])."""
    label: int | None
    """NSP/SOP label; None in mlm mode."""
    word_starts: np.ndarray | None
    """(L,) bool, where words begin (Chinese whole-word data only)."""
    mask_labels: np.ndarray | None
    """(L,) int64 with IGNORE_INDEX where nothing is predicted (statically masked data only)."""


class PretrainingDataset:
    """The instances of one split of a prepared directory, memory-mapped shard by shard."""

    def __init__(self, directory: str | Path, split: str = "train", *, max_open_shards: int = 64):
        self.directory = Path(directory)
        self.manifest: dict[str, Any] = prepared_manifest(self.directory)
        splits = self.manifest["splits"]
        if split not in splits:
            raise BertforgeError(f"no split {split!r} (have {', '.join(splits)})", path=self.directory)
        self.split = split
        self.mode: str = self.manifest["mode"]
        self.max_seq_length: int = int(self.manifest["max_seq_length"])
        self.static_masks: bool = self.manifest["masking"] == "static"
        vocab = self.manifest["vocab"]
        self.vocab_size: int = int(vocab["size"])
        self.special_ids: dict[str, int] = {key: int(value) for key, value in vocab["special_ids"].items()}
        shards = [entry for entry in splits[split]["shards"] if entry["instances"] > 0]
        self._files = [self.directory / entry["file"] for entry in shards]
        counts = np.array([entry["instances"] for entry in shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._open: OrderedDict[int, Shard] = OrderedDict()
        self._max_open = max(1, max_open_shards)
        self._lengths: np.ndarray | None = None
        self._tables: VocabTables | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["splits"][self.split]["tokens"])

    def token_counts(self) -> np.ndarray:
        """(vocab_size,) how often each token id occurs in this split (special tokens included)."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for number in range(len(self._files)):
            counts += np.bincount(self._shard(number)["tokens"], minlength=self.vocab_size)[:self.vocab_size]
        return counts

    def _shard(self, number: int) -> Shard:
        shard = self._open.get(number)
        if shard is not None:
            self._open.move_to_end(number)
            return shard
        path = self._files[number]
        if not path.exists():
            raise BertforgeError("shard listed in manifest.json is missing", path=path)
        shard = Shard(path)
        self._open[number] = shard
        if len(self._open) > self._max_open:
            # Bounded: a corpus of thousands of shards must not exhaust file descriptors.
            self._open.popitem(last=False)[1].close()
        return shard

    def __getitem__(self, index: int) -> Instance:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"instance {index} out of range for {len(self)} instances")
        number = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - int(self._starts[number])
        shard = self._shard(number)
        offsets = shard["offsets"]
        start, end = int(offsets[local]), int(offsets[local + 1])
        input_ids = shard["tokens"][start:end].astype(np.int64)
        labels = shard.get("labels")
        starts = shard.get("word_starts")
        mask_labels = None
        if self.static_masks:
            mask_offsets = shard["mask_offsets"]
            first, last = int(mask_offsets[local]), int(mask_offsets[local + 1])
            mask_labels = np.full(end - start, IGNORE_INDEX, dtype=np.int64)
            mask_labels[shard["mask_positions"][first:last].astype(np.int64)] = shard["mask_labels"][first:last]
        return Instance(input_ids=input_ids, segment_a_length=int(shard["segment_a_lengths"][local]),
                        label=None if labels is None else int(labels[local]),
                        word_starts=None if starts is None else starts[start:end].astype(bool),
                        mask_labels=mask_labels)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int32: the length of every instance (opens each shard once)."""
        if self._lengths is None:
            parts = [np.diff(self._shard(number)["offsets"]).astype(np.int32) for number in range(len(self._files))]
            self._lengths = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return self._lengths

    def vocab_tables(self) -> VocabTables:
        """The special/continuation tables of the vocab the data was prepared with."""
        if self._tables is None:
            from bertforge.tokenizer.vocab import read_vocab, vocab_hash

            tokens = read_vocab(self.directory / self.manifest["vocab"]["file"])
            if vocab_hash(tokens) != self.manifest["vocab"]["hash"]:
                raise BertforgeError("vocab.txt does not match the hash in manifest.json", path=self.directory)
            self._tables = VocabTables.from_tokens(tokens, sorted(set(self.special_ids.values())),
                                                   self.special_ids["mask"])
        return self._tables

    def check_vocab(self, tokenizer: Any) -> None:
        """BertforgeError unless `tokenizer` has the vocab (same tokens, same ids) of the data."""
        from bertforge.tokenizer.vocab import vocab_hash

        expected = self.manifest["vocab"]["hash"]
        actual = getattr(tokenizer, "vocab_hash", None)
        if actual is None:
            vocab = tokenizer.vocab
            actual = vocab_hash([token for token, _ in sorted(vocab.items(), key=lambda item: item[1])])
        if actual != expected:
            raise BertforgeError(f"the tokenizer's vocab (sha256 {actual[:12]}…) is not the one the data was "
                                 f"prepared with (sha256 {expected[:12]}…)", path=self.directory)

    def close(self) -> None:
        for shard in self._open.values():
            shard.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps do not travel to loader worker processes; each reopens what it reads.
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


class PretrainingBatch(dict):
    """A batch: a dict of tensors, plus plain-number attributes that need no device sync."""

    indices: np.ndarray
    num_tokens: int
    num_predictions: int


class PretrainingBatches:
    """Padded, masked batches of a `PretrainingDataset` for one rank (see the module docstring)."""

    def __init__(self, dataset: PretrainingDataset, batch_size: int = 32, masking: MaskingConfig | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 pad_to: Literal["longest", "max_length"] = "longest", pad_to_multiple_of: int | None = None,
                 num_workers: int = 0, prefetch_factor: int = 4):
        """
        Args:
            masking: for dynamically masked data (the default); ignored when the data carries
                static masks. None: MaskingConfig() with the prepared whole-word setting.
            drop_last: drop the last incomplete global batch. Without it, the last batch of a
                single process is short; with several ranks it is filled up from the start of
                the epoch's order (as DistributedSampler pads), so every rank takes a step.
            pad_to: "longest" pads to the longest instance in the batch, "max_length" to the
                prepared max_seq_length.
            num_workers: processes that build batches ahead of the trainer (a torch DataLoader
                over steps; a batch is a pure function of its step, so the batches and the
                resume state are the same as with 0, which builds them in this process).
        """
        if batch_size < 1:
            raise BertforgeError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise BertforgeError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        if pad_to not in ("longest", "max_length"):
            raise BertforgeError(f"pad_to must be 'longest' or 'max_length', got {pad_to!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise BertforgeError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        if num_workers < 0 or prefetch_factor < 1:
            raise BertforgeError(f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers}, "
                                 f"{prefetch_factor}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.masking = masking or MaskingConfig()
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.pad_to, self.pad_to_multiple_of = pad_to, pad_to_multiple_of
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.epoch = 0
        self.position = 0
        manifest = dataset.manifest
        self.whole_word = (self.masking.whole_word_mask if self.masking.whole_word_mask is not None
                           else manifest.get("whole_word_mask", "none") != "none")
        self.max_predictions = self.masking.max_predictions(dataset.max_seq_length)
        self.tables = dataset.vocab_tables()
        self.pad_id = dataset.special_ids["pad"]
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None
        if len(self) == 0:
            raise BertforgeError(f"the {dataset.split} split has {len(dataset)} instances, fewer than one global "
                                 f"batch of {self.global_batch_size}; lower batch_size or set drop_last=False",
                                 path=dataset.directory)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same for every rank)."""
        count = len(self.dataset)
        if self.drop_last:
            return count // self.global_batch_size
        return -(-count // self.global_batch_size)

    # ---- order

    def order(self, epoch: int) -> np.ndarray:
        """(N,) the global instance order of `epoch`."""
        if self._order_epoch != epoch or self._order is None:
            count = len(self.dataset)
            if self.shuffle:
                self._order = np.random.default_rng([ORDER_STREAM, self.seed, epoch]).permutation(count)
            else:
                self._order = np.arange(count)
            self._order_epoch = epoch
        return self._order

    def global_indices(self, epoch: int, step: int) -> np.ndarray:
        """The instance indices of the global batch (all ranks) at `step` of `epoch`."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} out of range for {len(self)} steps per epoch")
        order = self.order(epoch)
        size = self.global_batch_size
        indices = order[step * size:(step + 1) * size]
        if indices.size < size and self.world_size > 1:
            indices = np.concatenate([indices, np.resize(order, size - indices.size)])
        return indices

    def rank_indices(self, epoch: int, step: int) -> np.ndarray:
        indices = self.global_indices(epoch, step)
        if self.world_size == 1:
            return indices
        return indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    # ---- batches

    def batch_at(self, epoch: int, step: int) -> PretrainingBatch:
        """The batch this rank gets at `step` of `epoch` (random access; used by iteration)."""
        return self.collate(self.rank_indices(epoch, step), epoch)

    def collate(self, indices: np.ndarray, epoch: int) -> PretrainingBatch:
        import torch

        instances = [self.dataset[int(index)] for index in indices]
        longest = max(len(instance.input_ids) for instance in instances)
        width = self.dataset.max_seq_length if self.pad_to == "max_length" else longest
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = len(instances)
        input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)  # (B, T)
        token_type_ids = np.zeros((rows, width), dtype=np.int64)  # (B, T)
        attention_mask = np.zeros((rows, width), dtype=np.int64)  # (B, T)
        labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        for row, (index, instance) in enumerate(zip(indices, instances)):
            length = len(instance.input_ids)
            if instance.mask_labels is not None:
                masked, row_labels = instance.input_ids, instance.mask_labels
            else:
                rng = instance_generator(self.seed, epoch, int(index))
                masked, row_labels = mask_sequence(instance.input_ids, tables=self.tables, rng=rng,
                                                   config=self.masking, max_predictions=self.max_predictions,
                                                   whole_word=self.whole_word, word_starts=instance.word_starts)
            input_ids[row, :length] = masked
            labels[row, :length] = row_labels
            token_type_ids[row, instance.segment_a_length:length] = 1
            attention_mask[row, :length] = 1
        batch = PretrainingBatch(input_ids=torch.from_numpy(input_ids),
                                 token_type_ids=torch.from_numpy(token_type_ids),
                                 attention_mask=torch.from_numpy(attention_mask),
                                 labels=torch.from_numpy(labels))
        if self.dataset.mode != "mlm":
            batch["next_sentence_label"] = torch.tensor([instance.label for instance in instances], dtype=torch.long)
        batch.indices = np.asarray(indices, dtype=np.int64)
        batch.num_tokens = int(attention_mask.sum())
        batch.num_predictions = int((labels != IGNORE_INDEX).sum())
        return batch

    def __iter__(self):
        """The rest of the current epoch from `position`; at its end the epoch advances."""
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        epoch = self.epoch
        for step, batch in zip(range(self.position, len(self)), self._batches(epoch, self.position)):
            # Counted before the yield: a state_dict taken while the trainer holds this batch
            # says "resume after it".
            self.position = step + 1
            yield batch
        self.epoch, self.position = epoch + 1, 0

    def _batches(self, epoch: int, start: int):
        if self.num_workers == 0:
            return (self.batch_at(epoch, step) for step in range(start, len(self)))
        from torch.utils.data import DataLoader

        loader = DataLoader(_Steps(self, epoch, start), batch_size=None, shuffle=False,
                            num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
                            collate_fn=_as_is)
        return (_rebuild(item) for item in loader)

    # ---- state

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position,
                "samples": self.position * self.global_batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume exactly; with another global batch size, at the step that covers `samples`."""
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        samples = state.get("samples")
        if samples is not None and samples != position * self.global_batch_size:
            position = int(samples) // self.global_batch_size
        self.position = position
        if "seed" in state and int(state["seed"]) != self.seed:
            raise BertforgeError(f"the data state was saved with seed {state['seed']}, not {self.seed}; "
                                 "resume with the same seed")


class _Steps:
    """Map-style view of one epoch's remaining steps, for torch's DataLoader workers."""

    def __init__(self, batches: PretrainingBatches, epoch: int, start: int):
        self.batches, self.epoch, self.start = batches, epoch, start

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, offset: int) -> tuple[dict[str, Any], np.ndarray, int, int]:
        # A plain dict and the attributes apart: the DataLoader would rebuild the dict type
        # without them.
        batch = self.batches.batch_at(self.epoch, self.start + offset)
        return dict(batch), batch.indices, batch.num_tokens, batch.num_predictions


def _as_is(item: Any) -> Any:
    return item


def _rebuild(item: tuple[dict[str, Any], np.ndarray, int, int]) -> PretrainingBatch:
    tensors, indices, num_tokens, num_predictions = item
    batch = PretrainingBatch(tensors)
    batch.indices, batch.num_tokens, batch.num_predictions = indices, num_tokens, num_predictions
    return batch
