"""The pure pieces of benchmarks/chinese.py: the transformers side's recipe is the YAML file the
bertforge side reads, results from another pretraining are refused, and the table and targets."""

from __future__ import annotations

import argparse

import pytest
import yaml

from benchmarks.chinese import (TASKS, finetune_unit, format_cell, parse_args, recipe_file, render_markdown,
                                summarize, target_lines, transformers_recipe)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_transformers_side_trains_with_the_yaml_recipe(name: str) -> None:
    task = TASKS[name]
    document = yaml.safe_load(recipe_file(task).read_text(encoding="utf-8"))
    recipe = transformers_recipe(task, None, None)
    assert recipe.task == document["task"]
    assert recipe.learning_rate == pytest.approx(document["trainer"]["learning_rate"])
    assert recipe.epochs == pytest.approx(document["epochs"])
    assert recipe.warmup_ratio == pytest.approx(document["trainer"]["warmup_ratio"])
    assert recipe.settings == document["settings"]
    changed = transformers_recipe(task, 3e-4, 5)
    assert (changed.learning_rate, changed.epochs) == (3e-4, 5.0)


def test_recipes_whose_dev_file_is_the_test_file_are_scored_only_at_the_end() -> None:
    for task in TASKS.values():
        document = yaml.safe_load(recipe_file(task).read_text(encoding="utf-8"))
        same = document.get("dev") is not None and document.get("dev") == document.get("test")
        assert task.scored_on_test == same, task.name
        if same:
            assert document["trainer"].get("eval_every") == 0, task.name


def _unit(side: str, task: str, value: float, seed: int = 0, exact: float | None = None) -> dict:
    metrics = {TASKS[task].metric: value, **({"exact": exact} if exact is not None else {})}
    return {"kind": "finetune", "side": side, "task": task, "seed": seed, "value": value, "metrics": metrics,
            "train_seconds": 100.0, "one_thread_under_load": False}


def test_summary_means_and_the_targets() -> None:
    units = [_unit("bertforge", "chnsenticorp", 0.91), _unit("bertforge", "chnsenticorp", 0.93, seed=1),
             _unit("random", "chnsenticorp", 0.84), _unit("bertforge", "msra", 0.80), _unit("random", "msra", 0.75),
             _unit("bertforge", "cmrc2018", 35.0, exact=20.0)]
    table = summarize(units)
    assert table["chnsenticorp"]["bertforge"]["mean"] == pytest.approx(0.92)
    assert table["chnsenticorp"]["bertforge"]["n"] == 2
    assert format_cell(TASKS["cmrc2018"], table["cmrc2018"]["bertforge"]) == "EM 20.0 / F1 35.0 (n=1)"
    lines = target_lines(table)
    assert "chnsenticorp: bertforge 0.92 against the floor 0.9: met; +8.0 points over random init" in lines[0]
    assert lines[0].endswith("(target +5): met")
    assert "msra: bertforge 0.8 against the floor 0.85: **not met**; +5.0 points" in lines[1]
    assert "cmrc2018: bertforge 35 against the floor 30: met" in lines[2]
    text = render_markdown(units, {"about": "about", "caveat": "caveat", "machine": "cpu", "commands": ["cmd"]})
    assert "| thucnews (test, accuracy) | – | – | – |" in text


def test_a_finetune_made_from_another_pretraining_is_refused(tmp_path) -> None:
    args = parse_args(["--work", str(tmp_path)])
    args.learning_rate, args.epochs = None, None
    pretrain = {"final": str(tmp_path / "model"), "weights_sha256": "aaa"}
    (tmp_path / "results").mkdir()
    stored = {"settings": {"pretrained_sha256": "bbb", "learning_rate": None, "epochs": None, "quick": False}}
    (tmp_path / "results" / "finetune-bertforge-thucnews-s0.json").write_text(__import__("json").dumps(stored))
    with pytest.raises(SystemExit, match="made with settings"):
        finetune_unit(args, "bertforge", TASKS["thucnews"], 0, pretrain)


