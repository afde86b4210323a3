"""tasks.reading, tasks.features, the registry and settings: file reading, packed features, dynamic
padding, length-grouped batches, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertforge.config import IGNORE_INDEX
from bertforge.errors import BertforgeError
from bertforge.tasks import get_task
from bertforge.tasks.features import FeatureBatches, Features, batch_order, collate
from bertforge.tasks.reading import read_lines
from bertforge.tasks.settings import TaskSettings

# Shared by the other test_tasks_* files (imported from here): a tiny vocab written in the test.
# Special tokens at the end: proves the tasks read their ids from the tokenizer.
WORDS = ["the", "a", "an", "film", "is", "good", "bad", "great", "dull", "and", "not", "very", "peter", "went",
         "to", "paris", "berlin", "john", "smith", "lives", "in", "new", "york", "where", "does", "live", "who",
         "##s", "##ing", "##ed", "run", "u", "s", ".", ",", "?", "!", "'", "-", "eu", "rejects", "german", "call",
         "北", "京", "中", "国", "人", "在", "住", "哪", "里", "是", "谁", "明", "天"]
TOKENS = WORDS + ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    return path


def tiny_config(vocab_size: int, **changes):
    from bertforge.config import BertConfig

    return BertConfig.from_preset("tiny", vocab_size=vocab_size, max_position_embeddings=128, **changes)


def test_read_lines_strips_bom_and_crlf_but_keeps_stray_carriage_returns(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("\ufeffa\tb\r\nc\rd\te\r\n".encode("utf-8"))
    assert read_lines(path) == ["a\tb", "c\rd\te"]


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"\n \n", "empty"), (b"\xff\xfe", "not UTF-8")])
def test_read_lines_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(BertforgeError, match=message) as caught:
        read_lines(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(BertforgeError, match="not found"):
        read_lines(tmp_path / "nope.tsv")


def make_features():
    rows = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    labels = [np.array([1, IGNORE_INDEX, 2]), np.array([3]), np.array([4, 4, 4, 4, 4]), np.array([0, 0])]
    return Features.pack(rows, [[0] * len(r) for r in rows], [0, 1, 2, 3], token_labels=labels,
                         columns={"start_positions": np.array([0, 1, 0, 2])})


def test_collate_pads_to_the_longest_in_the_batch():
    features = make_features()
    batch = collate(features, np.array([1, 0]), pad_token_id=99)
    assert batch["input_ids"].tolist() == [[8, 99, 99], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [[3, IGNORE_INDEX, IGNORE_INDEX], [1, IGNORE_INDEX, 2]]
    assert batch["start_positions"].tolist() == [1, 0]
    assert collate(features, np.array([2, 3]), pad_token_id=0)["input_ids"].shape == (2, 5)


def test_batch_order_groups_by_length_and_covers_everything_once():
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    batches = batch_order(lengths, 10, np.random.default_rng(1), group_by_length=True)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    grouped_padding = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    random_batches = batch_order(lengths, 10, np.random.default_rng(1), group_by_length=False)
    random_padding = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in random_batches)
    assert grouped_padding < random_padding / 3
    # Evaluation order: longest first, no randomness.
    evaluation = batch_order(lengths, 10, None)
    assert lengths[evaluation[0]].min() >= lengths[evaluation[-1]].max()


def test_feature_batches_resume_exactly():
    features = make_features()
    batches = FeatureBatches(features, 2, 0, seed=3)
    iterator = iter(batches)
    first = next(iterator)
    state = batches.state_dict()
    rest = [b["input_ids"].tolist() for b in iterator]
    resumed = FeatureBatches(features, 2, 0, seed=3)
    resumed.load_state_dict(state)
    assert [b["input_ids"].tolist() for b in resumed] == rest
    assert first["input_ids"].shape[0] == 2
    # The next epoch is a different (seeded) order, the same for the same seed.
    again = FeatureBatches(features, 2, 0, seed=3)
    again.set_epoch(1)
    other = FeatureBatches(features, 2, 0, seed=3)
    other.set_epoch(1)
    assert [b["input_ids"].tolist() for b in again] == [b["input_ids"].tolist() for b in other]


def test_settings_check_themselves():
    with pytest.raises(BertforgeError):
        TaskSettings(max_length=4)
    with pytest.raises(BertforgeError):
        get_task("ner").settings_class(stride=-1)


def test_unknown_task_is_a_user_error():
    with pytest.raises(BertforgeError, match="unknown task"):
        get_task("summarize")


def test_every_finetune_recipe_parses():
    from bertforge.cli.finetune import FinetuneOptions
    from bertforge.config import load_config

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs" / "finetune").glob("*.yaml"))
    assert len(recipes) >= 6
    for recipe in recipes:
        options = load_config(FinetuneOptions, recipe)
        assert options.task in ("classify", "ner", "qa"), recipe
        get_task(options.task).settings(options.settings)  # every settings.* key is the task's own


def test_best_tracker_keeps_the_best_and_stops_after_patience(tmp_path):
    # Fine-tuning keeps its best model with the trainer's KeepBest hook (on the dev metric).
    from types import SimpleNamespace

    from bertforge.train.distributed import Context
    from bertforge.train.hooks import KeepBest

    saved = []

    class FakeModel:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, directory, tokenizer=None):
            directory.mkdir(parents=True)
            (directory / "name").write_text(self.name)
            saved.append(self.name)

    def trainer(step, name):
        return SimpleNamespace(step=step, bare_model=FakeModel(name), tokenizer=None, context=Context(0, 1, 0, "cpu"))

    tracker = KeepBest(tmp_path / "final", "dev_accuracy", patience=2)
    assert tracker.on_evaluate(trainer(10, "a"), {"dev_accuracy": 0.5}) is False
    assert tracker.on_evaluate(trainer(20, "b"), {"dev_accuracy": 0.7}) is False
    assert tracker.on_evaluate(trainer(30, "c"), {"dev_accuracy": 0.6}) is False
    resumed = KeepBest(tmp_path / "final", "dev_accuracy", patience=2)
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.on_evaluate(trainer(40, "d"), {"dev_accuracy": 0.7}) is True  # not better: second stale evaluation
    assert saved == ["a", "b"] and (tmp_path / "final" / "name").read_text() == "b"
    assert resumed.best_step == 20


def test_registry_knows_the_builtin_tasks_and_checks_registrations():
    from bertforge.tasks.classify import ClassifyTask
    from bertforge.tasks.registry import register, task_for_architecture, task_names
    from bertforge.tasks.task import Task

    assert task_names()[:3] == ["classify", "ner", "qa"]
    assert task_for_architecture("BertForTokenClassification").name == "ner"
    assert task_for_architecture("BertForMaskedLM") is None
    assert register(ClassifyTask) is ClassifyTask  # the same class again is a no-op

    class Nameless(Task):
        name = ""

    with pytest.raises(BertforgeError, match="name"):
        register(Nameless)

    class Impostor(ClassifyTask):
        pass

    with pytest.raises(BertforgeError, match="already registered"):
        register(Impostor)
    assert get_task("classify").__class__ is ClassifyTask
