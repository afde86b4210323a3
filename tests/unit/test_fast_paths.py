"""Every fast path against the plain path: same outputs and same gradients.

fp32: 1e-5 absolute on outputs and losses, 1e-5 absolute + 1e-4 relative on gradients.
bf16 autocast (stated tolerance): against the fp32 plain path, the fast path's losses are within
2% and its hidden states within 0.1 absolute (BERT hidden states are LayerNorm outputs of
order 1), and it is never further from fp32 than the plain path under the same autocast is,
beyond 2x; its gradients point the same way (cosine > 0.99).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.convert import from_hf_state_dict, to_hf_state_dict
from bertforge.model import BertForMaskedLM, BertForPreTraining, BertModel
from bertforge.model import unpad
from bertforge.model.bert import set_fast_paths
from bertforge.model.unpad import TokenLayout

ATOL = 1e-5
GRAD_TOL = dict(atol=1e-5, rtol=1e-4)


def tiny(**changes) -> BertConfig:
    return BertConfig.from_preset("tiny", vocab_size=199, max_position_embeddings=64, **changes)


def make_batch(config: BertConfig, seed: int = 0, batch: int = 4, seq_len: int = 19, holes: bool = False):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, config.vocab_size, (batch, seq_len), generator=generator)
    attention_mask = torch.ones(batch, seq_len, dtype=torch.long)
    attention_mask[1, 12:] = 0  # right padding
    attention_mask[2, 4:] = 0
    if holes:
        attention_mask[3, 1:3] = 0  # padding inside a row: the layout must not assume a prefix
        attention_mask[0, 15:] = 0
    input_ids[attention_mask == 0] = config.pad_token_id
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq_len // 2:] = 1
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    chosen = (torch.rand(batch, seq_len, generator=generator) < 0.3) & (attention_mask == 1)
    chosen[:, 0] = False
    chosen[0, 1] = True
    labels[chosen] = input_ids[chosen]
    inputs = dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    return inputs, labels, torch.tensor([0, 1, 1, 0])[:batch]


def twins(cls, config: BertConfig, seed: int = 0):
    """Two copies of a model with the same weights (eval mode: no dropout)."""
    torch.manual_seed(seed)
    fast = cls(config).eval()
    plain = copy.deepcopy(fast)
    return fast, plain


def set_plain(model) -> None:
    """Every attribute fast path off (sparse prediction is a config field, set by the caller)."""
    set_fast_paths(model, False)
    bert = model if isinstance(model, BertModel) else model.bert
    assert not bert.unpad_inputs and not getattr(model, "sparse_last_layer", False)


def grads(model) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **GRAD_TOL, msg=f"gradient of {name}")


# -- the token layout ----------------------------------------------------------------------------


def test_layout_round_trips_any_padding_pattern():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 0]])
    layout = TokenLayout.from_mask(mask, 4, 5, torch.device("cpu"))
    assert layout.num_tokens == 14 and layout.max_len == 4
    values = torch.arange(20.0).view(4, 5, 1)
    tokens = layout.gather(values)
    expected = [v for v, m in zip(values.flatten().tolist(), mask.flatten().tolist()) if m]
    assert tokens.squeeze(1).tolist() == expected
    assert layout.positions(torch.device("cpu")).tolist() == [i % 5 for i in mask.flatten().nonzero().flatten().tolist()]
    padded = layout.pad(tokens)
    assert torch.equal(padded.squeeze(-1), values.squeeze(-1) * mask)
    (grid,) = layout.to_grids(tokens)  # (B, L, 1): each row's tokens left-aligned
    assert grid.squeeze(-1).tolist() == [[0, 1, 2, 0], [6, 7, 8, 9], [10, 12, 14, 0], [15, 16, 17, 18]]
    assert layout.grids[0].mask[:, 0, 0].tolist() == [[True, True, True, False], [True] * 4,
                                                      [True, True, True, False], [True] * 4]
    assert torch.equal(layout.from_grids([grid]), tokens)
    assert layout.cu_seqlens.tolist() == [0, 3, 7, 10, 14]
    wanted = torch.zeros(4, 5, dtype=torch.bool)
    wanted[1, 3] = wanted[2, 4] = wanted[0, 0] = True
    assert tokens[layout.select(wanted)].squeeze(1).tolist() == [0, 8, 14]


def test_layout_without_padding_is_a_reshape():
    layout = TokenLayout.from_mask(torch.ones(2, 3, dtype=torch.long), 2, 3, torch.device("cpu"))
    assert layout.indices is None and layout.grids[0].mask is None and layout.max_len == 3
    values = torch.randn(2, 3, 4)
    assert torch.equal(layout.pad(layout.gather(values)), values)


def few_rows_per_bucket(monkeypatch) -> None:
    monkeypatch.setattr(unpad, "BUCKET_MIN_ROWS", 2)


def test_buckets_group_rows_by_length(monkeypatch):
    few_rows_per_bucket(monkeypatch)
    assert unpad.plan_buckets([10, 10, 10, 10]) is None  # equal lengths: one grid
    assert unpad.plan_buckets([30, 5, 29, 4, 28, 6]) == [[0, 2, 4], [5, 1, 3]]
    mask = torch.zeros(6, 30, dtype=torch.long)
    for row, length in enumerate([30, 5, 29, 4, 28, 6]):
        mask[row, :length] = 1
    layout = TokenLayout.from_mask(mask, 6, 30, torch.device("cpu"))
    assert [(grid.rows, grid.max_len) for grid in layout.grids] == [(3, 30), (3, 6)]
    values = torch.arange(180.0).view(6, 30, 1)
    tokens = layout.gather(values).requires_grad_()
    grids = layout.to_grids(tokens)
    assert grids[1][:, :, 0].tolist() == [[150, 151, 152, 153, 154, 155], [30, 31, 32, 33, 34, 0],
                                          [90, 91, 92, 93, 0, 0]]
    back = layout.from_grids([g * 2 for g in grids])
    assert torch.equal(back, tokens * 2)
    back.backward(torch.ones_like(back))
    assert torch.equal(tokens.grad, torch.full_like(tokens, 2.0))


# -- unpadded encoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("fused_qkv", [True, False])
def test_unpadded_encoder_matches_padded(fused_qkv):
    config = tiny(fused_qkv=fused_qkv)
    fast, plain = twins(BertModel, config)
    plain.unpad_inputs = False
    inputs, _, _ = make_batch(config, holes=True)
    a = fast(**inputs, output_hidden_states=True)
    b = plain(**inputs, output_hidden_states=True)
    valid = inputs["attention_mask"].bool()
    for layer, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        torch.testing.assert_close(x[valid], y[valid], atol=ATOL, rtol=0, msg=f"hidden state {layer}")
    assert float(a.last_hidden_state.detach()[~valid].abs().max()) == 0.0  # padding comes out as zeros
    # The loss reads real positions only, as every loss does; the gradients must agree.
    weights = torch.randn(a.last_hidden_state.shape, generator=torch.Generator().manual_seed(5)) * valid[..., None]
    (a.last_hidden_state * weights).sum().backward()
    (b.last_hidden_state * weights).sum().backward()
    assert_same_grads(grads(fast), grads(plain))


def test_unpadded_batch_without_padding():
    config = tiny()
    fast, plain = twins(BertModel, config)
    plain.unpad_inputs = False
    inputs, _, _ = make_batch(config)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    for mask in (inputs["attention_mask"], None):
        a = fast(inputs["input_ids"], inputs["token_type_ids"], mask)
        b = plain(inputs["input_ids"], inputs["token_type_ids"], mask)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=ATOL, rtol=0)


def test_bucketed_attention_matches_padded(monkeypatch):
    few_rows_per_bucket(monkeypatch)
    config = tiny()
    fast, plain = twins(BertModel, config)
    plain.unpad_inputs = False
    inputs, _, _ = make_batch(config, batch=4, seq_len=19)
    inputs["attention_mask"][1, 6:] = 0  # lengths 19, 6, 4, 19: two grids
    inputs["attention_mask"][3, 0] = 0  # and a hole
    valid = inputs["attention_mask"].bool()
    layout = fast.layout(inputs["input_ids"], inputs["attention_mask"])
    assert len(layout.grids) == 2
    a = fast(**inputs).last_hidden_state
    b = plain(**inputs).last_hidden_state
    torch.testing.assert_close(a[valid], b[valid], atol=ATOL, rtol=0)
    weights = torch.randn(a.shape, generator=torch.Generator().manual_seed(5)) * valid[..., None]
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert_same_grads(grads(fast), grads(plain))


@pytest.mark.parametrize("sparse_prediction", [True, False])
def test_unpadded_pretraining_matches_padded(sparse_prediction):
    config = tiny(sparse_prediction=sparse_prediction)
    fast, plain = twins(BertForPreTraining, config)
    fast.sparse_last_layer = plain.sparse_last_layer = False
    plain.bert.unpad_inputs = False
    inputs, labels, nsp = make_batch(config)
    a = fast(**inputs, labels=labels, next_sentence_label=nsp)
    b = plain(**inputs, labels=labels, next_sentence_label=nsp)
    valid = inputs["attention_mask"].bool() if not sparse_prediction else slice(None)
    torch.testing.assert_close(a.mlm_logits[valid], b.mlm_logits[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(a.nsp_logits, b.nsp_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(fast), grads(plain))


@pytest.mark.parametrize("add_pooler", [True, False])
@pytest.mark.parametrize("holes", [False, True])
def test_encoder_returns_only_the_wanted_positions(add_pooler, holes):
    """BertModel(wanted=...): the last hidden state at the wanted positions only, (K, H) in
    row-major order, and the pooled [CLS], as the plain path's full output gives them; with
    `every_position` the full (B, T, H) comes back instead."""
    config = tiny()
    torch.manual_seed(0)
    fast = BertModel(config, add_pooler=add_pooler).eval()
    plain = copy.deepcopy(fast)
    set_plain(plain)
    inputs, labels, _ = make_batch(config, seed=8, holes=holes)
    wanted = labels != IGNORE_INDEX
    wanted[2, 0] = True  # a [CLS] position asked for as well
    a = fast(**inputs, wanted=wanted)
    b = plain(**inputs)
    assert a.last_hidden_state.shape == (int(wanted.sum()), config.hidden_size)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state[wanted], atol=ATOL, rtol=0)
    if add_pooler:
        torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=ATOL, rtol=0)
        weights = torch.randn(b.pooler_output.shape, generator=torch.Generator().manual_seed(3))
        (a.last_hidden_state.sum() + (a.pooler_output * weights).sum()).backward()
        (b.last_hidden_state[wanted].sum() + (b.pooler_output * weights).sum()).backward()
    else:
        assert a.pooler_output is None
        a.last_hidden_state.sum().backward()
        b.last_hidden_state[wanted].sum().backward()
    assert_same_grads(grads(fast), grads(plain))
    with torch.no_grad():
        nothing = fast(**inputs, wanted=torch.zeros_like(wanted))
        assert nothing.last_hidden_state.shape == (0, config.hidden_size)
        every = fast(**inputs, wanted=wanted, every_position=True)
        valid = inputs["attention_mask"].bool()
        torch.testing.assert_close(every.last_hidden_state[valid], b.last_hidden_state.detach()[valid],
                                   atol=ATOL, rtol=0)
        # A wanted padded position: only the padded path computes it, so that path runs.
        on_padding = wanted.clone()
        on_padding[1, 15] = True
        torch.testing.assert_close(fast(**inputs, wanted=on_padding).last_hidden_state,
                                   b.last_hidden_state.detach()[on_padding], atol=ATOL, rtol=0)


# -- sparse masked-LM prediction and the sparse last layer ----------------------------------------------


def test_sparse_prediction_matches_dense_with_gradients():
    config = tiny()
    sparse, dense = twins(BertForPreTraining, config)
    dense.config = config.replace(sparse_prediction=False)
    for model in (sparse, dense):
        set_plain(model)
    inputs, labels, nsp = make_batch(config, seed=1)
    a = sparse(**inputs, labels=labels, next_sentence_label=nsp)
    b = dense(**inputs, labels=labels, next_sentence_label=nsp)
    chosen = labels != IGNORE_INDEX
    assert a.mlm_logits.shape == (int(chosen.sum()), config.vocab_size)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits[chosen], atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(sparse), grads(dense))


@pytest.mark.parametrize("cls", [BertForPreTraining, BertForMaskedLM])
@pytest.mark.parametrize("holes", [False, True])
def test_sparse_last_layer_matches_full_last_layer(cls, holes):
    config = tiny()
    fast, full = twins(cls, config)
    full.sparse_last_layer = False
    inputs, labels, nsp = make_batch(config, seed=2, holes=holes)
    a = fast(**inputs, labels=labels, next_sentence_label=nsp)
    b = full(**inputs, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.mlm_labels, b.mlm_labels)
    if cls is BertForPreTraining:
        torch.testing.assert_close(a.nsp_logits, b.nsp_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(fast), grads(full))


@pytest.mark.parametrize("fused_qkv", [True, False])
def test_sparse_last_layer_with_several_grids_and_uneven_queries(fused_qkv):
    """Rows grouped into several attention grids, some with many masked tokens, some with one,
    one grid's rows with none at all: only the kept rows attend in the last layer, with the
    outputs and gradients of the full last layer."""
    config = tiny(fused_qkv=fused_qkv)
    fast, full = twins(BertForMaskedLM, config)
    full.sparse_last_layer = False
    generator = torch.Generator().manual_seed(5)
    lengths = torch.cat([torch.full((16,), 60), torch.full((16,), 30), torch.full((16,), 8)])
    input_ids = torch.randint(5, config.vocab_size, (48, 64), generator=generator)
    attention_mask = (torch.arange(64)[None] < lengths[:, None]).long()
    chosen = (torch.rand(48, 64, generator=generator) < 0.3) & attention_mask.bool()
    chosen[32:] = False  # the shortest grid keeps no token
    chosen[20, :] = False
    chosen[20, 5] = True  # one row of the middle grid keeps a single token
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    layout = fast.bert.layout(input_ids, attention_mask)
    assert len(layout.grids) == 3
    queries = layout.queries(layout.select(chosen))
    assert [grid.max_len for grid in queries.grids][2] == 1 and queries.grids[2].tokens.numel() == 0
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    a, b = fast(**inputs), full(**inputs)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(fast), grads(full))


def test_all_fast_paths_against_plain_path_in_training_mode_without_dropout():
    config = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fast, plain = twins(BertForPreTraining, config)
    fast.train(), plain.train()
    set_plain(plain)
    plain.config = config.replace(sparse_prediction=False)
    inputs, labels, nsp = make_batch(config, seed=3)
    a = fast(**inputs, labels=labels, next_sentence_label=nsp)
    b = plain(**inputs, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits[labels != IGNORE_INDEX], atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(fast), grads(plain))


def test_labels_on_padding_fall_back_to_the_padded_path():
    config = tiny()
    fast, plain = twins(BertForPreTraining, config)
    set_plain(plain)
    inputs, labels, nsp = make_batch(config)
    labels[1, 15] = 7  # a label on a padded position: only the padded path computes it
    a = fast(**inputs, labels=labels, next_sentence_label=nsp)
    b = plain(**inputs, labels=labels, next_sentence_label=nsp)
    assert a.mlm_logits.shape == b.mlm_logits.shape
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)


# -- fused QKV -------------------------------------------------------------------------------------


def test_fused_qkv_matches_separate_projections():
    config = tiny()
    fused = BertForPreTraining(config).eval()
    separate = BertForPreTraining(config.replace(fused_qkv=False)).eval()
    from_hf_state_dict(separate, to_hf_state_dict(fused))
    for model in (fused, separate):
        set_plain(model)
    inputs, labels, nsp = make_batch(config, seed=4)
    a = fused(**inputs, labels=labels, next_sentence_label=nsp)
    b = separate(**inputs, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()

    def hf_grads(model):
        holder = copy.deepcopy(model)
        for param, twin in zip(model.parameters(), holder.parameters()):
            twin.data = param.grad.clone()
        return to_hf_state_dict(holder)

    assert_same_grads(hf_grads(fused), hf_grads(separate))


# -- varlen attention (the CUDA kernel's plumbing, with a reference kernel on CPU) ----------------------


def reference_varlen(q, k, v, layout):
    out = torch.empty_like(q)
    bounds = layout.cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            # (n, heads, D) -> (heads, n, D) for SDPA, within this sequence only
            out[start:end] = F.scaled_dot_product_attention(
                q[start:end].transpose(0, 1), k[start:end].transpose(0, 1), v[start:end].transpose(0, 1)
            ).transpose(0, 1)
    return out


def test_varlen_attention_plumbing(monkeypatch):
    config = tiny()
    fast, plain = twins(BertModel, config)
    plain.unpad_inputs = False
    monkeypatch.setattr("bertforge.model.layers.varlen_attention_available", lambda q, p: True)
    monkeypatch.setattr("bertforge.model.layers.varlen_attention", reference_varlen)
    inputs, _, _ = make_batch(config, holes=True)
    a = fast(**inputs).last_hidden_state
    b = plain(**inputs).last_hidden_state
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(a[valid], b[valid], atol=ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (flash varlen attention)")
def test_varlen_flash_attention_on_cuda():
    config = tiny(hidden_size=128, num_attention_heads=2)
    fast, plain = twins(BertModel, config)
    fast.cuda(), plain.cuda()
    plain.unpad_inputs = False
    inputs, _, _ = make_batch(config, holes=True)
    inputs = {k: v.cuda() for k, v in inputs.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert unpad.varlen_attention_available(torch.zeros(1, device="cuda", dtype=torch.bfloat16), 0.0)
        a = fast(**inputs).last_hidden_state.float()
        b = plain(**inputs).last_hidden_state.float()
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(a[valid], b[valid], atol=5e-2, rtol=0)


# -- bf16 autocast -----------------------------------------------------------------------------------


def test_bf16_autocast_fast_path_stays_close_to_fp32():
    config = tiny(num_hidden_layers=3)
    fast, plain = twins(BertForPreTraining, config)
    set_plain(plain)
    plain.config = config.replace(sparse_prediction=False)
    reference = copy.deepcopy(plain)
    inputs, labels, nsp = make_batch(config, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = fast(**inputs, labels=labels, next_sentence_label=nsp, output_hidden_states=True)
        b = plain(**inputs, labels=labels, next_sentence_label=nsp, output_hidden_states=True)
    c = reference(**inputs, labels=labels, next_sentence_label=nsp, output_hidden_states=True)
    valid = inputs["attention_mask"].bool()
    # The residual stream and every LayerNorm stay fp32 under autocast.
    assert all(h.dtype == torch.float32 for h in a.hidden_states)
    for x, y, z in zip(a.hidden_states, b.hidden_states, c.hidden_states):
        fast_error = float((x[valid] - z[valid]).abs().max())
        plain_error = float((y[valid] - z[valid]).abs().max())
        assert fast_error < 0.1
        assert fast_error <= 2 * plain_error + 1e-3
    assert abs(float(a.loss) - float(c.loss)) < 0.02 * float(c.loss)
    a.loss.backward()
    c.loss.backward()
    for (name, x), y in zip(grads(fast).items(), grads(reference).values()):
        cosine = F.cosine_similarity(x.flatten().double(), y.flatten().double(), dim=0)
        assert cosine > 0.99, f"gradient of {name}: cosine {float(cosine):.4f}"


def test_mlm_head_layer_norm_runs_in_fp32_under_autocast():
    config = tiny()
    model = BertForMaskedLM(config).eval()
    seen = []
    model.mlm.layer_norm.register_forward_hook(lambda module, args, output: seen.append((args[0].dtype, output.dtype)))
    inputs, labels, _ = make_batch(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(**inputs, labels=labels)
    assert seen == [(torch.float32, torch.float32)]


# -- torch.compile ------------------------------------------------------------------------------------


def check_compiled_against_eager(backend: str) -> None:
    from torch._dynamo.utils import counters

    from bertforge.model.compiled import compile_encoder

    torch._dynamo.reset()
    counters.clear()
    config = tiny()
    fast, eager = twins(BertForPreTraining, config)
    compile_encoder(fast, backend=backend)
    names = [name for name, _ in fast.named_parameters()]
    assert names == [name for name, _ in eager.named_parameters()]  # checkpoints keep their keys
    for seed in (0, 7):  # two batches of different token counts: the dynamic token dimension
        inputs, labels, nsp = make_batch(config, seed=seed)
        inputs["attention_mask"][3, 10 + seed:] = 0
        labels[3, 10 + seed:] = IGNORE_INDEX
        a = fast(**inputs, labels=labels, next_sentence_label=nsp)
        b = eager(**inputs, labels=labels, next_sentence_label=nsp)
        torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
        fast.zero_grad(), eager.zero_grad()
        a.loss.backward()
        b.loss.backward()
        assert_same_grads(grads(fast), grads(eager))
    # One graph per layer kind (all layers, and the last layer with `keep`); no graph breaks.
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= 3
    torch._dynamo.reset()


def test_compiled_layers_capture_whole_and_match_eager():
    """Dynamo's capture and the compiled autograd graph (aot_eager: no code generation, so fast)."""
    check_compiled_against_eager("aot_eager")


