"""BertModel, the base of the models with a head, and the pretraining models.

`BertModel.forward` is the one forward of the encoder. It takes the (B, T) inputs and, optionally,
the positions whose last hidden state the caller reads (`wanted`, a (B, T) boolean mask); it
then returns the last hidden state at those positions only, (K, H) in row-major order, and
picks its path itself:
- the unpadded path (`BertModel.unpad_inputs`, default True): the encoder runs on the real
  tokens only (`bertforge.model.unpad`); outputs at padded positions are zeros;
- with `wanted`, the sparse last layer (`BertModel.sparse_last_layer`, default True): the last
  layer computes its output only at the wanted positions and at [CLS] for the pooler, as
  MosaicBERT does; keys and values still come from every token, so the outputs and their
  gradients are those of the full last layer;
- the plain padded path, which computes every position: when attention probabilities are asked
  for, when unpadding is off, and when a position that must be computed is padding (a wanted
  one, or [CLS] under the pooler in a left-padded row), since only that path computes padding.
The sparse last layer is off when hidden states are asked for.

Heads are a few lines on top of it. `BertForPreTraining` and `BertForMaskedLM` compute
masked-LM logits only at the positions whose label is not IGNORE_INDEX when labels are given
(`config.sparse_prediction`, on by default), as google-research/bert gathers
`masked_lm_positions`: about 15% of the vocab-sized matmul and of its activation memory, with
the loss of the dense one.

`config.sparse_prediction` and `config.fused_qkv` are config fields; `set_fast_paths(model,
False)` turns both attribute switches off at once (the plain path everywhere), and
`bertforge.model.compiled.compile_encoder` adds torch.compile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.model.heads import MaskedLMHead, Pooler
from bertforge.model.layers import Embeddings, Encoder
from bertforge.model.outputs import EncoderOutput, PreTrainingOutput
from bertforge.model.unpad import TokenLayout, gather_rows


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) of 1/0 into the (B, 1, 1, T) boolean mask SDPA takes, or None when nothing is padded.

    Returning None for a batch without padding lets SDPA pick its mask-free (flash) kernel.
    """
    if attention_mask is None:
        return None
    mask = attention_mask.bool()
    if bool(mask.all()):
        return None
    return mask[:, None, None, :]


