"""The trainer on synthetic batches: it learns, resumes bit-exactly, normalizes losses per step."""

from __future__ import annotations

import pytest
import torch

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertForPreTraining
from bertforge.train import TrainConfig, Trainer
from bertforge.train.checkpoint import MARKER, checkpoint_dirs, latest_checkpoint
from bertforge.train.optim import Lamb, parameter_groups
from bertforge.train.pretraining import PretrainingObjective, evaluate_pretraining, most_common_token
from bertforge.train.schedule import schedule_factor


class ListBatches:
    """Micro-batches from a list, with the position protocol the Trainer resumes from."""

    def __init__(self, items: list[dict[str, torch.Tensor]]):
        self.items = items
        self.epoch, self.position = 0, 0

    def __iter__(self):
        while self.position < len(self.items):
            self.position += 1
            yield self.items[self.position - 1]

    def set_epoch(self, epoch):
        self.epoch, self.position = epoch, 0

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = state["epoch"], state["position"]


class SyntheticBatches(ListBatches):
    """A fixed, seeded set of masked-LM + NSP micro-batches."""

    def __init__(self, count: int = 12, batch_size: int = 4, seq_len: int = 16, vocab: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        items = []
        for _ in range(count):
            ids = torch.randint(5, vocab, (batch_size, seq_len), generator=generator)
            mask = torch.ones_like(ids)
            mask[0, seq_len - 3:] = 0
            ids[mask == 0] = 0
            labels = torch.full_like(ids, IGNORE_INDEX)
            chosen = (torch.rand(ids.shape, generator=generator) < 0.25) & (mask == 1)
            labels[chosen] = ids[chosen]
            items.append(dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=mask,
                              labels=labels, next_sentence_label=torch.randint(0, 2, (batch_size,), generator=generator)))
        super().__init__(items)


def tiny_model(seed: int = 0) -> BertForPreTraining:
    torch.manual_seed(seed)
    return BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=32))


def train(run_dir, steps, resume=False, seed=0, **overrides):
    settings = dict(batch_size=4, max_steps=steps, learning_rate=1e-3, warmup_steps=2, seed=seed,
                    progress=False, tensorboard=False, resume=resume, log_every=1)
    config = TrainConfig(**{**settings, **overrides})
    model = tiny_model(seed)
    trainer = Trainer(model, config, run_dir, SyntheticBatches(), PretrainingObjective())
    return trainer, trainer.fit()


def test_loss_falls(tmp_path):
    trainer, _ = train(tmp_path, 30)
    import json
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.5


def test_resume_is_bit_exact(tmp_path):
    _, _ = train(tmp_path / "straight", 8)
    straight = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "straight"))
    # Stop after 5 of the 8 steps (as a crash would), then resume the same 8-step run.
    config_overrides = dict(save_every=5)
    trainer, _ = train(tmp_path / "resumed", 8, **config_overrides)
    import shutil
    for path in checkpoint_dirs(tmp_path / "resumed"):
        if path.name != "step-5":
            shutil.rmtree(path)
    trainer, result = train(tmp_path / "resumed", 8, resume=True)
    assert result.step == 8
    resumed = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "resumed"))
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_accumulation_matches_one_big_batch(tmp_path):
    # Two accumulated micro-batches of 4 make the same update as one step over both (8 rows),
    # because each loss is normalized by the step's total count of masked tokens.
    big_batches = SyntheticBatches()
    merged = [{key: torch.cat([a[key], b[key]]) for key in a} for a, b in zip(big_batches.items[::2], big_batches.items[1::2])]
    big_batches.items = merged
    results = {}
    for name, batches, micro in (("big", big_batches, None), ("accumulated", SyntheticBatches(), 4)):
        config = TrainConfig(batch_size=8, micro_batch_size=micro, max_steps=3, learning_rate=1e-3, warmup_steps=1,
                             progress=False, tensorboard=False, max_grad_norm=None)
        model = tiny_model()
        model.config.hidden_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.bert.encoder.layers[0].attention.dropout_p = 0.0
        model.bert.encoder.layers[1].attention.dropout_p = 0.0
        Trainer(model, config, tmp_path / name, batches, PretrainingObjective()).fit()
        results[name] = model.state_dict()
    for name, tensor in results["big"].items():
        torch.testing.assert_close(tensor, results["accumulated"][name], atol=2e-6, rtol=1e-5, msg=name)


