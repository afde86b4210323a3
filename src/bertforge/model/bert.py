"""BertModel and the pretraining models built on it.

`BertForPreTraining.forward` computes masked-LM logits only at the positions whose label is
not IGNORE_INDEX when labels are given (`config.sparse_prediction`, on by default), as
google-research/bert gathers `masked_lm_positions`: about 15% of the vocab-sized matmul and of
its activation memory. The loss is the same as the dense one.

Fast paths, each a plain attribute that can be switched off to get the plain padded path:
- `BertModel.unpad_inputs` (default True): the encoder runs on the real tokens only
  (`bertforge.model.unpad`); outputs at padded positions are zeros;
- `BertForPreTraining.sparse_last_layer` / `BertForMaskedLM.sparse_last_layer` (default True,
  used with sparse prediction): the last layer computes its output only at the positions a
  loss reads (the labelled ones and [CLS]), as MosaicBERT does; keys and values still come from
  every token, so the loss and its gradients are unchanged.
Unpadding is off when attention probabilities are asked for, and the sparse last layer is off
when hidden states are. `config.sparse_prediction` and `config.fused_qkv` are the other two
switches; `set_fast_paths(model, False)` turns the attribute switches off at once, and
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

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooler else None
        self.init_weights()

    unpad_inputs: bool = True
    """Run the encoder on the real tokens only (see bertforge.model.unpad); False: padded path."""

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> EncoderOutput:
        """input_ids, token_type_ids, attention_mask: (B, T). attention_mask is 1 for real tokens."""
        if output_attentions or not self.unpad_inputs or self._pools_padding(attention_mask):
            return self.forward_padded(input_ids, token_type_ids, attention_mask,
                                       output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        layout = self.layout(input_ids, attention_mask)
        tokens, hidden_states = self.encode_tokens(input_ids, token_type_ids, layout, output_hidden_states)
        x = layout.pad(tokens)  # (B, T, H)
        if hidden_states is not None:
            hidden_states = tuple(layout.pad(state) for state in hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(x, pooled, hidden_states, None)

    def forward_padded(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, *, output_attentions: bool = False,
                       output_hidden_states: bool = False) -> EncoderOutput:
        """The plain path: every position of (B, T) computed, padding masked out of attention."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        x, hidden_states, attentions = self.encoder(
            x, padding_mask(attention_mask), output_attentions, output_hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(x, pooled, hidden_states, attentions)

    def _pools_padding(self, attention_mask: torch.Tensor | None) -> bool:
        """A left-padded row: the pooler reads a padded position, which only the padded path computes."""
        return self.pooler is not None and attention_mask is not None and not bool(attention_mask[:, 0].all())

    @staticmethod
    def layout(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> TokenLayout:
        batch, seq_len = input_ids.shape
        return TokenLayout.from_mask(attention_mask, batch, seq_len, input_ids.device)

    def encode_tokens(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, layout: TokenLayout,
                      output_hidden_states: bool = False, keep: torch.Tensor | None = None):
        """The encoder on the real tokens: (N, H), or (K, H) for the `keep` rows of the last layer.

        Returns (tokens, hidden_states): hidden_states is a tuple of (N, H) when asked for.
        """
        x = self.embeddings.forward_tokens(input_ids, token_type_ids, layout)  # (N, H)
        queries = None if keep is None else layout.queries(keep)  # built here, outside compiled layers
        x, hidden_states, _ = self.encoder(x, layout, False, output_hidden_states, queries)
        return x, hidden_states

    def encode_selected(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                        attention_mask: torch.Tensor | None, wanted: torch.Tensor) -> torch.Tensor | None:
        """The last hidden state at the `wanted` (B, T) positions only: (K, H) in row-major order.

        None when a wanted position is padding (the caller then takes the padded path, which
        computes something there); the last layer runs only for the K wanted rows (their queries,
        attention rows, output projection and feed-forward; keys and values come from every token).
        """
        if attention_mask is not None and bool((wanted & ~attention_mask.bool()).any()):
            return None
        layout = self.layout(input_ids, attention_mask)
        tokens, _ = self.encode_tokens(input_ids, token_type_ids, layout, keep=layout.select(wanted))
        return tokens


class SparseLastLayer:
    """The `sparse_last_layer` switch shared by the masked-LM models and the sequence classifier."""

    sparse_last_layer: bool = True
    """Compute the last layer only where the heads read it (masked positions with sparse
    prediction; [CLS] for the sequence classifier)."""


class _MaskedLM(SparseLastLayer):
    """What the two masked-LM models share."""

    config: BertConfig
    bert: BertModel

    def encode(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               attention_mask: torch.Tensor | None, labels: torch.Tensor | None, output_attentions: bool,
               output_hidden_states: bool) -> EncoderOutput:
        """BertModel's forward, padded when a label sits on padding (only that path computes it)."""
        on_padding = (labels is not None and attention_mask is not None
                      and bool(((labels != IGNORE_INDEX) & ~attention_mask.bool()).any()))
        run = self.bert.forward_padded if on_padding else self.bert
        return run(input_ids, token_type_ids, attention_mask, output_attentions=output_attentions,
                   output_hidden_states=output_hidden_states)

    def uses_sparse_last_layer(self, labels: torch.Tensor | None, output_attentions: bool,
                               output_hidden_states: bool) -> bool:
        return (self.sparse_last_layer and self.config.sparse_prediction and self.bert.unpad_inputs
                and labels is not None and not output_attentions and not output_hidden_states)


def sparse_tail(bert: BertModel, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor | None, labels: torch.Tensor, with_cls: bool):
    """The last hidden state at the labelled positions (M, H) and, with_cls, at [CLS] (B, H).

    None when a needed position is padding; the caller then takes the general path.
    """
    predicted = labels != IGNORE_INDEX  # (B, T)
    wanted = predicted.clone()
    if with_cls:
        wanted[:, 0] = True
    selected = bert.encode_selected(input_ids, token_type_ids, attention_mask, wanted)  # (K, H)
    if selected is None:
        return None
    if not with_cls:
        return selected, None
    is_cls = torch.zeros_like(wanted)
    is_cls[:, 0] = True
    return (gather_rows(selected, predicted[wanted].nonzero().squeeze(1)),  # (M, H)
            gather_rows(selected, is_cls[wanted].nonzero().squeeze(1)))  # (B, H)


class BertForPreTraining(_MaskedLM, BertPreTrainedModel):
    """BERT with the masked-LM and next-sentence heads; loss = MLM CE + NSP CE (ignore -100)."""

    architecture = "BertForPreTraining"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> PreTrainingOutput:
        """labels (B, T): token ids to predict, IGNORE_INDEX elsewhere; next_sentence_label (B,): 1 = random B."""
        tail = None
        if self.uses_sparse_last_layer(labels, output_attentions, output_hidden_states):
            tail = sparse_tail(self.bert, input_ids, token_type_ids, attention_mask, labels, with_cls=True)
        if tail is not None:
            selected, cls_hidden = tail
            mlm_logits, mlm_labels, mlm_loss = masked_lm(
                self.mlm, self.bert.embeddings.word_embeddings.weight, selected, labels[labels != IGNORE_INDEX],
                sparse=False)
            encoded = EncoderOutput(cls_hidden, self.bert.pooler(cls_hidden[:, None]))
        else:
            encoded = self.encode(input_ids, token_type_ids, attention_mask, labels, output_attentions,
                                  output_hidden_states)
            mlm_logits, mlm_labels, mlm_loss = masked_lm(
                self.mlm, self.bert.embeddings.word_embeddings.weight, encoded.last_hidden_state, labels,
                self.config.sparse_prediction)
        nsp_logits = self.nsp(encoded.pooler_output)  # (B, 2)
        nsp_loss = None
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1), ignore_index=IGNORE_INDEX)
        losses = [loss for loss in (mlm_loss, nsp_loss) if loss is not None]
        total = sum(losses[1:], losses[0]) if losses else None
        return PreTrainingOutput(total, mlm_loss, nsp_loss, mlm_logits, mlm_labels, nsp_logits,
                                 encoded.hidden_states, encoded.attentions)


