"""Chinese end to end (issue 20): a Chinese BERT that bertforge pretrains for B minutes, fine-tuned
on ChnSentiCorp, MSRA NER, CMRC 2018 and THUCNews beside the same architecture from random
weights and beside transformers fine-tuning the same pretrained weights.

Units (each cached as in benchmarks.time_to_quality: WORK/results/*.json, skipped when present,
an error when made with other settings):

- **pretraining**: `benchmarks.zh_corpus` writes the recipe's text (WORK/zh-text) if missing, then
  `bertforge pretrain --config RECIPE train.time_limit_minutes=B` (RECIPE: `--recipe`, default
  configs/pretrain/zh-cpu-hour.yaml), then the common held-out masked-LM evaluation;
- **fine-tunes**, per task and seed, the task's configs/finetune recipe on benchmarks.finetune's
  data (ChnSentiCorp's 80/10/10 split with data seed 0, the whole MSRA train file, CMRC 2018
  trained on trial and scored on dev, THUCNews trained on dev.txt and scored on test.txt):
  - bertforge: `bertforge finetune --config configs/finetune/TASK.yaml --model PRETRAINED`;
  - random init: the same command with `--init random` (the pretrained model's architecture);
  - transformers: its BertFor* classes loaded from the same PRETRAINED directory, trained by
    benchmarks.finetune's plain PyTorch loop (AdamW, linear warmup and decay, clipping at 1.0,
    random batches) with the same recipe, read from the same YAML file.

Where the shared data have no dev split (MSRA, THUCNews: the recipe's dev file is the test
file), the run is scored once at its end (`trainer.eval_every=0`), so no checkpoint is chosen
on the scored text. Every fine-tune unit records the pretrained weights' SHA-256: results from
another pretraining are an error, never a silent mix. The pretrained run directory must stay
in WORK until its fine-tunes are done.

`--workers 2` runs two fine-tunes at once, each on one thread: accuracy does not depend on
timing, and the table marks such train times as one-thread times under load. Pretraining always
runs alone, on every core.

    python -m benchmarks.chinese                           # 60 minutes, all tasks, all sides
    python -m benchmarks.chinese --workers 2 --sides bertforge random
    python -m benchmarks.chinese --pretrained MODEL_DIR --work runs/chinese-mine   # your own model
    python -m benchmarks.chinese --render-only
    python -m benchmarks.chinese --quick --work /tmp/zh-quick   # smoke run, a few minutes

Writes benchmarks/results/chinese.{md,json} (with --quick or --select: into WORK).

`--select` is for choosing a recipe (pretraining settings, fine-tuning learning rate) without
looking at any scored text: every task is trained on part of its TRAINING data and scored, as
its "dev" split, on the rest: ChnSentiCorp on the 80/10/10 split's dev part (its test part is
left out); MSRA, THUCNews and CMRC 2018 on 10% of their training files (MSRA's train.txt by
sentence, THUCNews' dev.txt by title, CMRC's trial file by article; seeded, data seed 0),
trained on the other 90% (`--subset N`: its first N examples; CMRC: articles).
`--pretrain-set KEY=VALUE` overrides the pretraining recipe:

    python -m benchmarks.chinese --select --minutes 15 --work runs/zh-select/char \
        --pretrain-set data.prepare.whole_word_mask=none --subset 10000 --learning-rate 2e-4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.time_to_quality import (DATA, RESULTS, ROOT, budget_name, file_sha256, machine, mean_se,
                                        pretrain_bertforge, record_command, run_logged, run_unit)

SIDES = ("bertforge", "random", "transformers")
SIDE_LABELS = {"bertforge": "bertforge", "random": "random init", "transformers": "transformers"}


@dataclasses.dataclass(frozen=True)
class ChineseTask:
    """One task as this benchmark runs and reports it."""

    name: str
    """benchmarks.finetune's name for it (its data preparation)."""
    recipe: str
    """configs/finetune/<recipe>.yaml"""
    split: str
    """The scored split: test, or dev for CMRC 2018 (whose test set is not public)."""
    metric: str
    """The headline metric in results.json: accuracy, f1 (entities; CMRC's character F1 in %)."""
    target: float
    """Issue 20's floor for the headline metric."""
    published: str
    """Google bert-base-chinese and HFL BERT-wwm (ANCHORS.md; test maximum over 10 runs)."""
    scored_on_test: bool = False
    """The recipe's dev file is the scored test file: evaluate only at the end."""


