"""Parity with transformers' BERT in both directions: outputs, losses and gradients to 1e-5."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.convert import to_hf_state_dict
from bertforge.model import BertForMaskedLM, BertForPreTraining, BertModel

transformers = pytest.importorskip("transformers")

SHAPES = [
    dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    dict(hidden_size=96, num_hidden_layers=1, num_attention_heads=3, intermediate_size=200, type_vocab_size=1),
    dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, hidden_act="gelu_new"),
]
ATOL = 1e-5


def make_batch(config: BertConfig, generator: torch.Generator, batch: int = 3, seq_len: int = 17):
    input_ids = torch.randint(5, config.vocab_size, (batch, seq_len), generator=generator)
    attention_mask = torch.ones(batch, seq_len, dtype=torch.long)
    attention_mask[1, 11:] = 0  # padding in one row, full length in the others
    attention_mask[2, 5:] = 0
    input_ids[attention_mask == 0] = config.pad_token_id
    token_type_ids = torch.zeros_like(input_ids)
    if config.type_vocab_size > 1:
        token_type_ids[:, seq_len // 2:] = 1
        token_type_ids[attention_mask == 0] = 0
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    chosen = (torch.rand(batch, seq_len, generator=generator) < 0.3) & (attention_mask == 1)
    chosen[0, 1] = True
    labels[chosen] = input_ids[chosen]
    next_sentence_label = torch.tensor([0, 1, 1])
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids), labels, next_sentence_label


def hf_config(config: BertConfig):
    return transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "bertforge"})


def grads_as_hf(model) -> dict[str, torch.Tensor]:
    grads = copy.deepcopy(model)
    for (name, param), (_, grad_holder) in zip(model.named_parameters(), grads.named_parameters()):
        grad_holder.data = param.grad.detach().clone()
    return to_hf_state_dict(grads)


@pytest.mark.parametrize("shape", SHAPES, ids=["tiny", "odd-h96-3heads-1layer-1type", "gelu_new"])
@pytest.mark.parametrize("fused_qkv", [True, False])
@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_pretraining_parity(tmp_path, shape, fused_qkv, direction):
    config = BertConfig(vocab_size=211, max_position_embeddings=64, fused_qkv=fused_qkv,
                        sparse_prediction=False, **shape)
    torch.manual_seed(0)
    if direction == "hf_to_ours":
        theirs = transformers.BertForPreTraining(hf_config(config))
        theirs.save_pretrained(tmp_path)
        ours = BertForPreTraining.from_pretrained(tmp_path, sparse_prediction=False, fused_qkv=fused_qkv)
    else:
        ours = BertForPreTraining(config)
        ours.save_pretrained(tmp_path)
        theirs = transformers.BertForPreTraining.from_pretrained(tmp_path)
    ours.eval(), theirs.eval()
    generator = torch.Generator().manual_seed(1)
    batch, labels, nsp = make_batch(config, generator)

    mine = ours(**batch, labels=labels, next_sentence_label=nsp, output_hidden_states=True)
    ref = theirs(**batch, labels=labels, next_sentence_label=nsp, output_hidden_states=True)
    valid = batch["attention_mask"].bool()
    for layer, (a, b) in enumerate(zip(mine.hidden_states, ref.hidden_states)):
        torch.testing.assert_close(a[valid], b[valid], atol=ATOL, rtol=0, msg=f"hidden state {layer}")
    torch.testing.assert_close(mine.mlm_logits[valid], ref.prediction_logits[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.nsp_logits, ref.seq_relationship_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.loss, ref.loss, atol=ATOL, rtol=0)

    mine.loss.backward()
    ref.loss.backward()
    reference_grads = {name: param.grad for name, param in theirs.named_parameters() if param.grad is not None}
    our_grads = grads_as_hf(ours)
    assert set(our_grads) - {"cls.predictions.bias"} <= set(reference_grads) | {"cls.predictions.bias"}
    for name, grad in our_grads.items():
        reference = reference_grads.get(name)
        if reference is None and name == "cls.predictions.bias":
            reference = theirs.cls.predictions.decoder.bias.grad
        torch.testing.assert_close(grad, reference, atol=ATOL, rtol=1e-4, msg=f"gradient of {name}")


def test_sparse_prediction_matches_dense():
    config = BertConfig.from_preset("tiny", vocab_size=97, max_position_embeddings=64)
    torch.manual_seed(0)
    sparse = BertForPreTraining(config).eval()
    dense = BertForPreTraining(config.replace(sparse_prediction=False)).eval()
    dense.load_state_dict(sparse.state_dict())
    batch, labels, nsp = make_batch(config, torch.Generator().manual_seed(3))
    a = sparse(**batch, labels=labels, next_sentence_label=nsp)
    b = dense(**batch, labels=labels, next_sentence_label=nsp)
    chosen = labels != IGNORE_INDEX
    assert a.mlm_logits.shape == (int(chosen.sum()), config.vocab_size)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits[chosen], atol=1e-6, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.mlm_labels, labels[chosen])


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM"])
def test_other_architectures_round_trip(tmp_path, cls_name):
    ours_cls = {"BertModel": BertModel, "BertForMaskedLM": BertForMaskedLM}[cls_name]
    config = BertConfig.from_preset("tiny", vocab_size=150, max_position_embeddings=64, sparse_prediction=False)
    ours = ours_cls(config).eval()
    ours.save_pretrained(tmp_path)
    theirs = getattr(transformers, cls_name).from_pretrained(tmp_path).eval()
    batch, labels, _ = make_batch(config, torch.Generator().manual_seed(2))
    valid = batch["attention_mask"].bool()
    if cls_name == "BertModel":
        a, b = ours(**batch), theirs(**batch)
        torch.testing.assert_close(a.last_hidden_state[valid], b.last_hidden_state[valid], atol=ATOL, rtol=0)
        torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=ATOL, rtol=0)
    else:
        a, b = ours(**batch, labels=labels), theirs(**batch, labels=labels)
        torch.testing.assert_close(a.mlm_logits[valid], b.logits[valid], atol=ATOL, rtol=0)
        torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)


def test_attention_probabilities_match_sdpa_path():
    config = BertConfig.from_preset("tiny", vocab_size=80, max_position_embeddings=64)
    model = BertModel(config).eval()
    batch, _, _ = make_batch(config, torch.Generator().manual_seed(4))
    plain = model(**batch)
    explained = model(**batch, output_attentions=True)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(plain.last_hidden_state[valid], explained.last_hidden_state[valid], atol=1e-5, rtol=0)
    assert len(explained.attentions) == config.num_hidden_layers
    probs = explained.attentions[0]
    assert probs.shape == (3, config.num_attention_heads, 17, 17)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
    assert float(probs[1, :, :, 11:].abs().max()) == 0.0  # padding keys get no attention


def test_init_follows_bert():
    config = BertConfig.from_preset("mini", vocab_size=3000)
    model = BertForPreTraining(config)
    weight = model.bert.encoder.layers[0].feed_forward.intermediate.weight
    assert abs(float(weight.std()) - 0.02) < 0.002
    assert float(model.bert.encoder.layers[0].feed_forward.intermediate.bias.abs().max()) == 0.0
    assert float(model.bert.embeddings.layer_norm.weight.min()) == 1.0
    assert float(model.bert.embeddings.word_embeddings.weight[config.pad_token_id].abs().max()) == 0.0
    from bertforge.config import count_parameters
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)
