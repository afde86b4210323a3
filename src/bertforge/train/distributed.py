"""torch.distributed under torchrun: process-group setup, model wrapping (DDP or FSDP), reductions.

Nothing here launches processes: `torchrun --nproc_per_node N -m bertforge pretrain …` does.
Outside torchrun everything degrades to one process with no communication.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """The device `name` names; "auto" is CUDA when available, else CPU.

    The one place the "auto" choice is made: training, fine-tuning, export and serving all call this.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", local_rank if torch_device.index is None else torch_device.index)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, torch_device)


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context, parallelism: str) -> nn.Module:
    """DDP or FSDP around `model` when running distributed; the model itself otherwise."""
    if not context.distributed:
        return model
    if parallelism == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Shard each encoder layer separately, then the rest (embeddings, heads) at the root.
        for layer in model.bert.encoder.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model: nn.Module, skip: bool):
    """Skip the gradient all-reduce on accumulation micro-steps (DDP's no_sync; FSDP2's flag)."""
    if not skip:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_reduce_sum(values: torch.Tensor, context: Context) -> torch.Tensor:
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()