class BertForMaskedLM(_MaskedLM, BertPreTrainedModel):
    """BERT with the masked-LM head only (no pooler), for MLM-only pretraining and fill-mask."""

    architecture = "BertForMaskedLM"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.mlm = MaskedLMHead(config)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> PreTrainingOutput:
        """As BertForPreTraining, without NSP: `next_sentence_label` is accepted and ignored."""
        tail = None
        if self.uses_sparse_last_layer(labels, output_attentions, output_hidden_states):
            tail = sparse_tail(self.bert, input_ids, token_type_ids, attention_mask, labels, with_cls=False)
        if tail is not None:
            mlm_logits, mlm_labels, mlm_loss = masked_lm(
                self.mlm, self.bert.embeddings.word_embeddings.weight, tail[0], labels[labels != IGNORE_INDEX],
                sparse=False)
            return PreTrainingOutput(mlm_loss, mlm_loss, None, mlm_logits, mlm_labels, None)
        encoded = self.encode(input_ids, token_type_ids, attention_mask, labels, output_attentions,
                              output_hidden_states)
        mlm_logits, mlm_labels, mlm_loss = masked_lm(
            self.mlm, self.bert.embeddings.word_embeddings.weight, encoded.last_hidden_state, labels,
            self.config.sparse_prediction)
        return PreTrainingOutput(mlm_loss, mlm_loss, None, mlm_logits, mlm_labels, None,
                                 encoded.hidden_states, encoded.attentions)


def set_fast_paths(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch the attribute fast paths of every BertModel / masked-LM model inside `model`.

    `enabled=False` gives the plain padded path everywhere (config.sparse_prediction and
    config.fused_qkv are config fields and stay as they are). Returns the model.
    """
    for module in model.modules():
        if isinstance(module, BertModel):
            module.unpad_inputs = enabled
        if isinstance(module, SparseLastLayer):
            module.sparse_last_layer = enabled
    return model


def masked_lm(head: MaskedLMHead, word_embeddings: torch.Tensor, hidden: torch.Tensor,
              labels: torch.Tensor | None, sparse: bool):
    """Masked-LM logits, their labels and the loss (None without labels).

    hidden (B, T, H), labels (B, T). Sparse: gather the M rows with a label first, so the
    logits are (M, V); dense: (B, T, V).
    """
    if labels is None:
        return head(hidden, word_embeddings), None, None
    if sparse:
        selected = (labels != IGNORE_INDEX).flatten().nonzero().squeeze(1)  # (M,) flat positions
        hidden = gather_rows(hidden.reshape(-1, hidden.shape[-1]), selected)  # (M, H)
        labels = labels.flatten()[selected]  # (M,)
    logits = head(hidden, word_embeddings)
    if labels.numel() == 0 or not bool((labels != IGNORE_INDEX).any()):
        # No position to predict: a zero that still joins the graph, instead of CE's NaN mean.
        loss = logits.sum() * 0.0
    else:
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    return logits, labels, loss
