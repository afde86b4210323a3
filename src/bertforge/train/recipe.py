"""The pretraining recipe runner, `run_pretraining`: data preparation (when given raw text), the
model, the trainer, the result. (The objective itself is `bertforge.train.pretraining`.)

A run directory holds config.yaml (the resolved config), metrics.jsonl, curves.png (with
matplotlib; `bertforge.train.plot`), checkpoints/step-N/ and, at the end, final/ in Hugging
Face layout. With no inputs at all, the run uses the
built-in corpus (`bertforge.data.builtin`) and a WordPiece vocab trained on it.

`PretrainConfig` is one typed tree, built and checked whole before anything is written:

    run_dir, fill_mask
    model:  ModelSection    preset, init_from, changes (BertConfigChanges: typed BertConfig fields)
    data:   DataSection     prepared, inputs, vocab, vocab_size, pad_to_multiple_of, num_workers,
            prepare: PrepareSettings   mode, max_seq_length, eval_fraction, ... (`bertforge data prepare`)
            masking: MaskingConfig     masked_lm_prob, 80/10/10, ... (the one masking config:
                                       static masks at preparation, dynamic ones in the loader)
    train:  TrainConfig
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertforge.config import BertConfig, BertConfigChanges, to_plain
from bertforge.data.builtin import FILL_MASK_SENTENCES
from bertforge.data.masking import MaskingConfig
from bertforge.data.prepare import PrepareSettings
from bertforge.errors import BertforgeError
from bertforge.fileio import OVERWRITE_HELP, atomic_write_text, prepare_run_directory, replace_directory, start_run
from bertforge.train.config import TrainConfig

if TYPE_CHECKING:
    from bertforge.train import distributed


@dataclass
class ModelSection:
    preset: str = "mini"
    """Architecture from the presets table (tiny, mini, small, medium, base, large)."""
    init_from: str | None = None
    """A Hugging Face-layout BERT directory to continue pretraining from (domain adaptation)."""
    changes: BertConfigChanges = field(default_factory=BertConfigChanges)
    """BertConfig fields to change, e.g. {hidden_dropout_prob: 0.0, sparse_prediction: false}."""

    def bert_config(self, vocab_size: int | None = None) -> BertConfig:
        """The architecture: init_from's config.json or the preset, with `changes` applied."""
        changes = self.changes.as_dict()
        if vocab_size is not None:
            changes["vocab_size"] = vocab_size
        if self.init_from:
            return BertConfig.from_json_file(Path(self.init_from) / "config.json").replace(**changes)
        return BertConfig.from_preset(self.preset, **changes)


