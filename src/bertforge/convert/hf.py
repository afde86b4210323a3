"""Hugging Face layout: the one place that maps transformers' key names. A fine-tuning task's
head declares its own head key map as the class attribute `hf_key_map`, which is read here.

Loading accepts:
- `model.safetensors` (or a sharded `model.safetensors.index.json`), else `pytorch_model.bin`
  read with `torch.load(weights_only=True)`, so a checkpoint can never run code;
- keys with or without the `bert.` prefix (sentence-transformers checkpoints have none);
- the old TF-converted LayerNorm names `gamma`/`beta`.

Heads missing from a checkpoint keep their fresh BERT init and are reported by name as a
warning; so are the tensors of a head the model has not (a pretraining checkpoint's `cls.*` in a
classifier, a pooler in a model without one). A tensor whose shape disagrees with config.json, a
missing encoder tensor, or any other tensor the model has no place for (more layers than
`num_hidden_layers`) is an error naming the file.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from bertforge.config import BertConfig, model_directory
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_text, commit_file, temporary_path_for

# Module paths, internal -> Hugging Face, inside BertModel; `{i}` stands for a layer index.
# The fused query/key/value projection (`attention.qkv`) is split and joined separately.
_ENCODER_MODULES: dict[str, str] = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings.layer_norm": "embeddings.LayerNorm",
    "encoder.layers.{i}.attention.query": "encoder.layer.{i}.attention.self.query",
    "encoder.layers.{i}.attention.key": "encoder.layer.{i}.attention.self.key",
    "encoder.layers.{i}.attention.value": "encoder.layer.{i}.attention.self.value",
    "encoder.layers.{i}.attention.output": "encoder.layer.{i}.attention.output.dense",
    "encoder.layers.{i}.attention_norm": "encoder.layer.{i}.attention.output.LayerNorm",
    "encoder.layers.{i}.feed_forward.intermediate": "encoder.layer.{i}.intermediate.dense",
    "encoder.layers.{i}.feed_forward.output": "encoder.layer.{i}.output.dense",
    "encoder.layers.{i}.output_norm": "encoder.layer.{i}.output.LayerNorm",
    "pooler.dense": "pooler.dense",
}

# Head module paths (outside `bert.`) of the model layer's architectures, internal -> Hugging
# Face. `mlm` itself holds the output bias, HF's `cls.predictions.bias`. A task's head declares
# its own map as the class attribute `hf_key_map` (see bertforge.tasks.task), read here.
_MLM_HEAD = {"mlm": "cls.predictions", "mlm.transform": "cls.predictions.transform.dense",
             "mlm.layer_norm": "cls.predictions.transform.LayerNorm"}
_ENCODER_TENSORS = ("embeddings.", "encoder.")
"""Hugging Face prefixes of the tensors every BERT model holds (the rest belong to heads)."""

_HEAD_MODULES: dict[str, dict[str, str]] = {
    "BertModel": {},
    "BertForPreTraining": {**_MLM_HEAD, "nsp": "cls.seq_relationship"},
    "BertForMaskedLM": dict(_MLM_HEAD),
}

# Tensors transformers writes that carry nothing of their own: tied copies and buffers.
_REDUNDANT_HF_KEYS = re.compile(
    r"(^|\.)position_ids$|^cls\.predictions\.decoder\.(weight|bias)$|(^|\.)token_type_ids$")


def _rename(name: str, modules: dict[str, str]) -> str | None:
    """Map `module.path.param` through a module-path table, or None when the module is unknown."""
    module, _, param = name.rpartition(".")
    index = re.search(r"\.(\d+)\.", module + ".")
    template = module if index is None else module.replace(f".{index.group(1)}", ".{i}", 1)
    target = modules.get(template)
    if target is None:
        return None
    if index is not None:
        target = target.replace("{i}", index.group(1))
    return f"{target}.{param}"


def _head_modules(model: torch.nn.Module) -> dict[str, str]:
    """The head key map of `model`: its class's `hf_key_map`, else the model layer's table."""
    modules = getattr(model, "hf_key_map", None)
    if modules is None:
        architecture = getattr(model, "architecture", "BertModel")
        modules = _HEAD_MODULES.get(architecture)
        if modules is None:
            raise BertforgeError(f"no Hugging Face key map for architecture {architecture!r}")
    return modules


def to_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under Hugging Face names, query/key/value split, ready for safetensors."""
    architecture = getattr(model, "architecture", "BertModel")
    heads = _head_modules(model)
    bare = architecture == "BertModel"
    hidden = model.config.hidden_size
    result: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().contiguous()
        if bare or name.startswith("bert."):
            inner = name if bare else name[len("bert."):]
            prefix = "" if bare else "bert."
            fused = re.fullmatch(r"encoder\.layers\.(\d+)\.attention\.qkv\.(weight|bias)", inner)
            if fused:
                layer, param = fused.groups()
                for part, piece in zip(("query", "key", "value"), tensor.split(hidden, dim=0)):
                    result[f"{prefix}encoder.layer.{layer}.attention.self.{part}.{param}"] = piece.clone()
                continue
            mapped = _rename(inner, _ENCODER_MODULES)
            if mapped is None:
                raise BertforgeError(f"no Hugging Face name for encoder tensor {name!r}")
            result[prefix + mapped] = tensor
        else:
            mapped = _rename(name, heads)
            if mapped is None:
                raise BertforgeError(f"no Hugging Face name for tensor {name!r} of {architecture}")
            result[mapped] = tensor
    return result


