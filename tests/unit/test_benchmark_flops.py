"""The benchmarks' model-FLOPs formula (benchmarks/common.py) against torch's FLOP counter.

MFU in BENCHMARKS.md divides these counts by time; if the formula drifted from what the model
computes, every MFU figure would be wrong without a test noticing.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import forward_flops
from bertforge.config import BertConfig
from bertforge.model.bert import set_fast_paths
from bertforge.tasks.classify import BertForSequenceClassification


def counted_flops(model: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """FLOPs of the matrix products torch's counter sees (it has no formula for the CPU attention
    kernel, so attention is left out of both sides of the comparisons below)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(input_ids, attention_mask=torch.ones_like(input_ids))
    return counter.get_total_flops()


def test_classifier_flops_match_the_counted_matrix_products() -> None:
    config = BertConfig.from_preset("tiny", vocab_size=199, max_position_embeddings=64,
                                    id2label={0: "a", 1: "b", 2: "c"})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    # Rows of one length: no padding anywhere, so every counted product is one the formula means.
    input_ids = torch.randint(5, config.vocab_size, (3, 17))
    lengths = [17, 17, 17]
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    formula = forward_flops(config, lengths, heads="classifier", num_labels=3)
    # The formula's attention terms: every query row in the full layers, the [CLS] row in the last.
    attention = 2 * 2 * hidden * ((layers - 1) * sum(n * n for n in lengths) + sum(lengths))
    others = sum(lengths) - len(lengths)  # tokens that are not [CLS]

    # The fast path runs the last layer at [CLS] only (keys and values from every token).
    assert counted_flops(model, input_ids) == formula - attention

    # The plain path runs the last layer everywhere: its query, output projection and FFN
    # for every other token too.
    set_fast_paths(model, enabled=False)
    extra = 2 * others * (2 * hidden * hidden + 2 * hidden * inter)
    assert counted_flops(model, input_ids) == formula - attention + extra
