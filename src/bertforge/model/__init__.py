"""The BERT model: encoder layers, heads, typed outputs. No files, devices or CLI here."""

from bertforge.model.bert import (BertForMaskedLM, BertForPreTraining, BertHeadModel, BertModel,
                                  BertPreTrainedModel, masked_lm, padding_mask, set_fast_paths)
from bertforge.model.outputs import EncoderOutput, PreTrainingOutput

__all__ = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertHeadModel", "BertPreTrainedModel",
           "EncoderOutput", "PreTrainingOutput", "masked_lm", "padding_mask", "set_fast_paths"]