def from_hf_state_dict(model: torch.nn.Module, hf_state: dict[str, torch.Tensor],
                       source: str | Path = "checkpoint") -> dict[str, list[str]]:
    """Load Hugging Face-named tensors into `model` in place.

    Returns {"missing": internal names left at their init, "unexpected": checkpoint names not
    used}. Raises BertforgeError on a mis-shaped tensor or a missing encoder tensor.
    """
    architecture = getattr(model, "architecture", "BertModel")
    encoder_inverse = {hf: ours for ours, hf in _ENCODER_MODULES.items()}
    head_inverse = {hf: ours for ours, hf in _head_modules(model).items()}
    prefix = "" if architecture == "BertModel" else "bert."
    own = model.state_dict()
    hidden = model.config.hidden_size
    loaded: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unexpected: list[str] = []
    for raw_name, tensor in hf_state.items():
        # Checkpoints converted from TF name LayerNorm parameters gamma and beta.
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", raw_name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        if _REDUNDANT_HF_KEYS.search(name):
            continue
        inner = name[len("bert."):] if name.startswith("bert.") else None
        if inner is None and re.match(r"(embeddings|encoder|pooler)\.", name):
            inner = name  # saved from a bare BertModel (sentence-transformers and others)
        if inner is not None:
            split = re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)", inner)
            if split and model.config.fused_qkv:
                layer, part, param = split.groups()
                qkv_parts.setdefault((layer, param), {})[part] = tensor
                continue
            mapped = _rename(inner, encoder_inverse)
            internal = None if mapped is None else prefix + mapped
        else:
            internal = _rename(name, head_inverse)
        if internal is None or internal not in own:
            unexpected.append(raw_name)
            continue
        loaded[internal], origin[internal] = tensor, raw_name
    for (layer, param), parts in sorted(qkv_parts.items()):
        if set(parts) != {"query", "key", "value"}:
            raise BertforgeError(f"layer {layer} has only {sorted(parts)} of its query/key/value {param}", path=source)
        internal = f"{prefix}encoder.layers.{layer}.attention.qkv.{param}"
        if internal not in own:
            unexpected.extend(f"{prefix}encoder.layer.{layer}.attention.self.{part}.{param}" for part in parts)
            continue
        loaded[internal] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        origin[internal] = f"{prefix}encoder.layer.{layer}.attention.self.{{query,key,value}}.{param}"
    for internal, tensor in loaded.items():
        if tensor.shape != own[internal].shape:
            raise BertforgeError(
                f"tensor {origin[internal]} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(own[internal].shape)}: the config disagrees with the weights", path=source)
    unexpected = _check_unexpected(unexpected, model, source)
    missing = [name for name in own if name not in loaded]
    # Everything but the pooler and the heads must come from the checkpoint.
    encoder_missing = [name for name in missing if name.startswith(prefix)
                       and not name[len(prefix):].startswith("pooler.") and (prefix or not name.startswith(("mlm", "nsp")))]
    if encoder_missing:
        shown = ", ".join(encoder_missing[:4]) + (" ..." if len(encoder_missing) > 4 else "")
        raise BertforgeError(f"the checkpoint lacks {len(encoder_missing)} encoder tensor(s): {shown}", path=source)
    with torch.no_grad():
        for internal, tensor in loaded.items():
            own[internal].copy_(tensor.to(own[internal].dtype))
    return {"missing": missing, "unexpected": unexpected}