@dataclass
class DataSection:
    prepared: str | None = None
    """A directory made by `bertforge data prepare`; used as it is."""
    inputs: list[str] = field(default_factory=list)
    """Raw text files, directories or globs, prepared into run_dir/data first. Empty (and no
    `prepared`): the built-in corpus."""
    vocab: str | None = None
    """vocab.txt (or a tokenizer directory) for raw inputs. None: init_from's vocab, or a vocab
    trained on the inputs (uncased unless prepare.lowercase is false)."""
    vocab_size: int = 8000
    """Size of the vocab trained on the inputs when there is none."""
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    """How raw inputs are prepared: mode, max_seq_length, eval_fraction, workers, ..."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """The masking, for the masks drawn as batches are built and for static masks alike."""
    eval_masked_lm_prob: float = 0.15
    """The masking rate of the held-out evaluation, whatever masking.masked_lm_prob trains with,
    so that held-out MLM accuracy means the same thing (BERT's 15%) in runs that train with
    30-40% (Wettig et al. 2022)."""
    pad_to_multiple_of: int | None = 8
    """Round each batch's length up to a multiple of this (friendlier matrix shapes)."""
    num_workers: int | None = None
    """Processes building batches ahead of the step; None: 2 on CUDA, 0 on CPU (where the
    two cores are better spent on the step itself)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_masked_lm_prob < 1.0:
            raise BertforgeError(f"data.eval_masked_lm_prob must be in (0, 1), got {self.eval_masked_lm_prob!r}")


@dataclass
class PretrainConfig:
    """A pretraining run. The defaults are the built-in main job (`bertforge pretrain` with no
    arguments); the CLI keeps them only for runs on the built-in corpus (`plain_sections`)."""

    run_dir: str = "runs/pretrain"
    """Run directory: config, metrics, checkpoints, final model."""
    # The main job's settings are measured choices (benchmarks/results/pretrain_sweep.md, 2 idle
    # cores, 4.5 minutes each): the tiny preset takes about three times as many steps as mini in
    # that time and ends higher (0.144 against 0.118); no dropout (0.163 against 0.156 with 0.1);
    # lr 2e-3 (1e-3: 0.134, 4e-3 diverges); MLM only on packed sequences rather than NSP pairs
    # (0.163 against 0.147: NSP, memorized on a corpus this small, taught nothing held out); a
    # 4,000-token vocab (0.185 against 0.163 with 8,000: a cheaper head, more steps, and pieces
    # frequent enough to learn in minutes); 30% masking (0.187, within noise of 15%, but more
    # predictions per step for the same encoder work). MLM+NSP stays the default everywhere else.
    model: ModelSection = field(default_factory=lambda: ModelSection(
        preset="tiny", changes=BertConfigChanges(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
    # The built-in corpus has only about 550 documents: hold out 5% of them, not the usual 1%.
    data: DataSection = field(default_factory=lambda: DataSection(
        vocab_size=4000, prepare=PrepareSettings(mode="mlm", eval_fraction=0.05),
        masking=MaskingConfig(masked_lm_prob=0.3)))
    # max_steps is only a cap: the time limit ends the run, and the schedule decays with the
    # fraction of the time budget used (train.schedule_budget auto -> time).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=32, max_steps=20000, learning_rate=2e-3, warmup_steps=100, precision="auto",
        eval_every=0, eval_batches=16, save_every=500, time_limit_minutes=4.5))
    fill_mask: list[str] = field(default_factory=lambda: list(FILL_MASK_SENTENCES))
    """Sentences with [MASK] to complete with the trained model at the end."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        # Everything that can be checked without reading files is checked here, so that a bad
        # recipe fails before a run directory, a vocab or any data is written.
        if not self.model.init_from:
            model_config = self.model.bert_config()
            if not self.data.prepared:
                check_sequence_length(self.data.prepare.max_seq_length, model_config, "data.prepare.max_seq_length")


def plain_sections() -> PretrainConfig:
    """The sections' own defaults, for a run on the user's data: no recipe inherits the built-in
    run's 4.5-minute time limit, its learning rate or its model."""
    return PretrainConfig(model=ModelSection(), data=DataSection(), train=TrainConfig())


def check_sequence_length(max_seq_length: int, model_config: BertConfig, where: str) -> None:
    """The one check that the data's sequences fit the model's position embeddings."""
    if max_seq_length > model_config.max_position_embeddings:
        raise BertforgeError(
            f"{where} is {max_seq_length}, more than the model's max_position_embeddings "
            f"({model_config.max_position_embeddings}); lower it, or raise model.changes.max_position_embeddings")


def check_inputs(config: PretrainConfig) -> None:
    """The checks that read files (a prepared directory, init_from's config.json), before any write."""
    data = config.data
    where = "data.prepare.max_seq_length"
    max_seq_length = data.prepare.max_seq_length
    if data.prepared:
        from bertforge.data.shards import MANIFEST, prepared_manifest

        directory = Path(data.prepared)
        if not (directory / MANIFEST).exists():
            raise BertforgeError("not a prepared data directory (no manifest.json); run `bertforge data prepare`",
                                 path=directory)
        manifest = prepared_manifest(directory)
        max_seq_length, where = int(manifest["max_seq_length"]), f"the max_seq_length of {directory}"
    if config.model.init_from or data.prepared:
        check_sequence_length(max_seq_length, config.model.bert_config(), where)


def _say(context: distributed.Context, text: str) -> None:
    if context.is_main:
        print(text, file=sys.stderr, flush=True)


def prepare_data(config: PretrainConfig, context: distributed.Context) -> Path:
    """The prepared-data directory: given, or prepared now into run_dir/data (rank 0; others wait)."""
    from bertforge.data import PrepareConfig, prepare_corpus

    data = config.data
    if data.prepared:
        return Path(data.prepared)
    run_dir = Path(config.run_dir)
    out = run_dir / "data"
    if context.is_main:
        inputs = list(data.inputs)
        if not inputs:
            from bertforge.data.builtin import write_builtin_corpus

            corpus = run_dir / "builtin" / "corpus.txt"
            if not corpus.exists():
                counts = write_builtin_corpus(corpus)
                _say(context, f"built-in corpus: {counts['documents']} documents, {counts['bytes'] / 1e6:.1f} MB "
                              f"of Python reference documentation, docstrings and comments -> {corpus}")
            inputs = [str(corpus)]
        vocab = data.vocab
        if vocab is None and config.model.init_from:
            vocab = config.model.init_from
        if vocab is None:
            vocab_dir = run_dir / "vocab"
            if not (vocab_dir / "vocab.txt").exists():
                from bertforge.tokenizer import train_vocab

                _say(context, f"training a {data.vocab_size}-token WordPiece vocab on the corpus -> {vocab_dir}")
                train_vocab(inputs, vocab_dir, vocab_size=data.vocab_size, lowercase=data.prepare.lowercase is not False)
            vocab = str(vocab_dir)
        settings = {name: getattr(data.prepare, name) for name in PrepareSettings.__dataclass_fields__}
        prepare_corpus(PrepareConfig(**settings, inputs=inputs, vocab=vocab, out=str(out), masking=data.masking),
                       progress=True)
    from bertforge.train import distributed

    distributed.barrier(context)
    return out


def build_model(config: PretrainConfig, vocab_size: int, mode: str):
    from bertforge.model import BertForMaskedLM, BertForPreTraining

    cls = BertForMaskedLM if mode == "mlm" else BertForPreTraining
    if config.model.init_from:
        model = cls.from_pretrained(config.model.init_from, **config.model.changes.as_dict())
        if model.config.vocab_size != vocab_size:
            raise BertforgeError(f"the model's vocab has {model.config.vocab_size} tokens but the data's has "
                                 f"{vocab_size}; prepare the data with the model's vocab.txt",
                                 path=Path(config.model.init_from) / "config.json")
        return model
    return cls(config.model.bert_config(vocab_size))


def run_pretraining(config: PretrainConfig) -> dict[str, Any]:
    """Prepare (if needed), train, evaluate and save; returns a summary with the metrics."""
    from bertforge.data import PretrainingDataset
    from bertforge.tokenizer import BertTokenizer
    from bertforge.train.pretraining import PretrainingObjective, evaluate_pretraining, most_common_token
    import torch

    from bertforge.train import distributed
    from bertforge.train.plot import CurvesHook
    from bertforge.train.trainer import Trainer

    run_dir = prepare_run_directory(config.run_dir, overwrite=config.overwrite, resume=config.train.resume,
                                    resume_hint="--resume", inputs=[config.model.init_from])
    check_inputs(config)
    context = distributed.setup(config.train.device)
    if context.is_main:
        start_run(run_dir, resume=config.train.resume)
        _write_config(config, context, run_dir)
    data_dir = prepare_data(config, context)
    train_set = PretrainingDataset(data_dir, split="train")
    eval_set = PretrainingDataset(data_dir, split="eval")
    if len(eval_set) == 0:
        raise BertforgeError("the eval split is empty; raise data.prepare.eval_fraction", path=data_dir)
    tokenizer = BertTokenizer.from_pretrained(data_dir)
    train_set.check_vocab(tokenizer)
    mode = train_set.manifest.get("mode", "nsp")

    torch.manual_seed(config.train.seed)
    model = build_model(config, tokenizer.vocab_size, mode)
    batches, eval_batches = _batches(config, context, train_set, eval_set)
    baseline_token = most_common_token(train_set.token_counts(), train_set.special_ids.values())

    def evaluate(model) -> dict[str, float]:
        eval_batches.set_epoch(0)
        return evaluate_pretraining(model, eval_batches, context.device, config.train.eval_batches, baseline_token)

    _say(context, f"model: {type(model).__name__} {model.config.num_hidden_layers} layers, hidden "
                  f"{model.config.hidden_size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
                  f"data: {len(train_set):,} train / {len(eval_set):,} eval instances ({mode})")
    trainer = Trainer(model, config.train, run_dir, batches, PretrainingObjective(), evaluate=evaluate,
                      tokenizer=tokenizer, context=context, hooks=[CurvesHook()])
    result = trainer.fit()
    final = run_dir / "final"
    if context.is_main:
        _save_final(run_dir, final)
    summary = {"step": result.step, "first": result.first_metrics, "last": result.metrics,
               "elapsed_seconds": result.elapsed_seconds, "final": str(final), "skipped_steps": result.skipped_steps}
    if context.is_main:
        _report(summary)
        if config.fill_mask:
            summary["fill_mask"] = fill_mask(final, config.fill_mask)
    distributed.teardown()
    return summary


def _write_config(config: PretrainConfig, context: distributed.Context, run_dir: Path) -> None:
    """config.yaml, with the precision `auto` stands for on this device (the Trainer says why)."""
    import dataclasses

    import torch
    import yaml

    from bertforge.train.precision import resolve_precision
    from bertforge.version import __version__

    precision = resolve_precision(config.train.precision, context.device).precision
    resolved = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_plain(resolved), sort_keys=False))
    _say(context, f"bertforge {__version__}, torch {torch.__version__}, {context.world_size} process(es) on "
                  f"{context.device.type}; run directory {run_dir}")