def test_a_missing_pretrained_model_is_a_clear_stop(tmp_path) -> None:
    args = parse_args(["--work", str(tmp_path)])
    pretrain = {"final": str(tmp_path / "gone"), "weights_sha256": "aaa"}
    with pytest.raises(SystemExit, match="the pretrained model is gone"):
        finetune_unit(args, "random", TASKS["chnsenticorp"], 0, pretrain)


def test_quick_and_workers_options() -> None:
    args = parse_args(["--quick", "--workers", "2"])
    assert args.minutes == 0.5 and args.subset == 200 and args.workers == 2
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def test_a_given_model_is_recorded_by_its_weights_and_not_pretrained(tmp_path) -> None:
    from benchmarks.chinese import pretrain_unit

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    args = parse_args(["--work", str(tmp_path / "work"), "--pretrained", str(model)])
    unit = pretrain_unit(args)
    assert unit["given"] and unit["final"] == str(model.resolve())
    assert unit["weights_sha256"] == __import__("hashlib").sha256(b"weights").hexdigest()
    text = render_markdown([unit], {"about": "a", "caveat": "c", "machine": "m", "commands": []})
    assert "given with --pretrained" in text
    with pytest.raises(SystemExit, match="no model.safetensors"):
        pretrain_unit(parse_args(["--work", str(tmp_path / "w2"), "--pretrained", str(tmp_path)]))


def test_select_options() -> None:
    args = parse_args(["--select", "--subset", "300", "--pretrain-set", "data.prepare.whole_word_mask=none",
                       "--work", "/tmp/zh-select-args"])
    assert args.select and args.subset == 300
    assert args.pretrain_overrides == ["data.prepare.whole_word_mask=none"]
    assert args.results_dir == args.work  # selection runs never overwrite benchmarks/results
    with pytest.raises(SystemExit):
        parse_args(["--subset", "300"])  # the scored runs train on whole files
    with pytest.raises(SystemExit):
        parse_args(["--select", "--pretrain-set", "no-equals-sign"])


@pytest.mark.parametrize("name", ["msra", "thucnews", "cmrc2018", "chnsenticorp"])
def test_select_scores_on_held_out_training_data_only(name: str, tmp_path) -> None:
    """--select's splits: disjoint, from the training file, 90/10 (ChnSentiCorp: the split's
    dev part), and nothing of the scored test text."""
    import json

    from benchmarks.chinese import active_tasks, selection_data
    from benchmarks.finetune import DATA

    if not (DATA / "zh").exists():
        pytest.skip(f"{DATA / 'zh'}: the shared Chinese data are not there (set BERTFORGE_DATA)")
    paths = selection_data(TASKS[name], tmp_path, 500)
    assert sorted(paths) == ["dev", "train"] and not (tmp_path / "test.jsonl").exists()
    if name == "cmrc2018":
        train, dev = ([article["id"] if "id" in article else json.dumps(article) for article in
                       json.loads(paths[split].read_text(encoding="utf-8"))["data"]] for split in ("train", "dev"))
        assert len(dev) == round(0.1 * 256) and len(train) == 256 - len(dev)
    elif name == "chnsenticorp":
        train, dev = (paths[split].read_text(encoding="utf-8").splitlines() for split in ("train", "dev"))
        assert len(train) == 500 and len(dev) > 500
    else:
        separator = "\n\n" if name == "msra" else "\n"
        train, dev = ([item for item in paths[split].read_text(encoding="utf-8").split(separator) if item.strip()]
                      for split in ("train", "dev"))
        source = (DATA / ("zh/msra_ner/train.txt" if name == "msra" else "zh/thucnews/dev.txt")).read_text(encoding="utf-8")
        assert len(train) == 500 and len(dev) == (5066 if name == "msra" else 1000)
        assert all(item in source for item in dev[:200])  # held out from the training file itself
    assert not set(train) & set(dev)
    assert active_tasks(parse_args(["--select"]))[name].split == "dev"
