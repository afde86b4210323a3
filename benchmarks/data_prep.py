"""Pretraining-data preparation: bertforge beside the `tokenizers` library alone and beside a
plain Python port of google-research/bert's `create_pretraining_data.py`.

Speed (the English corpora: 13 Gutenberg books, WikiText-2 test, tiny-shakespeare; 8.45 MB):
- tokenizers: `encode_batch_fast` of every line of the corpus (the Rust library on all cores,
  no specials), in this process. Reading the files is not timed: this is the floor.
- bertforge: `prepare_corpus` from the files to finished shards and manifest (reading, sentence
  splitting, tokenizing, NSP pairs, writing, worker start-up), default settings, one worker per
  core, into a fresh directory each time.
- naive: google-research/bert's algorithm (eedf571) ported line for line: every document in
  memory, each line tokenized by its own call to transformers' BertTokenizer, static masks
  (dupe_factor 1), features as padded id lists. transformers 5 no longer ships
  TextDatasetForNextSentencePrediction, so this port stands in for it. Run once, in a child
  process (it is slow), with its peak memory.
tokenizers and bertforge alternate (A B, B A, ...) and medians are reported, so that load from
other processes hits both alike.

Memory: peak resident set size of `prepare_corpus` on the corpus and on 10 concatenated copies
of it (each file repeated 10 times), each in a fresh child process: the main process's own
peak (VmHWM of /proc/self/status) and the largest worker's (getrusage RUSAGE_CHILDREN, read
after the pool has ended).

    python -m benchmarks.data_prep                 # everything, writes benchmarks/results/data_prep.md
    python -m benchmarks.data_prep --skip-naive --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("BERTFORGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"
RESULTS = Path(__file__).resolve().parent / "results" / "data_prep.md"


def english_files() -> list[Path]:
    corpora = DATA / "corpora"
    files = sorted((corpora / "gutenberg").glob("*.txt"))
    files += [corpora / "wikitext-2-raw" / "wiki.test.raw", corpora / "tinyshakespeare" / "input.txt"]
    missing = [path for path in files if not path.exists()]
    if missing or len(files) != 15:
        raise SystemExit(f"shared data not found under {DATA} (set BERTFORGE_DATA)")
    return files


# -- the sides ----------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_tokenizers(lines: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of tokenizers' encode_batch_fast over `lines`."""
    from bertforge.tokenizer import BertTokenizer

    backend = BertTokenizer(VOCAB).backend
    started, cpu = time.perf_counter(), cpu_seconds()
    backend.encode_batch_fast(lines, add_special_tokens=False)
    return time.perf_counter() - started, cpu_seconds() - cpu


def time_bertforge(files: list[Path], out: Path, workers: int) -> tuple[float, float, dict]:
    """(wall, CPU, manifest) of prepare_corpus; CPU counts the worker processes too."""
    from bertforge.data import PrepareConfig, prepare_corpus

    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), cpu_seconds()
    manifest = prepare_corpus(PrepareConfig(inputs=[str(path) for path in files], vocab=str(VOCAB), out=str(out),
                                            workers=workers), progress=False, log=lambda message: None)
    return time.perf_counter() - started, cpu_seconds() - cpu, manifest


def run_child(arguments: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.data_prep", *arguments], capture_output=True,
                            text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"child {arguments} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM). Unlike getrusage's ru_maxrss, it starts
    afresh at exec, so it does not report the size of the benchmark process that forked us."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_prepare(files: list[str], out: str, workers: int) -> dict:
    seconds, _, manifest = time_bertforge([Path(path) for path in files], Path(out), workers)
    # Workers are started (fork + exec) by this small process, so their ru_maxrss is their own.
    return {"seconds": seconds, "main_rss_mb": peak_rss_mb(),
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "bytes": manifest["counts"]["bytes"], "instances": sum(manifest["counts"]["instances"].values())}


# -- google-research/bert create_pretraining_data.py, ported --------------------------------------


def naive_google(files: list[str], max_seq_length: int = 128, short_seq_prob: float = 0.1,
                 masked_lm_prob: float = 0.15, max_predictions_per_seq: int = 20, dupe_factor: int = 1,
                 seed: int = 12345) -> dict:
    """google's create_training_instances + write_instance_to_example_files (features kept in
    memory instead of TFRecords), with transformers' BertTokenizer, one call per line."""
    from transformers import BertTokenizer

    started, cpu = time.perf_counter(), time.process_time()
    tokenizer = BertTokenizer(str(VOCAB), do_lower_case=True)
    rng = random.Random(seed)
    all_documents: list[list[list[str]]] = [[]]
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as reader:
            for line in reader:
                line = line.strip()
                if not line:
                    all_documents.append([])
                tokens = tokenizer.tokenize(line)
                if tokens:
                    all_documents[-1].append(tokens)
    all_documents = [document for document in all_documents if document]
    rng.shuffle(all_documents)
    vocab_words = list(tokenizer.vocab.keys())
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(all_documents)):
            instances.extend(_create_instances_from_document(
                all_documents, document_index, max_seq_length, short_seq_prob, masked_lm_prob,
                max_predictions_per_seq, vocab_words, rng))
    rng.shuffle(instances)
    features = []
    for tokens, segment_ids, is_random_next, positions, labels in instances:
        input_ids = tokenizer.convert_tokens_to_ids(tokens)
        input_mask = [1] * len(input_ids)
        padding = max_seq_length - len(input_ids)
        features.append({"input_ids": input_ids + [0] * padding, "input_mask": input_mask + [0] * padding,
                         "segment_ids": segment_ids + [0] * padding,
                         "masked_lm_positions": positions + [0] * (max_predictions_per_seq - len(positions)),
                         "masked_lm_ids": tokenizer.convert_tokens_to_ids(labels)
                         + [0] * (max_predictions_per_seq - len(labels)),
                         "next_sentence_labels": [1 if is_random_next else 0]})
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "instances": len(features),
            "rss_mb": peak_rss_mb()}