def _batches(config: PretrainConfig, context: distributed.Context, train_set: Any, eval_set: Any) -> tuple[Any, Any]:
    """The training batches (split into micro-batches under accumulation) and the eval batches."""
    import dataclasses

    from bertforge.data import PretrainingBatches

    data = config.data
    micro, accumulation = config.train.accumulation(context.world_size)
    workers = data.num_workers
    if workers is None:
        workers = 2 if context.device.type == "cuda" else 0
    batches = PretrainingBatches(train_set, batch_size=micro * accumulation, masking=data.masking,
                                 seed=config.train.seed, rank=context.rank, world_size=context.world_size,
                                 pad_to_multiple_of=data.pad_to_multiple_of, num_workers=workers)
    batches = MicroBatches(batches, micro) if accumulation > 1 else batches
    eval_masking = dataclasses.replace(data.masking, masked_lm_prob=data.eval_masked_lm_prob)
    eval_batches = PretrainingBatches(eval_set, batch_size=micro, masking=eval_masking, seed=config.train.seed,
                                      shuffle=False, drop_last=False, pad_to_multiple_of=data.pad_to_multiple_of)
    return batches, eval_batches


def _save_final(run_dir: Path, final: Path) -> None:
    """final/: the last checkpoint's model files, in Hugging Face layout."""
    from bertforge.train.checkpoint import latest_checkpoint

    source = latest_checkpoint(run_dir)
    temporary = run_dir / ".final.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy2(source / name, temporary / name)
    replace_directory(temporary, final)


