"""`bertforge pretrain` end to end on a slice of real text: the result loads in transformers,
a SIGKILLed run resumes to bit-identical weights, torchrun DDP matches one process, and bad
input gives one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import torch

from bertforge.train.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.preset=tiny", "train.batch_size=8", "train.learning_rate=1e-3", "train.warmup_steps=1",
        "train.eval_batches=2", "train.precision=fp32", "train.log_every=1", "train.progress=false"]


def bertforge(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "bertforge", *args], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, **(env or {})}, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir) -> Path:
    """NSP shards of the first 3,000 lines of tiny-shakespeare with the uncased BERT vocab."""
    from bertforge.data import PrepareConfig, prepare_corpus

    root = tmp_path_factory.mktemp("prepared")
    text = (data_dir / "corpora/tinyshakespeare/input.txt").read_text(encoding="utf-8").splitlines()[:3000]
    (root / "shakespeare.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    prepare_corpus(PrepareConfig(inputs=[str(root / "shakespeare.txt")],
                                 vocab=str(data_dir / "vocab/bert-base-uncased-vocab.txt"),
                                 out=str(root / "data"), max_seq_length=64, eval_fraction=0.05, workers=1),
                   progress=False)
    return root / "data"


def read_metrics(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["split"] == split]


def test_pretrain_then_transformers_loads_it(tmp_path, prepared):
    transformers = pytest.importorskip("transformers")
    run_dir = tmp_path / "run"
    result = bertforge("pretrain", "--run-dir", str(run_dir), f"data.prepared={prepared}", "train.max_steps=6",
                       *TINY, "--fill-mask", "to be or not to [MASK]")
    assert "held-out MLM accuracy" in result.stdout and "fill-mask" in result.stdout
    evals = read_metrics(run_dir, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 6
    assert evals[-1]["mlm_loss"] < evals[0]["mlm_loss"]
    assert (run_dir / "config.yaml").exists()

    from bertforge import BertForPreTraining, BertTokenizer
    ours = BertForPreTraining.from_pretrained(run_dir / "final").eval()
    theirs, info = transformers.BertForPreTraining.from_pretrained(run_dir / "final", output_loading_info=True)
    assert not any(info.values()), info
    tokenizer = BertTokenizer.from_pretrained(run_dir / "final")
    batch = tokenizer(["First Citizen: before we proceed any further, hear me speak."], return_tensors="pt")
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        b = theirs.eval()(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    torch.testing.assert_close(a.mlm_logits, b.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.nsp_logits, b.seq_relationship_logits, atol=1e-5, rtol=0)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(directory / "model.safetensors")


def test_sigkill_then_resume_is_bit_identical(tmp_path, prepared):
    common = [f"data.prepared={prepared}", "train.max_steps=8", "train.save_every=2", *TINY]
    bertforge("pretrain", "--run-dir", str(tmp_path / "straight"), *common)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "bertforge", "pretrain", "--run-dir", str(killed), *common],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        found = latest_checkpoint(killed)
        if found is not None and int(found.name.split("-")[1]) >= 4:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = int(latest_checkpoint(killed).name.split("-")[1])
    assert 4 <= stopped_at < 8

    bertforge("pretrain", "--run-dir", str(killed), "--resume", *common)
    straight, resumed = _weights(tmp_path / "straight" / "final"), _weights(killed / "final")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


KILL_DURING_SAVE = """
import os, signal, sys
import bertforge.train.checkpoint as checkpoint
original = checkpoint._save_tensor_file
def dying(path, obj):
    if path.name == "trainer_state.pt" and "step-4" in str(path.parent):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, halfway through writing step-4
    original(path, obj)
checkpoint._save_tensor_file = dying
from bertforge.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, prepared):
    run_dir = tmp_path / "run"
    args = ["pretrain", "--run-dir", str(run_dir), f"data.prepared={prepared}", "train.max_steps=6",
            "train.save_every=2", *TINY]
    result = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL
    assert latest_checkpoint(run_dir).name == "step-2"
    assert (run_dir / "checkpoints" / ".step-4.tmp" / "model.safetensors").exists()  # the half-written one
    from bertforge import BertForPreTraining
    BertForPreTraining.from_pretrained(latest_checkpoint(run_dir))
    bertforge(*args, "--resume")
    assert latest_checkpoint(run_dir).name == "step-6"


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_torchrun_two_ranks_match_one_process(tmp_path, prepared, parallelism):
    common = [f"data.prepared={prepared}", "train.max_steps=4", *TINY, "model.changes.hidden_dropout_prob=0.0",
              "model.changes.attention_probs_dropout_prob=0.0", "--fill-mask"]
    bertforge("pretrain", "--run-dir", str(tmp_path / "one"), *common)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29517 + (parallelism == "fsdp")),
         "-m", "bertforge", "pretrain", "--run-dir", str(tmp_path / "two"), *common,
         f"train.parallelism={parallelism}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one", "train"), read_metrics(tmp_path / "two", "train")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    first, second = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final")
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=1e-5, rtol=0, msg=name)


