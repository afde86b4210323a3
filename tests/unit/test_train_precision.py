"""`precision: auto`: bf16 on CUDA with bf16 support, fp32 on every CPU (bf16 autocast measured
slower even where the CPU computes bf16 natively), decided from injected CPU flags and CUDA
support, never from this machine's."""

from __future__ import annotations

import pytest
import torch

from bertforge.errors import BertforgeError
from bertforge.train.precision import cpu_flags, native_bf16, resolve_precision

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}


def test_auto_is_fp32_on_an_avx2_only_cpu():
    choice = resolve_precision("auto", CPU, flags=AVX2)
    assert choice.precision == "fp32" and choice.warning is None
    assert "no native bf16" in choice.reason and "auto" in choice.describe()


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_fp32_even_on_a_cpu_with_native_bf16_and_says_why(flag):
    choice = resolve_precision("auto", CPU, flags=AVX2 | {"avx512f", flag})
    assert choice.precision == "fp32" and choice.warning is None
    assert flag in choice.reason and "slower than fp32" in choice.reason and "\n" not in choice.describe()
    assert resolve_precision("bf16", CPU, flags=AVX2 | {flag}).precision == "bf16"


def test_avx512_without_bf16_is_not_native():
    assert native_bf16(CPU, flags=AVX2 | {"avx512f", "avx512bw", "avx512_vnni"})[0] is False


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_its_bf16_support(supported, expected):
    assert resolve_precision("auto", CUDA, cuda_bf16=supported).precision == expected


def test_explicit_bf16_without_native_support_runs_with_a_one_line_warning():
    choice = resolve_precision("bf16", CPU, flags=AVX2)
    assert choice.precision == "bf16"
    assert choice.warning is not None and "\n" not in choice.warning and "10x slower" in choice.warning
    assert resolve_precision("bf16", CPU, flags={"amx_bf16"}).warning is None


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_explicit_precisions_are_kept(precision):
    choice = resolve_precision(precision, CPU, flags={"amx_bf16"})
    assert choice.precision == precision and choice.warning is None


def test_unknown_precision_is_an_error():
    with pytest.raises(BertforgeError, match="precision"):
        resolve_precision("int4", CPU, flags=AVX2)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_trainer_resolves_auto_once_and_reports_it(tmp_path, capsys, monkeypatch):
    from bertforge.train import precision as precision_module
    from bertforge.train import TrainConfig, Trainer

    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": frozenset(AVX2))
    model = torch.nn.Linear(2, 2)
    trainer = Trainer(model, TrainConfig(max_steps=1, device="cpu", progress=False, tensorboard=False),
                      tmp_path, batches=None, objective=None)
    assert trainer.config.precision == "fp32"
    err = capsys.readouterr().err
    assert err.count("precision fp32 (auto: this CPU has no native bf16") == 1