def _is_head(name: str) -> bool:
    if name.startswith("bert."):
        return name[len("bert."):].startswith("pooler.")
    return not name.startswith(_ENCODER_TENSORS)


def _check_unexpected(unexpected: list[str], model: torch.nn.Module, source: str | Path) -> list[str]:
    """The unexpected tensors that belong to another head (a warning for the caller); an encoder
    tensor the model has no place for means the config disagrees with the weights (an error).

    A head is the pooler or any top-level module beside `bert.` (the pretraining heads, any
    task's head), so this layer needs no list of the registered tasks; inside `bert.` (or a bare
    encoder's embeddings and layers) every tensor must have its place."""
    stray = [name for name in unexpected if not _is_head(name)]
    if not stray:
        return unexpected
    layers = [int(match.group(1)) for name in stray if (match := re.search(r"encoder\.layer\.(\d+)\.", name))]
    config = model.config
    if layers and max(layers) >= config.num_hidden_layers:
        raise BertforgeError(f"the checkpoint has {max(layers) + 1} layers but config.json says num_hidden_layers="
                             f"{config.num_hidden_layers}: the config disagrees with the weights", path=source)
    shown = ", ".join(stray[:4]) + (" ..." if len(stray) > 4 else "")
    raise BertforgeError(f"{len(stray)} tensor(s) that {type(model).__name__} has no place for: {shown}; "
                         "the config or the architecture disagrees with the weights", path=source)


def read_state_dict(directory: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of a Hugging Face-layout directory, and the file they came from."""
    directory = model_directory(directory)
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    legacy = directory / "pytorch_model.bin"
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if single.exists():
            return load_file(str(single)), single
        if index.exists():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(directory / shard)))
            return state, index
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise BertforgeError(f"cannot read weights: {error}", path=single if single.exists() else index) from None
    if legacy.exists():
        try:
            state = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is the file's fault
            raise BertforgeError(f"cannot read weights safely (weights_only): {error}", path=legacy) from None
        return state, legacy
    raise BertforgeError("no model.safetensors or pytorch_model.bin in the model directory", path=directory)


def load_pretrained(cls: type, directory: str | Path, config: BertConfig | None = None, **config_changes: Any):
    """Build `cls` from a Hugging Face-layout directory and load its weights."""
    directory = model_directory(directory)
    if config is None:
        config = BertConfig.from_json_file(directory / "config.json")
    if config_changes:
        config = config.replace(**config_changes)
    state, source = read_state_dict(directory)
    model = cls(config)
    report = from_hf_state_dict(model, state, source)
    if report["missing"]:
        warnings.warn(f"{source}: initialized fresh (not in the checkpoint): {', '.join(report['missing'])}",
                      stacklevel=2)
    if report["unexpected"]:
        warnings.warn(f"{source}: ignored (not used by {cls.__name__}): {', '.join(report['unexpected'])}",
                      stacklevel=2)
    return model


def save_pretrained(model: torch.nn.Module, directory: str | Path, tokenizer: Any = None) -> None:
    """config.json + model.safetensors in Hugging Face layout, each written atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = to_hf_state_dict(model)
    temporary = temporary_path_for(directory / "model.safetensors")
    save_file({name: tensor.cpu() for name, tensor in state.items()}, str(temporary), metadata={"format": "pt"})
    commit_file(temporary, directory / "model.safetensors")
    config_dict = model.config.to_dict()
    config_dict["architectures"] = [model.architecture]
    atomic_write_text(directory / "config.json", json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
