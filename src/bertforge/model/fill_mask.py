"""Fill-mask: the likeliest tokens for each [MASK] of some texts under a masked-LM model.

The one implementation behind `bertforge serve`'s /v1/fill-mask and the fill-mask demo at the
end of `bertforge pretrain`. The model is a BertForMaskedLM / BertForPreTraining, or anything
that takes (input_ids, token_type_ids, attention_mask, labels=...) and returns `mlm_logits`
(the onnxruntime backend). The masked positions are passed as labels, so a model with sparse
prediction scores those positions only; a model that scores every position gives (B, T, V)
logits, of which the masked rows are taken.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from bertforge.config import IGNORE_INDEX


def fill_mask(model: Any, tokenizer: Any, texts: Sequence[str], *, top_k: int = 5, max_length: int = 512,
              skip_special: bool = True) -> list[dict[str, Any]]:
    """For each text: `masks`, one entry per [MASK] ({"position": token index, "predictions":
    [{"token", "token_id", "score"}] best first, top_k of them}), and `sequence`, the text with
    every [MASK] replaced by its best token. With `skip_special`, special tokens ([CLS], [PAD],
    [MASK] ...) are never proposed. Texts are cut to `max_length` tokens."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    input_ids = batch["input_ids"]  # (B, T)
    masked = input_ids == tokenizer.mask_token_id  # (B, T)
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    with torch.inference_mode():
        output = model(input_ids.to(device), batch["token_type_ids"].to(device), batch["attention_mask"].to(device),
                       labels=labels.to(device))
        logits = output.mlm_logits
        if logits.dim() == 3:  # every position scored: keep the masked ones, in row-major order
            logits = logits[masked.to(logits.device)]
        logits = logits.float().cpu().clone()  # (M, V)
        if skip_special:
            logits[:, tokenizer.all_special_ids] = float("-inf")
        probabilities = logits.softmax(-1)
        top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    rows, positions = masked.nonzero(as_tuple=True)
    results: list[dict[str, Any]] = [{"text": text, "masks": [], "sequence": ""} for text in texts]
    filled = input_ids.clone()
    for index, (row, position) in enumerate(zip(rows.tolist(), positions.tolist())):
        token_ids = top.indices[index].tolist()
        tokens = tokenizer.convert_ids_to_tokens(token_ids)
        results[row]["masks"].append({"position": position, "predictions": [
            {"token": token, "token_id": token_id, "score": float(score)}
            for token, token_id, score in zip(tokens, token_ids, top.values[index].tolist())]})
        filled[row, position] = token_ids[0]
    for row, result in enumerate(results):
        length = int(batch["attention_mask"][row].sum())
        result["sequence"] = tokenizer.decode(filled[row, :length].tolist())
    return results