class BertPreTrainedModel(nn.Module):
    """Common base: the config, BERT's weight init, and Hugging Face-layout loading and saving.

    Subclasses set `architecture` to the Hugging Face class whose checkpoint layout they share;
    `bertforge.convert` maps names between the two.
    """

    architecture = "BertModel"
    config: BertConfig

    def init_weights(self) -> None:
        """BERT's init: normal(0, initializer_range = 0.02) weights, zero biases, LayerNorm 1/0."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, MaskedLMHead):
                nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: BertConfig | None = None, **config_changes: Any):
        """Load a Hugging Face-layout directory (ours or any BERT checkpoint); see bertforge.convert."""
        # Imported here: the model layer knows nothing of files; convert does.
        from bertforge.convert import load_pretrained

        return load_pretrained(cls, directory, config=config, **config_changes)

    def save_pretrained(self, directory: str | Path, tokenizer: Any = None) -> None:
        """Write config.json and model.safetensors (and the tokenizer's files when given)."""
        from bertforge.convert import save_pretrained

        save_pretrained(self, directory, tokenizer=tokenizer)


class BertModel(BertPreTrainedModel):
    """Embeddings, the post-LayerNorm encoder and (optionally) the pooler."""

    architecture = "BertModel"

    unpad_inputs: bool = True
    """Run the encoder on the real tokens only (see bertforge.model.unpad); False: padded path."""
    sparse_last_layer: bool = True
    """With `wanted` positions, compute the last layer only there (and at [CLS] for the pooler)."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooler else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, *, wanted: torch.Tensor | None = None,
                every_position: bool = False, output_attentions: bool = False,
                output_hidden_states: bool = False) -> EncoderOutput:
        """input_ids, token_type_ids, attention_mask: (B, T); attention_mask is 1 for real tokens.

        wanted: (B, T) boolean, the positions whose last hidden state the caller reads;
        `last_hidden_state` is then (K, H), those positions in row-major order (the pooler still
        reads [CLS]). every_position: return (B, T, H) anyway; `wanted` then only names the
        positions that must be computed as real tokens (a loss over every position's logits).
        hidden_states and attentions, when asked for, are (B, T, H) and (B, N, T, T) each.
        """
        rows = wanted
        if wanted is not None and self.pooler is not None:
            rows = wanted.clone()
            rows[:, 0] = True  # [CLS], which the pooler reads
        padded, none_wanted = self._route(attention_mask, rows, wanted, output_attentions)
        gather = wanted is not None and not every_position
        if gather and not padded and self.sparse_last_layer and not output_hidden_states:
            return self._last_layer_at(input_ids, token_type_ids, attention_mask, rows, wanted, none_wanted)
        if padded:
            x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
            x, hidden_states, attentions = self.encoder(
                x, padding_mask(attention_mask), output_attentions, output_hidden_states)
        else:
            layout = self.layout(input_ids, attention_mask)
            x = self.embeddings.forward_tokens(input_ids, token_type_ids, layout)  # (N, H)
            x, hidden_states, attentions = self.encoder(x, layout, False, output_hidden_states)
            x = layout.pad(x)  # (B, T, H)
            if hidden_states is not None:
                hidden_states = tuple(layout.pad(state) for state in hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        if gather:
            flat = x.reshape(-1, x.shape[-1])  # (B * T, H)
            x = flat[:0] if none_wanted else gather_rows(flat, wanted.flatten().nonzero().squeeze(1))  # (K, H)
        return EncoderOutput(x, pooled, hidden_states, attentions)

    def _route(self, attention_mask: torch.Tensor | None, rows: torch.Tensor | None,
               wanted: torch.Tensor | None, output_attentions: bool) -> tuple[bool, bool]:
        """(padded, none_wanted): whether the padded path must run, and whether `wanted` is empty.

        `rows` are the positions that must be computed (`wanted`, and [CLS] under the pooler).
        At most one host sync: both answers come back together.
        """
        padded = output_attentions or not self.unpad_inputs
        if wanted is None:
            return padded or self._pools_padding(attention_mask), False
        checks = [wanted.any()]
        if not padded and attention_mask is not None:
            checks.append((rows & ~attention_mask.bool()).any())
        any_wanted, *on_padding = torch.stack(checks).tolist()
        return padded or any(on_padding), not any_wanted

    def _pools_padding(self, attention_mask: torch.Tensor | None) -> bool:
        """A left-padded row: the pooler reads a padded position, which only the padded path computes."""
        return self.pooler is not None and attention_mask is not None and not bool(attention_mask[:, 0].all())

    def _last_layer_at(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                       attention_mask: torch.Tensor | None, rows: torch.Tensor, wanted: torch.Tensor,
                       none_wanted: bool) -> EncoderOutput:
        """The unpadded path whose last layer computes only the `rows` (all real tokens): their
        queries, attention rows, output projection and feed-forward; keys and values come from
        every token."""
        layout = self.layout(input_ids, attention_mask)
        x = self.embeddings.forward_tokens(input_ids, token_type_ids, layout)  # (N, H)
        queries = layout.queries(layout.select(rows))  # built here, outside the compiled layers
        x, _, _ = self.encoder(x, layout, False, False, queries)  # (K', H), the rows in row-major order
        if self.pooler is None:
            return EncoderOutput(x)
        if none_wanted:  # the rows are the [CLS] positions alone
            return EncoderOutput(x[:0], self.pooler(x[:, None]))
        counts = rows.sum(1)  # (B,) rows per sequence; [CLS] comes first in each
        cls_hidden = gather_rows(x, counts.cumsum(0) - counts)  # (B, H)
        selected = gather_rows(x, wanted[rows].nonzero().squeeze(1))  # (K, H)
        return EncoderOutput(selected, self.pooler(cls_hidden[:, None]))

    @staticmethod
    def layout(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> TokenLayout:
        batch, seq_len = input_ids.shape
        return TokenLayout.from_mask(attention_mask, batch, seq_len, input_ids.device)


class BertHeadModel(BertPreTrainedModel):
    """A BertModel (`bert`) with a head on top. `sparse_last_layer` reads and sets the encoder's."""

    bert: BertModel

    @property
    def sparse_last_layer(self) -> bool:
        return self.bert.sparse_last_layer

    @sparse_last_layer.setter
    def sparse_last_layer(self, enabled: bool) -> None:
        self.bert.sparse_last_layer = enabled


class _MaskedLanguageModel(BertHeadModel):
    """BERT + the masked-LM head, and the next-sentence head when `next_sentence`: the forward
    that BertForPreTraining and BertForMaskedLM share."""

    next_sentence: bool

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=self.next_sentence)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2) if self.next_sentence else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> PreTrainingOutput:
        """labels (B, T): token ids to predict, IGNORE_INDEX elsewhere; next_sentence_label (B,):
        1 = random B (ignored by a model without the next-sentence head)."""
        sparse = labels is not None and self.config.sparse_prediction
        wanted = None if labels is None else labels != IGNORE_INDEX  # (B, T)
        encoded = self.bert(input_ids, token_type_ids, attention_mask, wanted=wanted, every_position=not sparse,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        mlm_labels = labels[wanted] if sparse else labels  # (M,) under sparse prediction
        mlm_logits, mlm_loss = masked_lm(self.mlm, self.bert.embeddings.word_embeddings.weight,
                                         encoded.last_hidden_state, mlm_labels)
        nsp_logits = nsp_loss = None
        if self.nsp is not None:
            nsp_logits = self.nsp(encoded.pooler_output)  # (B, 2)
            if next_sentence_label is not None:
                nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1),
                                           ignore_index=IGNORE_INDEX)
        losses = [loss for loss in (mlm_loss, nsp_loss) if loss is not None]
        total = sum(losses[1:], losses[0]) if losses else None
        return PreTrainingOutput(total, mlm_loss, nsp_loss, mlm_logits, mlm_labels, nsp_logits,
                                 encoded.hidden_states, encoded.attentions)


