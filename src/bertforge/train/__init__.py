"""Training as a library: the loop, optimizers, schedules, precision, checkpoints, torch.distributed."""

from bertforge.train.config import TrainConfig
from bertforge.train.trainer import Objective, Trainer, TrainResult, autocast

__all__ = ["TrainConfig", "Trainer", "TrainResult", "Objective", "autocast"]