def _create_instances_from_document(all_documents, document_index, max_seq_length, short_seq_prob, masked_lm_prob,
                                    max_predictions_per_seq, vocab_words, rng):
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk: list[list[str]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [token for j in range(a_end) for token in current_chunk[j]]
                tokens_b: list[str] = []
                is_random_next = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(current_chunk) - a_end
                else:
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, positions, labels = _create_masked_lm_predictions(
                    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng)
                instances.append((tokens, segment_ids, is_random_next, positions, labels))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng):
    candidates = [index for index, token in enumerate(tokens) if token not in ("[CLS]", "[SEP]")]
    rng.shuffle(candidates)
    output = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked = []
    for index in candidates[:num_to_predict]:
        if rng.random() < 0.8:
            replacement = "[MASK]"
        elif rng.random() < 0.5:
            replacement = tokens[index]
        else:
            replacement = vocab_words[rng.randint(0, len(vocab_words) - 1)]
        output[index] = replacement
        masked.append((index, tokens[index]))
    masked.sort()
    return output, [index for index, _ in masked], [label for _, label in masked]


def _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


# -- the report -----------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import tokenizers
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {cores} cores available, Python {platform.python_version()}, tokenizers "
            f"{tokenizers.__version__}, transformers {transformers.__version__}, numpy {numpy.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="bertforge workers (0: one per core)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["prepare", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child == "prepare":
        print(json.dumps(child_prepare(arguments.files, arguments.target, arguments.workers)))
        return
    if arguments.child == "naive":
        print(json.dumps(naive_google(arguments.files)))
        return

    files = english_files()
    total_bytes = sum(path.stat().st_size for path in files)
    lines = [line for path in files for line in path.read_bytes().decode("utf-8", "replace").splitlines()]
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bertforge-data-bench-"))
    try:
        time_tokenizers(lines[:2000])  # warm-up: thread pool, page cache
        time_bertforge(files, work / "warm", arguments.workers)
        tokenizer_times, prepare_times, tokenizer_cpu, prepare_cpu = [], [], [], []
        manifest: dict = {}
        for repeat in range(arguments.repeats):
            order = ("tokenizers", "bertforge") if repeat % 2 == 0 else ("bertforge", "tokenizers")
            for side in order:
                if side == "tokenizers":
                    seconds, cpu = time_tokenizers(lines)
                    tokenizer_times.append(seconds)
                    tokenizer_cpu.append(cpu)
                else:
                    seconds, cpu, manifest = time_bertforge(files, work / "out", arguments.workers)
                    prepare_times.append(seconds)
                    prepare_cpu.append(cpu)
            print(f"repeat {repeat}: tokenizers {tokenizer_times[-1]:.2f} s ({tokenizer_cpu[-1]:.2f} CPU), "
                  f"bertforge {prepare_times[-1]:.2f} s ({prepare_cpu[-1]:.2f} CPU)", file=sys.stderr)
        tokenizers_median, prepare_median = statistics.median(tokenizer_times), statistics.median(prepare_times)
        ratios = [b / a for a, b in zip(tokenizer_times, prepare_times)]
        naive = None
        if not arguments.skip_naive:
            naive = run_child(["--child", "naive", "--files", *map(str, files)])
            print(f"naive: {naive['seconds']:.1f} s", file=sys.stderr)
        memory = {}
        if not arguments.skip_memory:
            copies = work / "copies"
            copies.mkdir()
            repeated = []
            for path in files:
                target = copies / f"{path.parent.name}-{path.name}"
                data = path.read_bytes()
                if not data.endswith(b"\n"):
                    data += b"\n"
                target.write_bytes(data * arguments.copies)
                repeated.append(target)
            for name, inputs in (("1x", files), (f"{arguments.copies}x", repeated)):
                memory[name] = run_child(["--child", "prepare", "--workers", str(arguments.workers), "--target",
                                          str(work / f"memory-{name}"), "--files", *map(str, inputs)])
                print(f"memory {name}: {memory[name]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    counts = manifest["counts"]
    cpu_tokenizers, cpu_prepare = statistics.median(tokenizer_cpu), statistics.median(prepare_cpu)
    rows = [
        "| side | wall time (median) | × tokenizers (wall) | CPU time (median) | × tokenizers (CPU) | MB/s | instances |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| tokenizers `encode_batch_fast`, all lines (floor) | {tokenizers_median:.2f} s | 1.00 | "
        f"{cpu_tokenizers:.2f} s | 1.00 | {total_bytes / 1e6 / tokenizers_median:.2f} | – |",
        f"| **bertforge `prepare_corpus`** (nsp, 128, {arguments.workers or 'all'} workers), files → shards | "
        f"**{prepare_median:.2f} s** | **{prepare_median / tokenizers_median:.2f}** | {cpu_prepare:.2f} s | "
        f"{cpu_prepare / cpu_tokenizers:.2f} | {total_bytes / 1e6 / prepare_median:.2f} | "
        f"{sum(counts['instances'].values()):,} |",
    ]
    if naive:
        rows.append(f"| naive port of google's create_pretraining_data.py (1 process, measured once) | "
                    f"{naive['seconds']:.1f} s | {naive['seconds'] / tokenizers_median:.2f} | "
                    f"{naive['cpu']:.1f} s | {naive['cpu'] / cpu_tokenizers:.2f} | "
                    f"{total_bytes / 1e6 / naive['seconds']:.2f} | {naive['instances']:,} |")
    report = [
        "# Pretraining data preparation",
        "",
        f"Corpus: the 15 English files of shared/data/corpora (Gutenberg, WikiText-2 test, tiny-shakespeare), "
        f"{total_bytes / 1e6:.2f} MB, {len(lines):,} lines; vocab bert-base-uncased; mode nsp, max_seq_length "
        f"128, dynamic masking (bertforge), static masks with dupe_factor 1 (naive).",
        "",
        f"Machine: {machine()}. Load average before/after: "
        f"{' '.join(f'{x:.2f}' for x in load_before)} / {' '.join(f'{x:.2f}' for x in load_after)} "
        "(the machine is shared; sides alternate and medians are reported).",
        "",
        "Command: `python -m benchmarks.data_prep" + (f" --repeats {arguments.repeats}" if arguments.repeats != 3
                                                    else "") + "`",
        "",
        "## Speed",
        "",
        *rows,
        "",
        f"All wall timings (s), in alternating pairs: tokenizers {', '.join(f'{t:.2f}' for t in tokenizer_times)}; "
        f"bertforge {', '.join(f'{t:.2f}' for t in prepare_times)}; per-pair ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}. CPU time counts every thread and worker process "
        "(tokenizers runs its Rust thread pool on all cores; bertforge one process per core), so it is the "
        "load-independent figure of the work done. On a busy machine a wall ratio below 1 is partly an "
        "artefact (separate processes get a larger share of contended cores than one process's threads); "
        "the CPU ratio is the figure to quote against the 1.5x goal.",
    ]
    if naive:
        report += ["", f"The naive port holds every document in memory: peak RSS {naive['rss_mb']:.0f} MB on this "
                   "8.45 MB corpus (it grows with the corpus)."]
    if memory:
        one, many = memory["1x"], memory[f"{arguments.copies}x"]
        report += [
            "",
            "## Memory",
            "",
            "Peak resident set size of `prepare_corpus` in a fresh process (main: the reading process; worker: "
            "the largest worker process).",
            "",
            "| input | size | time | main peak RSS | largest worker peak RSS | main + workers (upper bound) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        workers = arguments.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        for name, entry in (("1x", one), (f"{arguments.copies}x", many)):
            report.append(f"| {name} | {entry['bytes'] / 1e6:.1f} MB | {entry['seconds']:.1f} s | "
                          f"{entry['main_rss_mb']:.0f} MB | {entry['worker_rss_mb']:.0f} MB | "
                          f"{entry['main_rss_mb'] + workers * entry['worker_rss_mb']:.0f} MB |")
        report += ["", f"Ratio {arguments.copies}x / 1x: main {many['main_rss_mb'] / one['main_rss_mb']:.2f}, "
                       f"worker {many['worker_rss_mb'] / one['worker_rss_mb']:.2f} (goal: at most 1.3)."]
    text = "\n".join(report) + "\n"
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
