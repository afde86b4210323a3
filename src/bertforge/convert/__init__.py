"""Hugging Face interop: key maps, loading any BERT checkpoint directory, saving ours in HF layout."""

from bertforge.convert.hf import (from_hf_state_dict, load_pretrained, read_state_dict, save_pretrained,
                                  to_hf_state_dict)

__all__ = ["load_pretrained", "save_pretrained", "read_state_dict", "to_hf_state_dict", "from_hf_state_dict"]
