"""The pure pieces of benchmarks/time_to_quality.py: statistics, data subsets, the cache that
lets the benchmark run budget by budget, the token count and the table."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.time_to_quality import (FinetuneSpec, cached, first_conll_sentences, first_tsv_rows, mean_se,
                                        render_markdown, run_unit, summarize, target_lines, tokens_from_metrics)

SPECS = [FinetuneSpec("sst2", 2000, 3.0, (0, 1, 2)), FinetuneSpec("conll2003", 2000, 3.0, (0,))]


def test_mean_and_standard_error_against_the_textbook_formula() -> None:
    mean, se = mean_se([0.80, 0.82, 0.87])
    assert mean == pytest.approx(0.83)
    # sample standard deviation sqrt(((-.03)^2 + (-.01)^2 + .04^2) / 2) over sqrt(3)
    assert se == pytest.approx(math.sqrt((0.0009 + 0.0001 + 0.0016) / 2) / math.sqrt(3))
    assert mean_se([0.5]) == (0.5, None)
    assert mean_se([]) == (None, None)


def test_subsets_take_the_first_rows_and_sentences() -> None:
    tsv = "sentence\tlabel\na\t1\n\nb\t0\nc\t1\n"
    assert first_tsv_rows(tsv, 2) == "sentence\tlabel\na\t1\nb\t0\n"
    conll = "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\n\n\nBlackburn B-PER\n"
    assert first_conll_sentences(conll, 2) == "EU B-ORG\nrejects O\n\nPeter B-PER\n"
    assert first_conll_sentences(conll, 10).count("\n\n") == 2  # three sentences, no marker


def test_a_stored_unit_is_not_run_again(tmp_path) -> None:
    path = tmp_path / "results" / "finetune-x.json"
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"value": 0.75}

    first = run_unit(path, {"rows": 2000}, compute)
    second = run_unit(path, {"rows": 2000}, compute)
    assert calls == [1]
    assert first["value"] == second["value"] == 0.75
    stored = json.loads(path.read_text())
    assert stored["settings"] == {"rows": 2000} and "load_average_at_start" in stored


def test_a_unit_stored_with_other_settings_is_an_error_not_a_hit(tmp_path) -> None:
    path = tmp_path / "unit.json"
    run_unit(path, {"rows": 200}, lambda: {"value": 0.5})
    with pytest.raises(SystemExit, match="made with settings"):
        cached(path, {"rows": 2000})
    assert cached(tmp_path / "missing.json", {"rows": 2000}) is None


def test_tokens_are_the_sum_of_rate_times_interval() -> None:
    records = [{"split": "eval", "step": 0, "mlm_accuracy": 0.0},
               {"split": "train", "step": 10, "tokens_per_second": 1000.0, "elapsed_seconds": 2.0},
               {"split": "train", "step": 20, "tokens_per_second": 500.0, "elapsed_seconds": 6.0},
               {"split": "eval", "step": 20, "mlm_accuracy": 0.1},
               {"split": "train", "step": 25, "tokens_per_second": 2000.0, "elapsed_seconds": 6.5}]
    assert tokens_from_metrics(records) == 2000 + 2000 + 1000


def _pretrain(side: str, budget: float, steps: int, accuracy: float) -> dict:
    return {"kind": "pretrain", "side": side, "budget": budget, "model_key": f"{side}-{budget:g}", "steps": steps,
            "tokens": steps * 1000, "train_seconds": budget * 60, "heldout": {"mlm_accuracy": accuracy},
            "architecture": "abc123", "recipe_sha256": "f" * 64}


def _finetune(model_key: str, task: str, seed: int, value: float) -> dict:
    spec = next(spec for spec in SPECS if spec.task == task)
    return {"kind": "finetune", "model_key": model_key, "task_key": spec.key(seed), "value": value}


def _results() -> list[dict]:
    results = [_pretrain("bertforge", 15.0, 1200, 0.25), _pretrain("transformers", 15.0, 400, 0.12)]
    for seed, value in enumerate([0.80, 0.82, 0.84]):
        results.append(_finetune("bertforge-15", "sst2", seed, value))
    for seed, value in enumerate([0.70, 0.72, 0.74]):
        results.append(_finetune("transformers-15", "sst2", seed, value))
    for seed, value in enumerate([0.60, 0.62, 0.64]):
        results.append(_finetune("random-abc123", "sst2", seed, value))
    results += [_finetune("bertforge-15", "conll2003", 0, 0.55), _finetune("random-abc123", "conll2003", 0, 0.30)]
    # Another setting's fine-tune (200 rows) must not be counted in the 2,000-row column.
    results.append({"kind": "finetune", "model_key": "bertforge-15", "task_key": "sst2-n200-e1-s0", "value": 0.1})
    return results


def test_summary_groups_seeds_and_puts_random_init_at_each_budget() -> None:
    rows = summarize(_results(), SPECS)
    assert [(row["budget"], row["side"]) for row in rows] == [(15.0, "bertforge"), (15.0, "transformers"),
                                                              (15.0, "random")]
    ours, theirs, random = rows
    assert ours["sst2"]["n"] == 3 and ours["sst2"]["mean"] == pytest.approx(0.82)
    assert ours["sst2"]["se"] == pytest.approx(0.02 / math.sqrt(3))
    assert theirs["conll2003"]["n"] == 0 and theirs["conll2003"]["mean"] is None
    assert random["steps"] == 0 and random["mlm_accuracy"] is None and random["sst2"]["mean"] == pytest.approx(0.62)


def test_table_margins_and_targets() -> None:
    rows = summarize(_results(), SPECS)
    meta = {"recipe": "configs/pretrain/cpu-hour.yaml", "machine": "AMD EPYC, 2 cores, no native bf16",
            "hf_schedule": "budget-aware decay", "commands": ["python -m benchmarks.time_to_quality --budgets 15"]}
    text = render_markdown(rows, SPECS, meta)
    assert "| 15 | bertforge | 1,200 | 1.20 | 900 | 0.250 | 0.820 ± 0.012 (n=3) | 0.550 (n=1) |" in text
    assert "| 15 | transformers | 400 | 0.40 | 900 | 0.120 | 0.720 ± 0.012 (n=3) | – |" in text
    assert "| 15 | random init | 0 | 0.00 | 0 | – | 0.620 ± 0.012 (n=3) | 0.300 (n=1) |" in text
    assert "| 15 | +20.0 | +10.0 | +25.0 | – |" in text
    assert "AMD EPYC, 2 cores, no native bf16" in text and "--budgets 15" in text
    assert target_lines(rows) == ["- 15 min, sst2: bertforge +20.0 points against random init (target +5): **met**"]
    assert not any(line.isupper() for line in text.splitlines())  # collect.py would blank such a line


def test_budgets_from_different_machines_are_labelled_each_with_its_own() -> None:
    from benchmarks.time_to_quality import machine_lines

    rows = [{"budget": 15.0, "side": "bertforge", "machine": "AMD EPYC"},
            {"budget": 15.0, "side": "random", "machine": None},
            {"budget": 30.0, "side": "bertforge", "machine": "Intel Xeon"}]
    lines = machine_lines(rows, "Intel Xeon")
    assert "- 15 min: AMD EPYC" in lines and "- 30 min: Intel Xeon" in lines
    assert machine_lines(rows[:2], "Intel Xeon") == ["Machine: AMD EPYC"]
    assert machine_lines([{"budget": 15.0, "side": "bertforge"}], "Intel Xeon") == ["Machine: Intel Xeon"]
