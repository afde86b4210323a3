"""Checkpoints: the model in Hugging Face layout plus everything needed to resume exactly.

    run_dir/checkpoints/step-N/
        config.json, model.safetensors, vocab.txt, tokenizer_config.json   (transformers loads it)
        trainer_state.pt      optimizer, scheduler, step, data position, config (weights_only-safe)
        rng-rank-R.pt         each rank's torch (and CUDA) RNG state
        COMPLETE              written last: a directory without it is ignored

Everything is written into a hidden temporary directory that is renamed into place only when
complete, so a kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_text, commit_file, replace_directory, temporary_path_for
from bertforge.train.distributed import Context, barrier

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"step-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir()
             if (m := _STEP_DIR.match(path.name)) and (path / MARKER).exists()]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on CPU (a collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, bare_model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any],
                    tokenizer: Any, context: Context, keep_last: int) -> Path:
    """Write checkpoints/step-N atomically (all ranks call this; rank 0 writes the shared files)."""
    model_state, optimizer_state = full_state(model, optimizer)
    final = run_dir / "checkpoints" / f"step-{step}"
    temporary = run_dir / "checkpoints" / f".step-{step}.tmp"
    if context.is_main:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    barrier(context)
    _save_tensor_file(temporary / f"rng-rank-{context.rank}.pt", rng_state())
    if context.is_main:
        # Built on the meta device: no memory, and no draw from the RNG that dropout uses,
        # which would make a run that saved differ from one that resumed.
        with torch.device("meta"):
            snapshot = type(bare_model)(bare_model.config)
        snapshot.load_state_dict(_strip_prefixes(model_state), assign=True)
        snapshot.save_pretrained(temporary, tokenizer=tokenizer)
        _save_tensor_file(temporary / "trainer_state.pt", {
            "step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
            "world_size": context.world_size, **state})
    barrier(context)
    if context.is_main:
        atomic_write_text(temporary / MARKER, f"step {step}\n")
        replace_directory(temporary, final)
        for old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(context)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    context: Context, config: BertConfig) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this rank's RNG from `path`; return the trainer state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    from bertforge.convert import from_hf_state_dict, read_state_dict

    saved_config = BertConfig.from_json_file(path / "config.json")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
        if getattr(saved_config, name) != getattr(config, name):
            raise BertforgeError(
                f"cannot resume: the checkpoint has {name}={getattr(saved_config, name)} but this run has "
                f"{getattr(config, name)}; use a new run directory or the same model settings", path=path / "config.json")
    state = _load_tensor_file(path / "trainer_state.pt")
    hf_state, source = read_state_dict(path)
    snapshot = type(_bare(model))(config)
    from_hf_state_dict(snapshot, hf_state, source)
    try:
        set_state_dict(model, optimizer, model_state_dict=snapshot.state_dict(),
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=True))
    except (KeyError, RuntimeError, ValueError) as error:
        raise BertforgeError(f"cannot resume: the optimizer state does not fit this model ({error})",
                             path=path / "trainer_state.pt") from None
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-rank-{context.rank}.pt"
    if rng_file.exists() and state.get("world_size") == context.world_size:
        restore_rng_state(_load_tensor_file(rng_file))
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _save_tensor_file(path: Path, obj: Any) -> None:
    temporary = temporary_path_for(path)
    torch.save(obj, temporary)
    commit_file(temporary, path)


def _load_tensor_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BertforgeError("checkpoint file missing", path=path) from None
    except Exception as error:  # noqa: BLE001 - a corrupt or unsafe file is the user's input
        raise BertforgeError(f"cannot read checkpoint state safely: {error}", path=path) from None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP's `module.`, torch.compile's `_orig_mod.`)."""
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", name): tensor for name, tensor in state.items()}


def _bare(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model