def test_compiled_layers_with_several_grids_train_like_eager():
    """Rows of very different lengths (several attention grids) through compiled training steps:
    the grid scatter and gather run eagerly between the compiled parts, with the same gradients.
    (Dynamo failed inside the grids' autograd.Function when it traced them.)"""
    from bertforge.model.compiled import compile_encoder

    torch._dynamo.reset()
    config = tiny()
    fast, eager = twins(BertForPreTraining, config)
    compile_encoder(fast, backend="aot_eager")
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # the grids' sizes change between steps
        input_ids = torch.randint(5, config.vocab_size, (64, 64), generator=generator)
        lengths = torch.randint(4, 65, (64,), generator=generator)
        attention_mask = (torch.arange(64)[None] < lengths[:, None]).long()
        chosen = (torch.rand(64, 64, generator=generator) < 0.15) & attention_mask.bool()
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids),
                      labels=labels, next_sentence_label=torch.zeros(64, dtype=torch.long))
        assert len(fast.bert.layout(input_ids, attention_mask).grids) > 2
        a, b = fast(**inputs), eager(**inputs)
        torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
        fast.zero_grad(), eager.zero_grad()
        a.loss.backward()
        b.loss.backward()
        assert_same_grads(grads(fast), grads(eager))
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compiled_layers_match_eager():
    """Inductor's generated kernels (about 100 s of compiling on 2 shared cores)."""
    pytest.importorskip("torch._inductor")
    check_compiled_against_eager("inductor")


