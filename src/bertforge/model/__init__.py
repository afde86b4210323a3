"""The BERT model: encoder layers, heads, typed outputs. No files, devices or CLI here."""

from bertforge.model.bert import (BertForMaskedLM, BertForPreTraining, BertModel, BertPreTrainedModel,
                                  masked_lm, padding_mask)
from bertforge.model.outputs import EncoderOutput, PreTrainingOutput

__all__ = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertPreTrainedModel", "EncoderOutput",
           "PreTrainingOutput", "masked_lm", "padding_mask"]
