"""`precision: auto`: bf16 autocast only where the hardware computes bf16 natively and it pays.

Native bf16 means CUDA with bf16 support (Ampere and later) or a CPU with the `avx512_bf16` or
`amx_bf16` instructions (read from /proc/cpuinfo). Without them, CPU bf16 autocast is emulated:
on an AVX2-only CPU the demo recipe measured 1,696 tokens/s in bf16 against 18,691 in fp32, 11x
slower (issue 16). So `auto` picks fp32 there, and an explicit `bf16` still runs, with a warning.

Native is necessary but, on a CPU, not enough. On a 2-core Xeon with AMX and avx512_bf16, bf16
autocast trained slower than fp32 in every run measured (issue 16): the main job (tiny) took 142
steps in 45 s against 273, mini 33 against 36 in 30 s, and the all-MiniLM-L6-v2 SST-2 fine-tune
2.2 steps/s against about 5. So `auto` is bf16 on CUDA with bf16 support and fp32 on every CPU;
an explicit `bf16` on a CPU with native bf16 runs without a warning.

    choice = resolve_precision("auto", torch.device("cpu"))
    choice.precision   # "fp32" on any CPU
    choice.reason      # "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, and why."""

    precision: Literal["fp32", "bf16", "fp16"]
    requested: Precision
    reason: str
    warning: str | None = None
    """Set when the requested precision will run, but slowly (bf16 without native support)."""

    def describe(self) -> str:
        """One line for the start of a run: `precision fp32 (auto: this CPU has no native bf16 ...)`."""
        if self.requested == "auto":
            return f"precision {self.precision} (auto: {self.reason})"
        return f"precision {self.precision} (as set{'' if self.reason == 'as set' else '; ' + self.reason})"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: torch.device, *, flags: Iterable[str] | None = None,
                cuda_bf16: bool | None = None) -> tuple[bool, str]:
    """(whether `device` computes bf16 natively, the reason in words).

    `flags` (CPU feature flags) and `cuda_bf16` (CUDA bf16 support) default to this machine's;
    tests inject them.
    """
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return supported, "CUDA with bf16 support" if supported else "this GPU has no bf16 support"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else frozenset(flags)
        found = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
        if found:
            return True, f"this CPU computes bf16 natively ({', '.join(found)})"
        return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)"
    return False, f"bf16 autocast is not known to be native on {device.type}"


def resolve_precision(requested: str, device: torch.device, *, flags: Iterable[str] | None = None,
                      cuda_bf16: bool | None = None) -> PrecisionChoice:
    """What `requested` (auto, fp32, bf16, fp16) means on `device`.

    auto: bf16 on CUDA with bf16 support, fp32 elsewhere, CPUs with native bf16 included (see the
    module docstring for the measurements). An explicit bf16 without native support is kept, with
    a warning; fp16 is kept (the Trainer refuses it off CUDA).
    """
    if requested == "auto":
        native, reason = native_bf16(device, flags=flags, cuda_bf16=cuda_bf16)
        if native and device.type == "cpu":
            reason += (", but bf16 autocast measured slower than fp32 on such a CPU (issue 16); "
                       "train.precision=bf16 uses it anyway")
            return PrecisionChoice("fp32", "auto", reason)
        return PrecisionChoice("bf16" if native else "fp32", "auto", reason)
    if requested == "bf16":
        native, reason = native_bf16(device, flags=flags, cuda_bf16=cuda_bf16)
        if native:
            return PrecisionChoice("bf16", "bf16", reason)
        warning = (f"warning: precision bf16 on {device.type}, but {reason}: bf16 is emulated and about 10x "
                   f"slower than fp32 (precision auto would pick fp32 here)")
        return PrecisionChoice("bf16", "bf16", reason, warning)
    if requested in ("fp32", "fp16"):
        return PrecisionChoice(requested, requested, "as set")  # type: ignore[arg-type]
    from bertforge.errors import BertforgeError

    raise BertforgeError(f"train.precision must be auto, fp32, bf16 or fp16, got {requested!r}")