TASKS = {
    "chnsenticorp": ChineseTask("chnsenticorp", "chnsenticorp", "test", "accuracy", 0.90, "95.0 / 95.4"),
    "msra": ChineseTask("msra", "msra_ner", "test", "f1", 0.85, "95.3 / 95.4", scored_on_test=True),
    "cmrc2018": ChineseTask("cmrc2018", "cmrc2018", "dev", "f1", 30.0, "EM/F1 70.0/87.0 / 70.5/87.4"),
    "thucnews": ChineseTask("thucnews", "thucnews", "test", "accuracy", 0.85, "–", scored_on_test=True),
}


# -- the recipes and the data -----------------------------------------------------------------------


def recipe_file(task: ChineseTask) -> Path:
    return ROOT / "configs" / "finetune" / f"{task.recipe}.yaml"


def transformers_recipe(task: ChineseTask, learning_rate: float | None, epochs: float | None) -> Any:
    """benchmarks.finetune's Recipe from the task's YAML file: the transformers side trains with
    exactly the recipe the bertforge side reads."""
    import yaml

    from benchmarks.finetune import Recipe

    document = yaml.safe_load(recipe_file(task).read_text(encoding="utf-8"))
    trainer = document.get("trainer") or {}
    return Recipe(task=document["task"], metric=task.metric, eval_split=task.split,
                  epochs=float(epochs if epochs is not None else document.get("epochs", 1)),
                  learning_rate=float(learning_rate if learning_rate is not None else trainer["learning_rate"]),
                  batch_size=int(trainer.get("batch_size", 32)), warmup_ratio=float(trainer.get("warmup_ratio", 0.0)),
                  weight_decay=float(trainer.get("weight_decay", 0.0)),
                  settings=dict(document.get("settings") or {}), chinese=True)


def task_data(args: argparse.Namespace, task: ChineseTask) -> dict[str, Path]:
    """The task's files, written once under WORK/data/TASK by benchmarks.finetune's preparation
    (`--subset all` for MSRA; with --quick a small subset of each training file; with --select
    the held-out split of the training data, see `selection_data`)."""
    with _DATA_LOCK:  # two workers may start the same task's units at once
        return _task_data(args, task)


_DATA_LOCK = threading.Lock()


def _task_data(args: argparse.Namespace, task: ChineseTask) -> dict[str, Path]:
    from benchmarks.finetune import prepare_data

    folder = args.work / "data" / task.name
    index = folder / "paths.json"
    if index.exists():
        return {split: Path(path) for split, path in json.loads(index.read_text(encoding="utf-8")).items()}
    folder.mkdir(parents=True, exist_ok=True)
    if args.select:
        paths = selection_data(task, folder, args.subset)
    else:
        paths = prepare_data(task.name, folder, args.subset if args.quick else "all", seed=0)
    if args.quick and task.name == "cmrc2018":
        paths["train"] = _first_questions(paths["train"], args.subset, folder / "train.json")
    index.write_text(json.dumps({split: str(path) for split, path in paths.items()}), encoding="utf-8")
    return paths


HELDOUT_FRACTION = 0.1


def selection_data(task: ChineseTask, folder: Path, subset: int | None) -> dict[str, Path]:
    """{"train", "dev"} for --select, from the task's training data only: the 80/10/10 split's
    train and dev parts for ChnSentiCorp, else a seeded 90/10 split of the training file (MSRA
    sentences, THUCNews titles, CMRC 2018 articles). `subset`: the first N training examples."""
    from benchmarks.finetune import prepare_data

    if task.name == "chnsenticorp":
        paths = prepare_data(task.name, folder, None, seed=0)
        (folder / "test.jsonl").unlink()
        train = paths["train"]
        if subset is not None:
            lines = train.read_text(encoding="utf-8").splitlines(keepends=True)[:subset]
            train.write_text("".join(lines), encoding="utf-8")
        return {"train": train, "dev": paths["dev"]}
    if task.name == "cmrc2018":
        document = json.loads((DATA / "zh/cmrc2018/cmrc2018_trial.json").read_text(encoding="utf-8"))
        train, heldout = _split_items(document["data"], subset)
        for name, articles in (("train", train), ("dev", heldout)):
            (folder / f"{name}.json").write_text(json.dumps({**document, "data": articles}, ensure_ascii=False),
                                                 encoding="utf-8")
        return {"train": folder / "train.json", "dev": folder / "dev.json"}
    source = {"msra": "zh/msra_ner/train.txt", "thucnews": "zh/thucnews/dev.txt"}[task.name]
    text = (DATA / source).read_text(encoding="utf-8")
    # MSRA: sentences are blocks of "char tag" lines between blank lines; THUCNews: a title a line.
    separator = "\n\n" if task.name == "msra" else "\n"
    items = [item.strip("\n") for item in text.split(separator) if item.strip()]
    train, heldout = _split_items(items, subset)
    for name, chosen in (("train", train), ("dev", heldout)):
        (folder / f"{name}.txt").write_text(separator.join(chosen) + "\n", encoding="utf-8")
    return {"train": folder / "train.txt", "dev": folder / "dev.txt"}