def test_keep_last_and_marker(tmp_path):
    train(tmp_path, 6, save_every=1, keep_last=2)
    names = [path.name for path in checkpoint_dirs(tmp_path)]
    assert names == ["step-5", "step-6"]
    assert all((tmp_path / "checkpoints" / name / MARKER).exists() for name in names)
    # A half-written checkpoint (no marker) is ignored.
    (tmp_path / "checkpoints" / "step-9").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-6"


def test_nonfinite_loss_stops_with_message(tmp_path):
    with pytest.raises(BertforgeError, match="not finite for 2 steps in a row"):
        train(tmp_path, 10, learning_rate=1e30, max_nonfinite_steps=2, max_grad_norm=None)


def test_resume_refuses_incompatible_checkpoint(tmp_path):
    train(tmp_path, 2)
    config = TrainConfig(batch_size=4, max_steps=4, progress=False, tensorboard=False, resume=True)
    torch.manual_seed(0)
    other = BertForPreTraining(BertConfig.from_preset("mini", vocab_size=64, max_position_embeddings=32))
    with pytest.raises(BertforgeError, match="cannot resume: the checkpoint has hidden_size=128"):
        Trainer(other, config, tmp_path, SyntheticBatches(), PretrainingObjective()).fit()


def test_parameter_groups_cover_every_parameter_once():
    model = tiny_model()
    groups = parameter_groups(model, 0.01)
    seen = [id(p) for group in groups for p in group["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


def test_schedule_and_lamb():
    assert schedule_factor(0, 10, 100, "linear") == pytest.approx(0.1)
    assert schedule_factor(9, 10, 100, "linear") == pytest.approx(1.0)
    assert schedule_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert schedule_factor(55, 10, 100, "polynomial", power=2.0) == pytest.approx(0.25)
    assert schedule_factor(100, 10, 100, "linear") == 0.0
    weight = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = Lamb([weight], lr=0.1)
    weight.grad = torch.ones(4, 4)
    optimizer.step()
    # Trust ratio ||w|| / ||update|| = 4 / 4 = 1, so each entry moves by lr.
    torch.testing.assert_close(weight.detach(), torch.full((4, 4), 0.9), atol=1e-5, rtol=0)


def test_time_limit_stops_early_with_a_final_evaluation_and_checkpoint(tmp_path):
    evaluations = []
    config = TrainConfig(batch_size=4, max_steps=1000, time_limit_minutes=1e-9, progress=False, tensorboard=False)
    trainer = Trainer(tiny_model(), config, tmp_path, SyntheticBatches(), PretrainingObjective(),
                      evaluate=lambda model: evaluations.append(1) or {"x": 1.0})
    result = trainer.fit()
    assert result.stopped_early and result.step == 1
    assert len(evaluations) == 2  # before the first step and at the stop
    assert latest_checkpoint(tmp_path).name == "step-1"


def test_evaluate_at_start_can_be_skipped(tmp_path):
    evaluations = []
    config = TrainConfig(batch_size=4, max_steps=3, eval_every=2, progress=False, tensorboard=False)
    trainer = Trainer(tiny_model(), config, tmp_path, SyntheticBatches(), PretrainingObjective(),
                      evaluate=lambda model: evaluations.append(1) or {"x": 1.0}, evaluate_at_start=False)
    result = trainer.fit()
    assert len(evaluations) == 2 and result.first_metrics == {}  # steps 2 and 3, none before step 1


def test_evaluation_reports_the_context_free_baseline():
    """mlm_baseline_accuracy is the share of masked labels equal to the chosen token."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=50)).eval()
    input_ids = torch.randint(5, 50, (2, 8))
    labels = torch.full((2, 8), IGNORE_INDEX)
    labels[0, 1], labels[0, 2], labels[1, 3], labels[1, 4] = 7, 7, 9, 7
    batch = {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids),
             "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "next_sentence_label": torch.tensor([0, 1])}
    with torch.no_grad():
        metrics = evaluate_pretraining(model, [batch], torch.device("cpu"), baseline_token=7)
    assert metrics["mlm_baseline_accuracy"] == pytest.approx(0.75)
    assert most_common_token(torch.tensor([100, 0, 50, 40, 3, 9]), special_ids=[0, 2]) == 3


def test_compile_compiles_each_encoder_layer_and_trains_like_eager(tmp_path, monkeypatch):
    """train.compile=true: regional compilation of the encoder layers (aot_eager here: no code
    generation, so fast); the losses match an eager run step for step, the checkpoint keys too."""
    import json

    from bertforge.model.compiled import compile_encoder
    from bertforge.train import trainer as trainer_module

    compiled_layers = []

    def compile_for_test(model):
        compile_encoder(model, backend="aot_eager")
        compiled_layers.extend(layer for layer in model.bert.encoder.layers if layer._compiled_call_impl is not None)
        return model

    monkeypatch.setattr(trainer_module, "compile_encoder", compile_for_test)
    torch._dynamo.reset()
    train(tmp_path / "eager", 4)
    train(tmp_path / "compiled", 4, compile=True)
    torch._dynamo.reset()
    assert len(compiled_layers) == 2  # the tiny preset's two layers

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                if json.loads(line).get("split") == "train"]

    assert losses("compiled") == pytest.approx(losses("eager"), abs=1e-5)
    eager = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "eager"))
    compiled = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "compiled"))
    assert eager.state_dict().keys() == compiled.state_dict().keys()


# -- hooks: keep-best and early stopping ----------------------------------------------------


def scripted_trainer(run_dir, scores, hook, max_steps, **overrides):
    """A trainer that evaluates after every step; the metric at step s is scores[s]."""
    settings = dict(batch_size=4, max_steps=max_steps, learning_rate=1e-3, warmup_steps=1, progress=False,
                    tensorboard=False, eval_every=1, log_every=1)
    config = TrainConfig(**{**settings, **overrides})
    holder = {}
    trainer = Trainer(tiny_model(), config, run_dir, SyntheticBatches(), PretrainingObjective(),
                      evaluate=lambda model: {"score": scores[holder["trainer"].step], "other": 1.0},
                      hooks=[hook], evaluate_at_start=False)
    holder["trainer"] = trainer
    return trainer


def test_keep_best_saves_only_improvements(tmp_path, monkeypatch):
    from bertforge.train.hooks import KeepBest

    scores = {1: 0.5, 2: 0.4, 3: 0.7, 4: 0.7, 5: 0.6}  # step 4 ties step 3: not an improvement
    hook = KeepBest(tmp_path / "best", "score")
    saved_at, weights_at = [], {}
    original_save = KeepBest.save

    def recording_save(self, trainer):
        saved_at.append(trainer.step)
        weights_at[trainer.step] = {k: v.clone() for k, v in trainer.bare_model.state_dict().items()}
        original_save(self, trainer)

    monkeypatch.setattr(KeepBest, "save", recording_save)
    result = scripted_trainer(tmp_path / "run", scores, hook, 5).fit()
    assert saved_at == [1, 3] and hook.best_step == 3 and hook.best == 0.7 and hook.stale == 2
    assert hook.best_metrics == {"score": 0.7, "other": 1.0} and not result.stopped_early and result.step == 5
    best = BertForPreTraining.from_pretrained(tmp_path / "best")
    for name, tensor in best.state_dict().items():
        assert torch.equal(tensor, weights_at[3][name]), name
    assert (tmp_path / "best" / "config.json").exists()
    assert not list(tmp_path.glob(".best*"))  # the temporary directory was renamed into place


def test_keep_best_patience_stops_and_min_mode(tmp_path):
    from bertforge.train.hooks import KeepBest

    scores = {1: 0.5, 2: 0.6, 3: 0.55, 4: 0.58, 5: 0.9, 6: 0.9}
    hook = KeepBest(tmp_path / "best", "score", patience=2)
    result = scripted_trainer(tmp_path / "run", scores, hook, 6).fit()
    assert result.stopped_early and result.step == 4 and hook.best_step == 2 and hook.stale == 2
    assert latest_checkpoint(tmp_path / "run").name == "step-4"  # the stop is saved like an end
    losses = KeepBest(tmp_path / "low", "score", mode="min", patience=1)
    result = scripted_trainer(tmp_path / "run-min", {1: 0.5, 2: 0.3, 3: 0.4, 4: 0.1}, losses, 4).fit()
    assert result.stopped_early and result.step == 3 and losses.best_step == 2 and losses.best == 0.3
    with pytest.raises(BertforgeError, match="keep-best metric 'accuracy' is not among"):
        scripted_trainer(tmp_path / "run-bad", scores, KeepBest(tmp_path / "x", "accuracy"), 2).fit()


def test_keep_best_state_survives_resume(tmp_path):
    """Patience counts across a resume: evaluations stale before the crash still count after it,
    so the resumed run stops at the same step, with the same best, as the uninterrupted one."""
    import shutil

    from bertforge.train.hooks import KeepBest

    scores = {1: 0.5, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.6, 6: 0.95}
    straight = KeepBest(tmp_path / "straight-best", "score", patience=3)
    straight_result = scripted_trainer(tmp_path / "straight", scores, straight, 6).fit()
    assert straight_result.stopped_early and straight_result.step == 5 and straight.best_step == 2

    first = KeepBest(tmp_path / "best", "score", patience=3)
    scripted_trainer(tmp_path / "run", scores, first, 6, save_every=1, keep_last=10).fit()
    for path in checkpoint_dirs(tmp_path / "run"):
        if path.name != "step-3":
            shutil.rmtree(path)  # as if the run died after step 3
    resumed = KeepBest(tmp_path / "best", "score", patience=3)
    trainer = scripted_trainer(tmp_path / "run", scores, resumed, 6, resume=True)
    assert trainer.maybe_resume()
    assert resumed.state_dict() == {"metric": "score", "best": 0.9, "best_step": 2,
                                    "best_metrics": {"score": 0.9, "other": 1.0}, "stale": 1}
    result = trainer.fit()  # resumes again from the same checkpoint: the same state
    assert result.step == 5 and result.stopped_early and resumed.state_dict() == straight.state_dict()
    with pytest.raises(BertforgeError, match="kept the best on 'score', this run on 'other'"):
        scripted_trainer(tmp_path / "run", scores, KeepBest(tmp_path / "best", "other"), 6, resume=True).fit()


def test_objective_module_trains_and_resumes_bit_exact(tmp_path):
    """An objective's own parameters (trainable_module) are optimized, clipped with the model's
    and checkpointed: a resumed run ends with the same weights, for model and module alike."""
    import shutil

    class WithProjection(PretrainingObjective):
        def __init__(self):
            torch.manual_seed(1)
            self.trainable_module = torch.nn.Linear(16, 8)  # SyntheticBatches' rows have 16 tokens

        def counts(self, batch):
            return {**super().counts(batch), "aux": float(batch["input_ids"].shape[0])}

        def losses(self, model, batch):
            # Coupled to the model's step only through the gradient clipping over both.
            features = batch["input_ids"].float() / 64
            return {**super().losses(model, batch), "aux": (self.trainable_module(features) - 1).pow(2).mean()}

    def run(run_dir, resume=False, save_every=0):
        config = TrainConfig(batch_size=4, max_steps=6, learning_rate=1e-3, warmup_steps=1, progress=False,
                             tensorboard=False, resume=resume, save_every=save_every, keep_last=10)
        objective = WithProjection()
        Trainer(tiny_model(), config, run_dir, SyntheticBatches(), objective).fit()
        return objective.trainable_module

    start = WithProjection().trainable_module.weight.detach().clone()
    straight = run(tmp_path / "straight")
    assert not torch.equal(straight.weight, start)  # it trained
    run(tmp_path / "resumed", save_every=3)
    for path in checkpoint_dirs(tmp_path / "resumed"):
        if path.name != "step-3":
            shutil.rmtree(path)
    resumed = run(tmp_path / "resumed", resume=True)
    torch.testing.assert_close(resumed.weight, straight.weight, rtol=0, atol=0)
    a = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "straight"))
    b = BertForPreTraining.from_pretrained(latest_checkpoint(tmp_path / "resumed"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    config = TrainConfig(batch_size=4, max_steps=8, progress=False, tensorboard=False, resume=True)
    Trainer(tiny_model(), config, tmp_path / "other", SyntheticBatches(), PretrainingObjective()).fit()
    with pytest.raises(BertforgeError, match="no state for the objective's own parameters"):
        Trainer(tiny_model(), config, tmp_path / "other", SyntheticBatches(), WithProjection()).fit()