def _report(summary: dict[str, Any]) -> None:
    first, last = summary["first"], summary["last"]

    def line(name: str, key: str) -> str | None:
        if key not in last:
            return None
        before = f"{first[key]:.3f} -> " if key in first else ""
        return f"  {name:24s} {before}{last[key]:.3f}"

    rows = [line("held-out MLM accuracy", "mlm_accuracy"), line("held-out MLM loss", "mlm_loss"),
            line("held-out perplexity", "perplexity"), line("held-out NSP accuracy", "nsp_accuracy")]
    if "mlm_baseline_accuracy" in last:
        # What "learned" means here: above the accuracy of a model that ignores the context.
        rows.insert(1, f"  {'(always the top token)':24s} {last['mlm_baseline_accuracy']:.3f}")
    print(f"\nafter {summary['step']} steps ({summary['elapsed_seconds'] / 60:.1f} min of training):")
    print("\n".join(row for row in rows if row))
    print(f"model saved in Hugging Face layout: {summary['final']}")


def fill_mask(directory: Path, sentences: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """Print and return the top-k completions of each [MASK] in `sentences`
    (`bertforge.model.fill_mask`, the one behind `bertforge serve` too)."""
    import warnings

    from bertforge.model import BertForMaskedLM
    from bertforge.model.fill_mask import fill_mask as complete
    from bertforge.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NSP head is not needed here
        model = BertForMaskedLM.from_pretrained(directory).eval()
    results = complete(model, tokenizer, sentences, top_k=top_k)
    print("\nfill-mask on sentences the model never saw:")
    for result in results:
        shown = "; ".join(", ".join(f"{guess['token']} ({guess['score']:.2f})" for guess in mask["predictions"])
                          for mask in result["masks"])
        print(f"  {result['text']}\n      -> {shown}")
    return results


class MicroBatches:
    """Splits each rank's batch of micro * accumulation rows into `accumulation` micro-batches.

    The position it reports is the underlying loader's, which only advances by whole batches,
    and the trainer always consumes whole optimizer steps, so resume stays exact.
    """

    def __init__(self, batches: Any, micro: int):
        self.batches, self.micro = batches, micro

    def __iter__(self):
        for batch in self.batches:
            rows = batch["input_ids"].shape[0]
            for start in range(0, rows, self.micro):
                yield {key: value[start:start + self.micro] for key, value in batch.items()}

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batches.load_state_dict(state)