def _split_items(items: list[Any], subset: int | None) -> tuple[list[Any], list[Any]]:
    """(train, held out): a seeded permutation's last 10% held out, the rest in file order, the
    first `subset` of it when given."""
    import numpy as np

    order = np.random.default_rng(0).permutation(len(items))
    cut = len(items) - max(1, round(HELDOUT_FRACTION * len(items)))
    train = [items[i] for i in sorted(order[:cut])]
    heldout = [items[i] for i in sorted(order[cut:])]
    return (train[:subset] if subset is not None else train), heldout


def _first_questions(source: Path, count: int, target: Path) -> Path:
    """The first `count` questions of a SQuAD-format file (the quick run's CMRC training set)."""
    from benchmarks.finetune import _limit_questions

    document = json.loads(source.read_text(encoding="utf-8"))
    document["data"] = _limit_questions(document["data"], count)
    target.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return target


def ensure_text(args: argparse.Namespace) -> None:
    """The pretraining text of the recipe (benchmarks.zh_corpus), written once into runs/zh-text
    where the recipe reads it."""
    if not (ROOT / "runs" / "zh-text" / "summary.json").exists():
        run_logged([sys.executable, "-m", "benchmarks.zh_corpus", "--out", "runs/zh-text"],
                   args.work / "logs" / "zh_corpus.log")


# -- the units --------------------------------------------------------------------------------------


