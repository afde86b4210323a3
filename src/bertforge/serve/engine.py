"""Inference behind the server: one model directory, one call per micro-batch of items.

The task endpoints call the tasks' own `predict` (tokenization, windows over long inputs,
postprocessing), so the server answers exactly what `bertforge predict` answers. Fill-mask and
embeddings are computed here, from the encoder.

Which endpoints a directory offers (see `bertforge.export.models`):
- a fine-tuned classifier, tagger or reader: `classify`, `ner` or `qa`;
- a pretrained model with its masked-LM head: `fill-mask`;
- every model: `embed`, and `attention` on the PyTorch backend (onnxruntime does not expose
  attention probabilities).

Nothing here knows HTTP; `bertforge.serve.app` validates requests and calls `run`. The engine
is not thread-safe by design: the server calls it from one worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from bertforge.errors import BertforgeError
from bertforge.export.models import LoadedModel, load_model

Backend = Literal["torch", "onnx"]
ENDPOINTS = ("classify", "ner", "qa", "fill-mask", "embed", "attention")


class Engine:
    """The model of one directory, with one method per endpoint; see the module docstring."""

    def __init__(self, directory: str | Path, *, backend: Backend = "torch", onnx_file: str | Path | None = None,
                 device: str = "cpu", threads: int | None = None, predict_batch_size: int = 64):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.directory = Path(directory)
        self.backend = backend
        if backend == "onnx":
            from bertforge.export.onnx import load_onnx

            self.loaded: LoadedModel = load_onnx(self.directory, onnx_file, threads=threads)
        else:
            weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
            if (self.directory / "model.onnx").exists() and not any((self.directory / name).exists()
                                                                     for name in weights):
                raise BertforgeError("this directory holds only an ONNX graph (e.g. from `bertforge quantize`); "
                                     "serve it with --backend onnx", path=self.directory)
            self.loaded = load_model(self.directory, device=device)
        self.config = self.loaded.config
        self.tokenizer = self.loaded.tokenizer
        self.predict_batch_size = predict_batch_size
        self.max_length = min(self.config.max_position_embeddings, 512)
        """Tokens per input for fill-mask, embed and attention ([CLS] and [SEP] included)."""
        kind = self.loaded.kind
        offered = [kind] if kind in ("classify", "ner", "qa") else []
        if kind == "masked_lm":
            offered.append("fill-mask")
        offered.append("embed")
        if backend == "torch":
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
        if self.kind in ("classify", "ner") and config.id2label:
            info["labels"] = [config.id2label[index] for index in sorted(config.id2label)]
        return info

    def runner(self, endpoint: str) -> Callable[[tuple, list[Any]], list[Any]]:
        """The batch function of `endpoint`: (params, items) -> one result per item."""
        functions: dict[str, Callable[[tuple, list[Any]], list[Any]]] = {
            "classify": lambda params, items: self.classify(items),
            "ner": lambda params, items: self.ner(items),
            "qa": lambda params, items: self.qa(items),
            "fill-mask": lambda params, items: self.fill_mask(items, top_k=params[0]),
            "embed": lambda params, items: self.embed(items, pooling=params[0], normalize=params[1]),
        }
        return functions[endpoint]

    # -- task heads: the tasks' own predict ------------------------------------------------

    def _predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        loaded = self.loaded
        assert loaded.task is not None and loaded.settings is not None
        return loaded.task.predict(loaded.model, self.tokenizer, inputs, loaded.settings, self.predict_batch_size)

    def classify(self, items: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
        """items: (text, text_pair or None). All items of one call must agree on having a pair:
        the classifier's features pair every text as soon as one has a pair."""
        from bertforge.tasks.classify import TextExample

        inputs = [TextExample(text, pair, None, index) for index, (text, pair) in enumerate(items, start=1)]
        return self._predict(inputs)

    def ner(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        assert self.loaded.task is not None and self.loaded.settings is not None
        return self._predict(self.loaded.task.inputs_from_texts(list(texts), self.loaded.settings))

    def qa(self, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """items: (question, context)."""
        from bertforge.tasks.qa import QaExample

        inputs = [QaExample(str(index), question, context)
                  for index, (question, context) in enumerate(items, start=1)]
        return self._predict(inputs)

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
        import torch

        batch = self._tokenize(texts)
        input_ids = batch["input_ids"]  # (B, T)
        masked = input_ids == self.tokenizer.mask_token_id  # (B, T)
        model = self.loaded.model
        with torch.inference_mode():
            if self.backend == "onnx":
                logits = model(input_ids, batch["token_type_ids"], batch["attention_mask"]).mlm_logits[masked]
            else:
                hidden = model.bert(input_ids, batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
                logits = model.mlm(hidden[masked], model.bert.embeddings.word_embeddings.weight)  # (M, V)
            logits = logits.float().clone()
            logits[:, self.tokenizer.all_special_ids] = float("-inf")
            probabilities = logits.softmax(-1)
            top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        rows, positions = masked.nonzero(as_tuple=True)
        results: list[dict[str, Any]] = [{"text": text, "masks": [], "sequence": ""} for text in texts]
        filled = input_ids.clone()
        for index, (row, position) in enumerate(zip(rows.tolist(), positions.tolist())):
            token_ids = top.indices[index].tolist()
            tokens = self.tokenizer.convert_ids_to_tokens(token_ids)
            results[row]["masks"].append({"position": position, "predictions": [
                {"token": token, "token_id": token_id, "score": float(score)}
                for token, token_id, score in zip(tokens, token_ids, top.values[index].tolist())]})
            filled[row, position] = token_ids[0]
        for row, result in enumerate(results):
            length = int(batch["attention_mask"][row].sum())
            result["sequence"] = self.tokenizer.decode(filled[row, :length].tolist())
        return results

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
        from bertforge.export.attention import attention_maps

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
