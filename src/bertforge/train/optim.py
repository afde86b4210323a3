"""Optimizers: AdamW (fused or foreach kernels) and LAMB, with BERT's weight-decay grouping.

LAMB is written here (about 40 lines) because no maintained PyTorch package ships it for CPU
and CUDA alike: apex's FusedLAMB is CUDA-only and torch-optimizer is unmaintained.
"""

from __future__ import annotations

import torch
from torch import nn

from bertforge.train.config import TrainConfig


FUSED_DEVICES = ("cuda", "cpu")
"""Devices whose AdamW runs torch's fused kernel."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings (ndim >= 2); never biases or LayerNorm (ndim 1), as BERT does."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    betas = (config.beta1, config.beta2)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.learning_rate, betas=betas, eps=config.epsilon)
    # The fused kernel gives the reference loop's update in one pass over each tensor. On the
    # CPU it matters as much as on CUDA: for the L3-F576 MiniLM student (15M parameters, most
    # of them the word embeddings) foreach AdamW took about 260 ms a step on one core and fused
    # about 50 ms (issue 17), a quarter of a distillation step. foreach where fused has no kernel.
    fused = device.type in FUSED_DEVICES
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas, eps=config.epsilon,
                             fused=fused or None, foreach=None if fused else True)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019): Adam's update scaled per tensor by ||w|| / ||update||.

    Weight decay is added to the update before the trust ratio, as in the paper; tensors
    with zero norm (fresh biases) use a trust ratio of 1.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(param.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                update = (exp_avg / (1 - beta1 ** step)) / ((exp_avg_sq / (1 - beta2 ** step)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(param, alpha=group["weight_decay"])
                weight_norm, update_norm = param.norm(), update.norm()
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                    torch.ones_like(weight_norm))
                param.add_(update * trust, alpha=-group["lr"])
        return loss
