"""Inference behind the server: one model directory, one call per micro-batch of items.

The task endpoint calls the task's own `predict` (tokenization, windows over long inputs,
postprocessing), so the server answers exactly what `bertforge predict` answers. Fill-mask
(`bertforge.model.fill_mask`) and embeddings are computed from the encoder.

Which endpoints a directory offers (see `bertforge.tasks.loading`):
- a fine-tuned model of a registered task: that task's endpoint (named as the task);
- a pretrained model with its masked-LM head: `fill-mask`;
- every model: `embed`, and `attention` on the PyTorch backend (onnxruntime does not expose
  attention probabilities).

Nothing here knows HTTP; `bertforge.serve.app` validates requests and calls `runner`. The
engine is not thread-safe by design: the server calls it from one worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bertforge.errors import BertforgeError
from bertforge.tasks.loading import Backend, LoadedModel, load_model

ENCODER_ENDPOINTS = ("fill-mask", "embed", "attention")
"""The endpoints that are not tasks; a task's endpoint is named as the task."""


class Engine:
    """The model of one directory, with one method per endpoint; see the module docstring."""

    def __init__(self, directory: str | Path, *, backend: Backend = "auto", onnx_file: str | Path | None = None,
                 device: str = "cpu", threads: int | None = None, predict_batch_size: int = 64):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.directory = Path(directory)
        self.loaded: LoadedModel = load_model(self.directory, backend=backend, device=device, onnx_file=onnx_file,
                                              threads=threads)
        self.backend = self.loaded.backend
        self.config = self.loaded.config
        self.tokenizer = self.loaded.tokenizer
        self.predict_batch_size = predict_batch_size
        self.max_length = min(self.config.max_position_embeddings, 512)
        """Tokens per input for fill-mask, embed and attention ([CLS] and [SEP] included)."""
        offered = [self.loaded.task.name] if self.loaded.task is not None else []
        if self.kind == "masked_lm":
            offered.append("fill-mask")
        offered.append("embed")
        if self.backend == "torch":
            offered.append("attention")
        self.endpoints: list[str] = offered

    @property
    def kind(self) -> str:
        return self.loaded.kind

    def describe(self) -> dict[str, Any]:
        config = self.config
        info: dict[str, Any] = {
            "model": self.directory.name, "kind": self.kind, "backend": self.backend, "endpoints": self.endpoints,
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads, "vocab_size": config.vocab_size, "max_length": self.max_length}
        task = self.loaded.task
        if task is not None and task.needs_id2label and config.id2label:
            info["labels"] = [config.id2label[index] for index in sorted(config.id2label)]
        return info

    def runner(self, endpoint: str) -> Callable[[tuple, list[Any]], list[Any]]:
        """The batch function of `endpoint`: (params, items) -> one result per item."""
        if self.loaded.task is not None and endpoint == self.loaded.task.name:
            return lambda params, items: self.predict(items)
        functions: dict[str, Callable[[tuple, list[Any]], list[Any]]] = {
            "fill-mask": lambda params, items: self.fill_mask(items, top_k=params[0]),
            "embed": lambda params, items: self.embed(items, pooling=params[0], normalize=params[1]),
        }
        return functions[endpoint]

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """The task's predictions for its inputs (as `Task.serve_inputs` makes them)."""
        loaded = self.loaded
        assert loaded.task is not None and loaded.settings is not None
        return loaded.task.predict(loaded.model, self.tokenizer, inputs, loaded.settings, self.predict_batch_size)

    # -- the encoder: fill-mask and embeddings ----------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def check_fill_mask(self, text: str) -> None:
        """A text must keep at least one [MASK] after truncation (checked before batching, so
        one bad request cannot fail the others of its batch)."""
        ids = self.tokenizer.encode(text, truncation=True, max_length=self.max_length)
        if self.tokenizer.mask_token_id not in ids:
            mask = self.tokenizer.convert_ids_to_tokens(self.tokenizer.mask_token_id)
            raise BertforgeError(f"no {mask} token in the first {self.max_length} tokens of the text")

    def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list[dict[str, Any]]:
        """For each [MASK]: the top_k tokens and their probabilities (special tokens excluded),
        and the text with every [MASK] replaced by its best token."""
        from bertforge.model.fill_mask import fill_mask

        return fill_mask(self.loaded.model, self.tokenizer, texts, top_k=top_k, max_length=self.max_length)

    def embed(self, texts: Sequence[str], pooling: str = "mean", normalize: bool = False) -> list[list[float]]:
        """One vector per text: the mean of the last hidden states over the real tokens, or the
        [CLS] token's last hidden state; L2-normalized when asked."""
        import torch

        batch = self._tokenize(texts)
        model = self.loaded.model
        with torch.inference_mode():
            if self.backend == "onnx":
                hidden = model.encode(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            else:
                hidden = self.loaded.encoder(batch["input_ids"], batch["token_type_ids"],
                                             batch["attention_mask"]).last_hidden_state  # (B, T, H)
            vectors = pool(hidden.float(), batch["attention_mask"], pooling)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy().astype(np.float64).tolist()

    def attention(self, text: str, text_pair: str | None = None, max_tokens: int = 128) -> dict[str, Any]:
        from bertforge.explain.attention import attention_maps

        maps = attention_maps(self.loaded, text, text_pair, max_length=min(max_tokens, self.max_length))
        return maps.to_json()


def pool(hidden: Any, attention_mask: Any, pooling: str) -> Any:
    """hidden (B, T, H), attention_mask (B, T) -> (B, H): `mean` over real tokens or `cls`."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise BertforgeError(f"unknown pooling {pooling!r}; use mean or cls")
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
