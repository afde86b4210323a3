"""Fine-tuning with bertforge's Trainer follows transformers step for step.

With dropout off (the only source of randomness during training), bertforge's task model under
its Trainer (task objective, weight-decay grouping, foreach AdamW, clipping, schedule, unpadded
encoder) and transformers' BertFor* model in a textbook PyTorch loop, from the same weights and
on the same padded batches, must produce the same losses at every step and the same model at
the end. This is the check behind the fine-tuning benchmark: any gap there that is larger than
seed noise would have to come from somewhere this test does not reach.
"""

from __future__ import annotations

import json

import pytest
import torch

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.tasks.classify import BertForSequenceClassification
from bertforge.tasks.finetune import TaskObjective
from bertforge.tasks.ner import BertForTokenClassification
from bertforge.tasks.qa import BertForQuestionAnswering
from bertforge.train import TrainConfig, Trainer
from bertforge.train.schedule import schedule_factor
from test_trainer import ListBatches

transformers = pytest.importorskip("transformers")

VOCAB, BATCH, SEQ, STEPS = 64, 4, 12, 8
LABELS = {0: "A", 1: "B", 2: "C"}


def task_batches(task: str, seed: int = 0) -> ListBatches:
    """Two seeded padded batches (rows of different lengths), cycled so that the loss can fall."""
    generator = torch.Generator().manual_seed(seed)
    distinct = []
    for _ in range(2):
        lengths = torch.randint(4, SEQ + 1, (BATCH,), generator=generator)
        lengths[0] = SEQ  # the longest row sets the padded width, as dynamic padding does
        mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
        ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=generator) * mask
        batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
        if task == "classify":
            batch["labels"] = torch.randint(0, len(LABELS), (BATCH,), generator=generator)
        elif task == "ner":
            labels = torch.randint(0, len(LABELS), (BATCH, SEQ), generator=generator)
            labels[(mask == 0) | (torch.rand(BATCH, SEQ, generator=generator) < 0.3)] = IGNORE_INDEX
            batch["labels"] = labels
        else:
            start = (torch.rand(BATCH, generator=generator) * (lengths - 1)).long()
            batch["start_positions"] = start
            batch["end_positions"] = torch.minimum(start + 2, lengths - 1)
        distinct.append(batch)
    return ListBatches(distinct * (STEPS // 2))


def masked_span_loss(model, batch):
    """transformers' span loss with padding left out of the softmax (bertforge's departure)."""
    inputs = {key: batch[key] for key in ("input_ids", "token_type_ids", "attention_mask")}
    output = model(**inputs)
    padding = batch["attention_mask"] == 0
    losses = [torch.nn.functional.cross_entropy(logits.masked_fill(padding, torch.finfo(logits.dtype).min), target)
              for logits, target in ((output.start_logits, batch["start_positions"]),
                                     (output.end_logits, batch["end_positions"]))]
    return (losses[0] + losses[1]) / 2


MODELS = {"classify": (BertForSequenceClassification, "BertForSequenceClassification"),
          "ner": (BertForTokenClassification, "BertForTokenClassification"),
          "qa": (BertForQuestionAnswering, "BertForQuestionAnswering")}


@pytest.mark.parametrize("task", sorted(MODELS))
def test_trainer_tracks_transformers_plain_loop_without_dropout(tmp_path, task):
    ours_class, their_name = MODELS[task]
    changes = {} if task == "qa" else {"id2label": LABELS}
    if task == "classify":
        changes["problem_type"] = "single_label_classification"
    config = BertConfig.from_preset("tiny", vocab_size=VOCAB, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, **changes)
    torch.manual_seed(0)
    ours = ours_class(config)
    with torch.no_grad():  # a head that passes a real gradient back into the encoder
        for name, parameter in ours.named_parameters():
            if "bert." not in name and parameter.ndim == 2:
                parameter.normal_(0.0, 0.5)
    ours.save_pretrained(tmp_path / "init")
    theirs = getattr(transformers, their_name).from_pretrained(tmp_path / "init").train()

    train_config = TrainConfig(batch_size=BATCH, max_steps=STEPS, learning_rate=1e-3, warmup_steps=2,
                               weight_decay=0.01, epsilon=1e-8, max_grad_norm=0.5, schedule="linear",
                               progress=False, tensorboard=False, log_every=1, eval_every=0, save_every=0)
    Trainer(ours, train_config, tmp_path / "run", task_batches(task), TaskObjective(task)).fit()
    our_losses = [record["loss"] for record in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
                  if record.get("split") == "train"]

    # The textbook loop: BERT's grouping (no decay on biases and LayerNorm), AdamW, clipping.
    named = list(theirs.named_parameters())
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule_factor(step, 2, STEPS, "linear"))
    their_losses = []
    for batch in task_batches(task):
        loss = theirs(**batch).loss if task != "qa" else masked_span_loss(theirs, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        their_losses.append(loss.item())

    assert their_losses[-2] < their_losses[0] - 0.1  # it trained, so the comparison means something
    torch.testing.assert_close(torch.tensor(our_losses), torch.tensor(their_losses), atol=2e-5, rtol=2e-5)
    probe = task_batches(task, seed=1).items[0]
    probe = {key: probe[key] for key in ("input_ids", "token_type_ids", "attention_mask")}
    ours.eval(), theirs.eval()
    with torch.no_grad():
        mine, reference = ours(**probe), theirs(**probe)
    keep = probe["attention_mask"].bool()  # outputs at padding positions are not compared
    for field in ("logits",) if task != "qa" else ("start_logits", "end_logits"):
        got, want = getattr(mine, field), getattr(reference, field)
        if task == "qa":
            # The span softmax is shift-invariant, so the span bias (and the last LayerNorm bias
            # along the head's weights) get gradients that are zero up to rounding, which Adam
            # turns into full-size steps of either sign: compare the logits up to a shift per row.
            got = got - (got * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)
            want = want - (want * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)
        if task != "classify":
            got, want = got[keep], want[keep]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def tiny_ner_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(BertConfig.from_preset(
        "tiny", vocab_size=VOCAB, max_position_embeddings=32, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, id2label=LABELS))


def test_token_objective_weighs_every_labelled_token_the_same():
    """With `labels_per_row`, a step's NER loss is the sum over its labelled tokens divided by the
    count expected for its rows: a token weighs the same in a batch of short and of long rows."""
    model = tiny_ner_model()
    batch = task_batches("ner").items[0]
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    per_row = 2.5
    objective = TaskObjective("ner", labels_per_row=per_row)
    assert objective.counts(batch) == {"ner": BATCH * per_row}
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    summed = torch.nn.functional.cross_entropy(logits.reshape(-1, len(LABELS)), batch["labels"].reshape(-1),
                                               ignore_index=IGNORE_INDEX, reduction="sum")
    torch.testing.assert_close(objective.losses(model, batch)["ner"], summed / (BATCH * per_row))
    assert objective.logged_counts(batch) == {"ner": labelled}
    # Without it (random batches), the per-batch mean over labelled tokens, as transformers computes it.
    plain = TaskObjective("ner")
    assert plain.counts(batch) == {"ner": labelled}
    torch.testing.assert_close(plain.losses(model, batch)["ner"], summed / labelled)


def test_trainer_logs_the_mean_token_loss_under_the_fixed_normalizer(tmp_path):
    model = tiny_ner_model()
    batch = task_batches("ner").items[0]
    expected = float(model(**batch).loss)  # mean over labelled tokens, before any update
    train_config = TrainConfig(batch_size=BATCH, max_steps=1, learning_rate=1e-3, log_every=1, progress=False,
                               tensorboard=False, save_every=0)
    Trainer(model, train_config, tmp_path / "run", ListBatches([batch]), TaskObjective("ner", labels_per_row=0.7)).fit()
    logged = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert logged["loss"] == pytest.approx(expected, rel=1e-5)