class BertForPreTraining(_MaskedLanguageModel):
    """BERT with the masked-LM and next-sentence heads; loss = MLM CE + NSP CE (ignore -100)."""

    architecture = "BertForPreTraining"
    next_sentence = True


class BertForMaskedLM(_MaskedLanguageModel):
    """BERT with the masked-LM head only (no pooler), for MLM-only pretraining and fill-mask;
    `next_sentence_label` is accepted and ignored."""

    architecture = "BertForMaskedLM"
    next_sentence = False


def set_fast_paths(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch the attribute fast paths (unpad_inputs, sparse_last_layer) of every BertModel in `model`.

    `enabled=False` gives the plain padded path everywhere (config.sparse_prediction and
    config.fused_qkv are config fields and stay as they are). Returns the model.
    """
    for module in model.modules():
        if isinstance(module, BertModel):
            module.unpad_inputs = enabled
            module.sparse_last_layer = enabled
    return model


def masked_lm(head: MaskedLMHead, word_embeddings: torch.Tensor, hidden: torch.Tensor,
              labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked-LM logits and the loss (None without labels).

    hidden (..., H) with labels (...) row-aligned: (M, H) and (M,) for the labelled positions
    under sparse prediction, (B, T, H) and (B, T) otherwise. Logits (..., V).
    """
    logits = head(hidden, word_embeddings)
    if labels is None:
        return logits, None
    if labels.numel() == 0 or not bool((labels != IGNORE_INDEX).any()):
        # No position to predict: a zero that still joins the graph, instead of CE's NaN mean.
        return logits, logits.sum() * 0.0
    loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    return logits, loss