def finetune_bertforge(args: argparse.Namespace, task: ChineseTask, seed: int, pretrained: Path, random_init: bool,
                       out: Path) -> dict[str, Any]:
    """One `bertforge finetune` run; returns the scored split's metrics and its timing."""
    paths = task_data(args, task)
    command = [sys.executable, "-m", "bertforge", "finetune", "--config", str(recipe_file(task)),
               "--model", str(pretrained), "--train", str(paths["train"]), "--dev", str(paths["dev"]),
               "--out", str(out), f"trainer.seed={seed}", "trainer.progress=false"]
    if "test" in paths:
        command += ["--test", str(paths["test"])]
    if random_init:
        command += ["--init", "random"]
    if task.scored_on_test or args.quick:
        command.append("trainer.eval_every=0")
    if args.learning_rate is not None:
        command.append(f"trainer.learning_rate={args.learning_rate:g}")
    if args.epochs is not None:
        command += ["--epochs", f"{args.epochs:g}"]
    if out.exists():
        command.append("--overwrite")  # a run that stopped before its result was stored
    run_logged(command, args.work / "logs" / f"{out.name}.log", env=thread_env(args))
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {"metrics": summary[task.split], "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "command": shlex.join(["bertforge", *command[3:]])}


def finetune_transformers(args: argparse.Namespace, task: ChineseTask, seed: int, pretrained: Path,
                          out: Path) -> dict[str, Any]:
    """transformers' BertFor* from `pretrained` in benchmarks.finetune's plain loop, in a child
    process with the worker's thread count."""
    from benchmarks.finetune import in_child

    recipe = transformers_recipe(task, args.learning_rate, args.epochs)
    out.mkdir(parents=True, exist_ok=True)
    result = in_child(_transformers_child, threads(args), recipe, task_data(args, task), pretrained, out, seed)
    return {"metrics": result["metrics"], "steps": result["steps"], "train_seconds": result["train_seconds"],
            "command": "benchmarks.finetune.run_transformers (in process)"}


def _transformers_child(thread_count: int | None, recipe: Any, paths: dict[str, Path], pretrained: Path, out: Path,
                        seed: int) -> dict[str, Any]:
    import torch

    from benchmarks.finetune import run_transformers

    if thread_count is not None:
        torch.set_num_threads(thread_count)
    return run_transformers(recipe, paths, pretrained, None, None, out, seed, None)


def threads(args: argparse.Namespace) -> int | None:
    """One thread per fine-tune when several run at once; else torch's default."""
    return 1 if args.workers > 1 else None


def thread_env(args: argparse.Namespace) -> dict[str, str] | None:
    return {"OMP_NUM_THREADS": "1"} if args.workers > 1 else None


def finetune_unit(args: argparse.Namespace, side: str, task: ChineseTask, seed: int,
                  pretrain: dict[str, Any]) -> dict[str, Any]:
    """The cached unit of one (side, task, seed) fine-tune from the pretraining `pretrain`."""
    pretrained = Path(pretrain["final"])
    name = f"{side}-{task.name}-s{seed}"
    settings = {"pretrained_sha256": pretrain["weights_sha256"], "learning_rate": args.learning_rate,
                "epochs": args.epochs, "quick": args.quick}
    if args.select:
        settings.update(select=True, subset=args.subset)

    def compute() -> dict[str, Any]:
        if not (pretrained / "model.safetensors").exists():
            raise SystemExit(f"{pretrained}: the pretrained model is gone; remove WORK/results/pretrain-*.json "
                             "and the fine-tunes made from it to pretrain again")
        out = args.work / "finetune" / name
        if side == "transformers":
            result = finetune_transformers(args, task, seed, pretrained, out)
        else:
            result = finetune_bertforge(args, task, seed, pretrained, side == "random", out)
        return {"kind": "finetune", "side": side, "task": task.name, "seed": seed, "split": task.split,
                "metric": task.metric, "value": float(result["metrics"][task.metric]),
                "one_thread_under_load": args.workers > 1, **result}

    return run_unit(args.work / "results" / f"finetune-{name}.json", settings, compute)


def pretrain_unit(args: argparse.Namespace) -> dict[str, Any]:
    """The cached pretraining unit, with the SHA-256 of the weights it wrote (with --pretrained,
    the given model's instead: nothing is pretrained)."""
    if args.pretrained is not None:
        final = args.pretrained.resolve()
        if not (final / "model.safetensors").exists():
            raise SystemExit(f"{args.pretrained}: no model.safetensors there (--pretrained takes a model directory)")
        given = {"kind": "pretrain", "given": True, "final": str(final),
                 "weights_sha256": file_sha256(final / "model.safetensors"), "command": f"--pretrained {final}"}
        return run_unit(args.work / "results" / "pretrain-given.json", {"pretrained": str(final)}, lambda: given)
    settings = {"recipe": str(args.recipe), "overrides": args.pretrain_overrides, "eval_batches": args.eval_batches}

    def compute() -> dict[str, Any]:
        ensure_text(args)
        result = pretrain_bertforge(args, args.minutes)
        return {**result, "weights_sha256": file_sha256(Path(result["final"]) / "model.safetensors")}

    return run_unit(args.work / "results" / f"pretrain-bertforge-{budget_name(args.minutes)}.json", settings, compute)


def active_tasks(args: argparse.Namespace) -> dict[str, ChineseTask]:
    """TASKS, or with --select the same tasks scored on their held-out training data ("dev")."""
    if not args.select:
        return TASKS
    return {name: dataclasses.replace(task, split="dev") for name, task in TASKS.items()}


def run_all(args: argparse.Namespace) -> None:
    """Pretraining alone, then every fine-tune unit, `--workers` at a time."""
    pretrain = pretrain_unit(args)
    tasks = active_tasks(args)
    jobs = [(side, tasks[name], seed) for name in args.tasks for seed in args.seeds for side in args.sides]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(finetune_unit, args, side, task, seed, pretrain) for side, task, seed in jobs]
        for future in concurrent.futures.as_completed(futures):
            future.result()


# -- the table --------------------------------------------------------------------------------------


def summarize(units: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {side: {"mean", "se", "n", "values", "exact" (CMRC), "train_seconds", "one_thread"}}}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for unit in units:
        if unit.get("kind") != "finetune":
            continue
        cell = table.setdefault(unit["task"], {}).setdefault(unit["side"], {"values": [], "exact": [], "seconds": [],
                                                                               "one_thread": False})
        cell["values"].append(unit["value"])
        if "exact" in unit["metrics"]:
            cell["exact"].append(float(unit["metrics"]["exact"]))
        cell["seconds"].append(float(unit["train_seconds"]))
        cell["one_thread"] = cell["one_thread"] or bool(unit.get("one_thread_under_load"))
    for sides in table.values():
        for cell in sides.values():
            cell["mean"], cell["se"] = mean_se(cell["values"])
            cell["n"] = len(cell["values"])
            cell["exact_mean"] = mean_se(cell["exact"])[0]
            cell["train_seconds"] = sum(cell["seconds"]) / len(cell["seconds"])
    return table


