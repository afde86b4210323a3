"""The pretraining objective and held-out evaluation (masked LM plus NSP/SOP, or masked LM only)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from bertforge.config import IGNORE_INDEX


class PretrainingObjective:
    """Masked-LM cross-entropy averaged over masked tokens, plus NSP (or SOP) over sentences."""

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        counts = {"mlm": int((batch["labels"] != IGNORE_INDEX).sum())}
        if "next_sentence_label" in batch:
            counts["nsp"] = int((batch["next_sentence_label"] != IGNORE_INDEX).sum())
        return counts

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output = model(**batch)
        losses = {"mlm": output.mlm_loss}
        if output.nsp_loss is not None:
            losses["nsp"] = output.nsp_loss
        return losses


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
                         max_batches: int | None = None, baseline_token: int | None = None) -> dict[str, float]:
    """Masked-LM loss, accuracy and perplexity, and NSP accuracy, over held-out batches.

    With `baseline_token`, also `mlm_baseline_accuracy`: the accuracy of always guessing that
    token (the training data's most common one), the level a model reaches before it uses
    any context.
    """
    mlm_loss_sum, mlm_correct, mlm_count, baseline_correct = 0.0, 0, 0, 0
    nsp_correct, nsp_count = 0, 0
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        batch = {key: value.to(device) for key, value in batch.items()}
        output = model(**batch)
        labels = output.mlm_labels
        chosen = labels != IGNORE_INDEX
        count = int(chosen.sum())
        if count:
            logits = output.mlm_logits[chosen].float()
            mlm_loss_sum += float(nn.functional.cross_entropy(logits, labels[chosen], reduction="sum"))
            mlm_correct += int((logits.argmax(-1) == labels[chosen]).sum())
            mlm_count += count
            if baseline_token is not None:
                baseline_correct += int((labels[chosen] == baseline_token).sum())
        if output.nsp_logits is not None and "next_sentence_label" in batch:
            nsp_correct += int((output.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum())
            nsp_count += int(batch["next_sentence_label"].numel())
    metrics = {}
    if mlm_count:
        loss = mlm_loss_sum / mlm_count
        metrics.update(mlm_loss=loss, mlm_accuracy=mlm_correct / mlm_count, perplexity=math.exp(min(loss, 50.0)))
        if baseline_token is not None:
            metrics["mlm_baseline_accuracy"] = baseline_correct / mlm_count
    if nsp_count:
        metrics["nsp_accuracy"] = nsp_correct / nsp_count
    return metrics


def most_common_token(counts, special_ids: Iterable[int]) -> int:
    """The most frequent token id in `counts` that is not a special token ([CLS], [SEP], ...)."""
    counts = torch.as_tensor(counts).clone()
    counts[list(special_ids)] = -1
    return int(counts.argmax())