@pytest.mark.parametrize("holes", [False, True])
def test_classifier_computes_the_last_layer_at_cls_only_with_the_same_logits_and_gradients(holes, monkeypatch):
    from bertforge.model.layers import FeedForward
    from bertforge.tasks.classify import BertForSequenceClassification

    config = tiny(id2label={0: "a", 1: "b", 2: "c"})
    fast, full = twins(BertForSequenceClassification, config)
    set_plain(full)
    inputs, _, _ = make_batch(config, seed=4, holes=holes)
    labels = torch.tensor([0, 2, 1, 2])
    rows = []
    original = FeedForward.forward
    monkeypatch.setattr(FeedForward, "forward", lambda self, x: rows.append(x.shape[0]) or original(self, x))
    a = fast(**inputs, labels=labels)
    real_tokens = int(inputs["attention_mask"].sum())
    assert rows == [real_tokens] * (config.num_hidden_layers - 1) + [4]  # the last layer: the 4 [CLS] rows
    b = full(**inputs, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_same_grads(grads(fast), grads(full))
    # Asking for the hidden states, or a left-padded row, takes the full path with the same logits.
    with torch.no_grad():
        every_layer = fast(**inputs, output_hidden_states=True)
        assert len(every_layer.hidden_states) == config.num_hidden_layers + 1
        torch.testing.assert_close(every_layer.logits, b.logits.detach(), atol=ATOL, rtol=0)
        left = {key: value.flip(1) for key, value in inputs.items()}
        torch.testing.assert_close(fast(**left).logits, full(**left).logits, atol=ATOL, rtol=0)
