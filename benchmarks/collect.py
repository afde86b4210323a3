"""Assemble BENCHMARKS.md from the per-topic result files in benchmarks/results/.

    python -m benchmarks.collect

Each benchmark writes its own results/<topic>.md (table, exact command, machine); this script
only puts them together, in a fixed order, under one header.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["speed", "fast_paths_curve", "data_prep", "pretrain_curve", "pretrain_sweep", "time_to_quality", "finetune",
         "serve_compress", "compress"]

HEADER = """# Benchmarks

Every figure here was measured, never estimated, by the script named beside it, with bertforge
and the transformers equivalent run side by side in the same run on the same data. Ratios
are medians of alternated repetitions. The machine is the project's development machine unless
a section says otherwise: 2 cores and 24 GB, torch 2.13.0 CPU build. The CPU differs between
sessions: an AMD EPYC with AVX2 only (bf16 emulated, about 12 times slower than fp32) in some, an
Intel Xeon with AMX and avx512_bf16 in others (where bf16 autocast still trained slower than
fp32: `bertforge.train.precision`), so each section names the CPU and flags it ran with. No GPU was lent to this task, so there are no GPU figures yet; the harness takes
`--device cuda`.

Caveat: the figures from the first working session (data preparation, fine-tuning, serving and
compression) were taken while several engineers shared the two cores (load average 5 to 10),
which slows both sides and adds noise; each section states its load. The speed tables and the
pretraining curve were measured on an idle machine. Regenerate a section by running its command, then `python -m benchmarks.collect`.
"""


def main() -> None:
    results = ROOT / "benchmarks" / "results"
    files = [results / f"{name}.md" for name in ORDER if (results / f"{name}.md").exists()]
    files += sorted(path for path in results.glob("*.md") if path not in files)
    parts = [HEADER]
    for path in files:
        text = path.read_text(encoding="utf-8").strip()
        # Demote each file's headings one level under the page title.
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        # A result file still being filled in marks a missing figure with an UPPER_CASE token.
        text = re.sub(r"(?m)^[A-Z][A-Z_]{3,}$", "*(not yet measured)*", text)
        parts.append(text)
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"BENCHMARKS.md from {len(files)} result file(s)")


if __name__ == "__main__":
    main()
