"""The budget-aware learning-rate schedule (Cramming): with a time limit the decay runs on the
fraction of the budget used and ends exactly at the time limit. Timed with an injected fake
clock, never a real one; without a time limit the step schedule is unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bertforge.errors import BertforgeError
from bertforge.train import TrainConfig, Trainer
from bertforge.train.checkpoint import checkpoint_dirs, latest_checkpoint
from bertforge.train.pretraining import PretrainingObjective
from bertforge.train.schedule import budget_factor, budget_used, schedule_factor
from test_trainer import SyntheticBatches, tiny_model

PEAK = 1e-3


class FakeClock:
    """A clock that only moves when the test (or the objective below) moves it."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class TimedObjective(PretrainingObjective):
    """Pretraining whose every forward takes `seconds` on the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float):
        self.clock, self.seconds = clock, seconds

    def losses(self, model, batch):
        self.clock.now += self.seconds
        return super().losses(model, batch)


def timed_run(run_dir, seconds_per_step, clock=None, evaluations=None, **overrides):
    settings = dict(batch_size=4, max_steps=1000, learning_rate=PEAK, warmup_steps=2, time_limit_minutes=1.0,
                    progress=False, tensorboard=False, log_every=1)
    config = TrainConfig(**{**settings, **overrides})
    clock = clock or FakeClock()
    evaluations = [] if evaluations is None else evaluations
    trainer = Trainer(tiny_model(), config, run_dir, SyntheticBatches(), TimedObjective(clock, seconds_per_step),
                      evaluate=lambda model: evaluations.append(trainer.step) or {"x": 1.0}, clock=clock)
    return trainer, trainer.fit()


def train_records(run_dir):
    return [record for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if (record := json.loads(line))["split"] == "train"]


def test_the_learning_rate_reaches_zero_exactly_at_the_time_limit(tmp_path):
    evaluations = []
    trainer, result = timed_run(tmp_path, 10.0, evaluations=evaluations)  # 10 s a step, 60 s budget
    records = train_records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and result.step == 6 and result.stopped_early
    assert [r["elapsed_seconds"] for r in records] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    expected = [PEAK * budget_factor(k, k / 6, 2, 1000, "linear") for k in range(1, 7)]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-12, abs=0)
    assert records[-1]["lr"] == 0.0 and all(r["lr"] > 0 for r in records[:-1])
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0
    # Warmup on steps (step 0: 1/2, step 1: the peak), then the linear decay to 0 over the 60 s.
    assert expected[0] == pytest.approx(PEAK * 5 / 6 * 1000 / 998)
    assert evaluations == [0, 6] and latest_checkpoint(tmp_path).name == "step-6"  # final evaluation and save


def test_a_step_that_crosses_the_limit_ends_the_run_fully_decayed(tmp_path):
    _, result = timed_run(tmp_path, 7.0, schedule="polynomial", power=2.0)  # 56 s after 8 steps, 63 s after 9
    records = train_records(tmp_path)
    assert result.step == 9 and records[-1]["lr"] == 0.0 and records[-2]["lr"] > 0
    assert records[-2]["lr"] == pytest.approx(PEAK * ((1 - 56 / 60) * 1000 / 998) ** 2)


def test_steps_budget_keeps_the_step_schedule_under_a_time_limit(tmp_path):
    _, result = timed_run(tmp_path, 10.0, schedule_budget="steps")
    records = train_records(tmp_path)
    assert result.step == 6 and result.stopped_early  # the limit still stops the run
    assert [r["lr"] for r in records] == [PEAK * schedule_factor(k, 2, 1000, "linear") for k in range(1, 7)]
    assert records[-1]["lr"] > 0.99 * PEAK  # in mid-schedule, as before budgets existed


def test_without_a_time_limit_the_schedule_counts_steps_as_before(tmp_path):
    clock = FakeClock()
    _, result = timed_run(tmp_path, 1e6, clock=clock, max_steps=8, time_limit_minutes=None)
    records = train_records(tmp_path)
    assert result.step == 8 and not result.stopped_early
    assert [r["lr"] for r in records] == [PEAK * schedule_factor(k, 2, 8, "linear") for k in range(1, 9)]
    assert TrainConfig().budget() == "steps" and TrainConfig(time_limit_minutes=5).budget() == "time"
    assert TrainConfig(time_limit_minutes=5, schedule_budget="steps").budget() == "steps"
    with pytest.raises(BertforgeError, match="schedule_budget=time needs train.time_limit_minutes"):
        TrainConfig(schedule_budget="time")
    with pytest.raises(BertforgeError, match="time_limit_minutes must be positive"):
        TrainConfig(time_limit_minutes=0)


def test_a_resumed_run_continues_the_budget(tmp_path):
    """The elapsed time rides in the checkpoint: resumed in a new process (a clock that starts
    anywhere), the run ends at the same step with the same learning rates."""
    timed_run(tmp_path / "straight", 10.0)
    timed_run(tmp_path / "resumed", 10.0, save_every=3, keep_last=10)
    for path in checkpoint_dirs(tmp_path / "resumed"):
        if path.name != "step-3":
            shutil.rmtree(path)  # as if the run died after step 3
    state = torch.load(latest_checkpoint(tmp_path / "resumed") / "trainer_state.pt", weights_only=True)
    assert state["elapsed_seconds"] == 30.0
    _, result = timed_run(tmp_path / "resumed", 10.0, clock=FakeClock(now=5.0), resume=True)
    assert result.step == 6 and result.elapsed_seconds == 60.0
    assert train_records(tmp_path / "resumed") == train_records(tmp_path / "straight")


def test_budget_factor_is_the_step_schedule_on_step_progress():
    for kind, power in (("linear", 1.0), ("polynomial", 2.0), ("constant", 1.0)):
        for step in range(0, 101):
            assert budget_factor(step, step / 100, 10, 100, kind, power) == pytest.approx(
                schedule_factor(step, 10, 100, kind, power), abs=1e-12), (kind, step)
    assert budget_used(5, 100, 30.0, 1.0) == 0.5 and budget_used(50, 100, 3.0, 1.0) == 0.5
    assert budget_used(5, 100, 90.0, 1.0) == 1.0 and budget_used(5, 100, 1e9, None) == 0.05
    # Time runs out during the warmup: the ramp meets the decay, without a jump to the peak.
    assert budget_factor(3, 0.9, 10, 100, "linear") == pytest.approx(0.1 * 100 / 90)
    assert budget_factor(3, 1.0, 10, 100, "linear") == 0.0