def format_cell(task: ChineseTask, cell: dict[str, Any] | None) -> str:
    """'0.9312 ± 0.0021 (n=3)', CMRC as 'EM 41.2 / F1 60.3'; '–' when not run."""
    if not cell or cell["mean"] is None:
        return "–"
    percent = task.name == "cmrc2018"  # CMRC 2018 scores in percent, the others as fractions
    value = f"{cell['mean']:.1f}" if percent else f"{cell['mean']:.4f}"
    if cell["exact_mean"] is not None:
        value = f"EM {cell['exact_mean']:.1f} / F1 {value}"
    spread = "" if cell["se"] is None else (f" ± {cell['se']:.1f}" if percent else f" ± {cell['se']:.4f}")
    return f"{value}{spread} (n={cell['n']})"


def target_lines(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Issue 20's floors, and the margins over random init it asks for (ChnSentiCorp +5 points,
    MSRA +10), as met / not met lines."""
    margins = {"chnsenticorp": 5.0, "msra": 10.0}
    lines = []
    for name, task in TASKS.items():
        ours = (table.get(name) or {}).get("bertforge")
        if not ours:
            continue
        floor = "met" if ours["mean"] >= task.target else "**not met**"
        line = f"- {name}: bertforge {ours['mean']:.4g} against the floor {task.target:g}: {floor}"
        random = (table.get(name) or {}).get("random")
        if name in margins and random:
            points = 100.0 * (ours["mean"] - random["mean"])
            verdict = "met" if points >= margins[name] else "**not met**"
            line += f"; {points:+.1f} points over random init (target +{margins[name]:g}): {verdict}"
        lines.append(line)
    return lines


def render_markdown(units: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    table = summarize(units)
    tasks = meta.get("tasks") or TASKS
    pretrain = next((unit for unit in units if unit.get("kind") == "pretrain"), None)
    lines = ["# Chinese end to end (issue 20)", "", meta["about"], "", f"Machine: {meta['machine']}", ""]
    if pretrain and pretrain.get("given"):
        lines += [f"Pretrained model: `{pretrain['final']}` (given with --pretrained; nothing pretrained here).", ""]
    elif pretrain:
        heldout = pretrain["heldout"].get("mlm_accuracy")
        lines += [f"Pretraining: `{pretrain['command']}`: {pretrain['steps']:,} steps, "
                  f"{pretrain['tokens'] / 1e6:.2f}M real tokens, {pretrain['train_seconds']:.0f} s of training, "
                  f"held-out masked-LM accuracy {heldout:.3f}.", ""]
    lines += ["| task (split, metric) | bertforge | random init | transformers (same weights) | issue floor | "
              "published: bert-base-chinese / BERT-wwm |", "|---|---|---|---|---|---|"]
    for name, task in tasks.items():
        sides = table.get(name) or {}
        cells = [format_cell(task, sides.get(side)) for side in SIDES]
        lines.append(f"| {name} ({task.split}, {task.metric}) | " + " | ".join(cells) +
                     f" | {task.target:g} | {task.published} |")
    one_thread = any(cell["one_thread"] for sides in table.values() for cell in sides.values())
    lines += ["", "Train seconds (mean over seeds" + (", one thread each, two fine-tunes at once" if one_thread
                                                      else "") + "):", ""]
    for name in TASKS:
        sides = table.get(name) or {}
        found = [f"{SIDE_LABELS[side]} {sides[side]['train_seconds']:.0f}" for side in SIDES if side in sides]
        if found:
            lines.append(f"- {name}: " + ", ".join(found))
    targets = ["Held-out training data, not the scored splits: issue 20's targets do not apply."] \
        if meta.get("select") else ["Issue 20's targets:", "", *(target_lines(table) or ["- nothing measured yet"])]
    lines += ["", *targets, "", meta["caveat"], "", "Produced by:", "",
              *[f"    {command}" for command in meta["commands"]], ""]
    return "\n".join(lines)


ABOUT = ("A Chinese BERT pretrained by bertforge (`configs/pretrain/zh-cpu-hour.yaml`: bert-base-chinese's "
         "vocab, whole-word masking over jieba words, MLM on packed sequences), fine-tuned with each task's "
         "configs/finetune recipe; random init is the same architecture from random weights with the same "
         "recipe; transformers is its BertFor* classes loaded from the same pretrained directory and trained "
         "with the same recipe in a plain PyTorch loop. One seed per cell unless n says otherwise.")
CAVEAT = ("The published figures come from models pretrained on billions of characters (Chinese Wikipedia; "
          "BERT-wwm adds more) with bert-base's 110M parameters, fine-tuned on the whole training sets and "
          "reported as the test maximum over 10 runs; here the model is a small one pretrained for an hour on "
          "2 CPU cores over about 5 million characters, and the splits differ: ChnSentiCorp is an 80/10/10 "
          "split of ChnSentiCorp_htl_all.csv, not the published split; CMRC 2018 trains on the 1,002 trial "
          "questions, not the 10,000 of its train set; THUCNews trains on the 10,000 titles of dev.txt.")


SELECT_ABOUT = ("**Selection run (--select):** every task trained on part of its training data and scored on "
                "the held-out rest (ChnSentiCorp: the split's dev part), for choosing a recipe; no scored dev "
                "or test text is read.")


def write_outputs(args: argparse.Namespace) -> None:
    from bertforge.fileio import atomic_write_json, atomic_write_text

    units = [json.loads(path.read_text(encoding="utf-8")) for path in sorted((args.work / "results").glob("*.json"))]
    meta = {"about": ABOUT, "caveat": CAVEAT, "machine": machine(), "commands": record_command(args.work, "benchmarks.chinese")}
    if args.select:
        meta.update(about=f"{SELECT_ABOUT} {ABOUT}", select=True, subset=args.subset,
                    overrides=args.pretrain_overrides)
    atomic_write_text(args.results_dir / "chinese.md", render_markdown(units, {**meta, "tasks": active_tasks(args)}))
    atomic_write_json(args.results_dir / "chinese.json", {"meta": meta, "table": summarize(units), "units": units})
    print(f"wrote {args.results_dir / 'chinese.md'}, chinese.json", flush=True)


# -- command line -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="pretraining budget (minutes of training)")
    parser.add_argument("--recipe", type=Path, default=Path("configs/pretrain/zh-cpu-hour.yaml"))
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="fine-tune this Chinese model directory instead of pretraining one")
    parser.add_argument("--work", type=Path, default=None, help="runs and cached results (default runs/chinese)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default benchmarks/results")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, default=1, help="fine-tunes at once (one thread each when > 1)")
    parser.add_argument("--learning-rate", type=float, default=None, help="every recipe's peak learning rate")
    parser.add_argument("--epochs", type=float, default=None, help="every recipe's epochs")
    parser.add_argument("--eval-batches", type=int, default=50, help="held-out batches for the MLM evaluation")
    parser.add_argument("--select", action="store_true",
                        help="score on held-out training data, for choosing a recipe (see above)")
    parser.add_argument("--subset", type=int, default=None, help="with --select: training examples per task")
    parser.add_argument("--pretrain-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="dotted overrides of the pretraining recipe")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.5 minutes of the tiny preset, 200 training examples a task, 1 epoch")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.subset is not None and not args.select:
        parser.error("--subset goes with --select")
    if any("=" not in item for item in args.pretrain_set):
        parser.error("--pretrain-set takes KEY=VALUE items")
    args.pretrain_overrides = list(args.pretrain_set)
    if args.quick:
        args.minutes, args.subset = 0.5, args.subset or 200
        args.pretrain_overrides.append("model.preset=tiny")
        args.epochs, args.eval_batches = 1.0, min(args.eval_batches, 5)
    args.work = (args.work or Path("runs/chinese-quick" if args.quick else "runs/chinese")).resolve()
    args.results_dir = args.results_dir or (args.work if args.quick or args.select else RESULTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.render_only:
        if not DATA.exists():
            raise SystemExit(f"{DATA}: the shared data are not there (set BERTFORGE_DATA)")
        started = time.time()
        run_all(args)
        print(f"all units done in {(time.time() - started) / 60:.1f} min", flush=True)
    write_outputs(args)


if __name__ == "__main__":
    main()