def test_bad_inputs_give_one_line_errors(tmp_path, prepared):
    def error_of(*args: str) -> str:
        result = bertforge("pretrain", "--run-dir", str(tmp_path / "bad"), *args, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
        return lines[-1]

    assert "not a prepared data directory" in error_of(f"data.prepared={tmp_path / 'nowhere'}")
    assert "unknown config key 'train.max_stepz'" in error_of(f"data.prepared={prepared}", "train.max_stepz=3")
    assert "train.max_steps: expected an integer" in error_of(f"data.prepared={prepared}", "train.max_steps=lots")

    import shutil
    corrupt = tmp_path / "corrupt"
    shutil.copytree(prepared, corrupt)
    shard = sorted((corrupt / "train").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert str(shard.name) in error_of(f"data.prepared={corrupt}", "train.max_steps=2", *TINY)

    mismatch = tmp_path / "mismatch"
    shutil.copytree(prepared, mismatch)
    vocab = (mismatch / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (mismatch / "vocab.txt").write_text("\n".join(vocab[:-1] + ["[zzz]"]) + "\n", encoding="utf-8")
    assert "vocab" in error_of(f"data.prepared={mismatch}", "train.max_steps=2", *TINY)

    run_dir = tmp_path / "incompatible"
    bertforge("pretrain", "--run-dir", str(run_dir), f"data.prepared={prepared}", "train.max_steps=1", *TINY,
              "--fill-mask")
    message = error_of("--run-dir", str(run_dir), f"data.prepared={prepared}", "train.max_steps=2", *TINY,
                       "model.preset=mini", "--resume")
    assert "cannot resume" in message and "hidden_size" in message


def test_every_shipped_recipe_parses():
    from bertforge.cli.command import resolve_options
    from bertforge.cli.main import available_commands, build_parser
    from bertforge.cli.pretrain import resolve

    commands = available_commands()
    parser = build_parser(commands)

    def config_of(*args):
        namespace = parser.parse_args(["pretrain", *args])
        return resolve(resolve_options(namespace._command, namespace))

    for recipe in sorted((REPO / "configs" / "pretrain").glob("*.yaml")):
        config = config_of("--config", str(recipe))
        own_limit = (yaml.safe_load(recipe.read_text()).get("train") or {}).get("time_limit_minutes")
        if config.data.inputs or config.data.prepared:
            # A recipe on its own data never inherits the built-in run's time limit; it has
            # one only when it says so (cpu-hour's 60 minutes).
            assert config.train.time_limit_minutes == own_limit, recipe.name
    builtin = config_of("train.max_steps=7")
    assert builtin.train.max_steps == 7 and builtin.train.time_limit_minutes == 4.5
    own = config_of("data.prepared=somewhere", "train.max_steps=7")
    assert own.train.time_limit_minutes is None and own.model.changes.as_dict() == {}


def test_the_main_job_is_mlm_only_on_the_builtin_corpus_and_loads_in_transformers(tmp_path):
    """`bertforge pretrain` with no data arguments: the built-in corpus, a 4,000-token vocab, packed
    MLM-only sequences; final/ is a BertForMaskedLM that transformers loads with equal logits."""
    transformers = pytest.importorskip("transformers")
    run_dir = tmp_path / "main"
    result = bertforge("pretrain", "--run-dir", str(run_dir), "train.max_steps=4", "train.eval_batches=2", "--quiet")
    assert "built-in corpus:" in result.stderr and "mode mlm" in result.stderr
    assert "held-out MLM accuracy" in result.stdout and "held-out NSP" not in result.stdout
    config = json.loads((run_dir / "final/config.json").read_text())
    assert config["vocab_size"] == 4000 and config["num_hidden_layers"] == 2

    from bertforge import BertTokenizer
    from bertforge.model import BertForMaskedLM
    ours = BertForMaskedLM.from_pretrained(run_dir / "final").eval()
    theirs, info = transformers.BertForMaskedLM.from_pretrained(run_dir / "final", output_loading_info=True)
    assert not any(info.values()), info
    tokenizer = BertTokenizer.from_pretrained(run_dir / "final")
    batch = tokenizer(["A dictionary maps each key to a [MASK]."], return_tensors="pt")
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        b = theirs.eval()(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    torch.testing.assert_close(a.mlm_logits, b.logits, atol=1e-5, rtol=0)
