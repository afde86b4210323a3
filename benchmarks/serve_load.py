"""Load test of `bertforge serve` over loopback: 500 requests from 50 concurrent clients
(httpx + asyncio), micro-batching on against off. Reports latency p50/p90/p99, requests/s, the
status codes (the run fails on any 5xx) and the mean number of requests per model call (from
/metrics).

Each mode runs in a fresh server process (`bertforge serve --model DIR [--no-micro-batching]`,
bound to 127.0.0.1), warmed up with 20 requests; the modes alternate (on, off, on, off, ...)
and the medians over rounds are reported, so that load from other processes hits both alike.
Requests are single SST-2 dev sentences for /v1/classify. Every loop is bounded: a fixed number
of requests, each with a timeout; only loopback addresses are contacted.

    python -m benchmarks.serve_load --model runs/sst2/final
    python -m benchmarks.serve_load --tiny            # a tiny random classifier with the BERT vocab
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("BERTFORGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
REPO = Path(__file__).resolve().parents[1]


def tiny_classifier(directory: Path) -> Path:
    import torch

    from bertforge.config import BertConfig
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tokenizer import BertTokenizer

    tokenizer = BertTokenizer(DATA / "vocab/bert-base-uncased-vocab.txt", lowercase=True)
    config = BertConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, id2label={0: "0", 1: "1"},
                                    problem_type="single_label_classification")
    config.extra = {"finetuning": {"task": "classify", "settings": {"max_length": 64}}}
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory, tokenizer=tokenizer)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(model: Path, micro_batching: bool, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    flag = "--micro-batching" if micro_batching else "--no-micro-batching"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "bertforge", "serve", "--model", str(model), "--port",
                                    str(port), flag, "--log-level", "warning", *extra], stdout=handle,
                                   stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


async def load(url: str, sentences: list[str], requests: int, clients: int) -> dict[str, Any]:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(sentences[index % len(sentences)])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while True:
            try:
                text = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            try:
                response = await client.post("/v1/classify", json={"texts": [text]})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"requests": requests, "clients": clients, "seconds": elapsed, "requests_per_second": requests / elapsed,
            "p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "statuses": statuses, "errors": errors}


def batch_stats(url: str) -> dict[str, float]:
    import httpx

    values = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    calls = values.get('bertforge_batches_total{endpoint="classify"}', 0.0)
    merged = values.get('bertforge_batch_requests_sum{endpoint="classify"}', 0.0)
    return {"model_calls": calls, "requests_per_call": merged / calls if calls else 0.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a fine-tuned classifier directory")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random classifier instead")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (alternating)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("serve_args", nargs="*", help="extra `bertforge serve` options, after --")
    args = parser.parse_args(argv)
    from benchmarks.common import load_average, machine_description

    import torch

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model
    if model is None:
        if not args.tiny:
            raise SystemExit("pass --model DIR (a fine-tuned classifier) or --tiny")
        model = tiny_classifier(work / "tiny")
    lines = (DATA / "glue/sst2/dev.tsv").read_text(encoding="utf-8").split("\n")[1:]
    sentences = [line.split("\t")[0].strip() for line in lines if line.strip()]
    results: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    load_before = load_average()
    for round_index in range(args.rounds):
        for mode in (("on", "off") if round_index % 2 == 0 else ("off", "on")):
            process, url = start(model, mode == "on", work / f"{mode}-{round_index}.log", args.serve_args)
            try:
                asyncio.run(load(url, sentences, 20, 4))  # warm-up
                before = batch_stats(url)
                outcome = asyncio.run(load(url, sentences, args.requests, args.clients))
                after = batch_stats(url)
                calls = after["model_calls"] - before["model_calls"]
                outcome["model_calls"] = calls
                outcome["requests_per_call"] = args.requests / calls if calls else 0.0
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            server_errors = sum(count for status, count in outcome["statuses"].items() if status >= 500)
            print(f"round {round_index} micro-batching {mode}: {outcome['requests_per_second']:.1f} req/s, "
                  f"p50 {outcome['p50_ms']:.0f} ms, p99 {outcome['p99_ms']:.0f} ms, statuses {outcome['statuses']}, "
                  f"{outcome['requests_per_call']:.1f} requests per model call", flush=True)
            if server_errors or outcome["errors"]:
                raise SystemExit(f"{server_errors} 5xx responses and errors {outcome['errors'][:5]}")
            results[mode].append(outcome)
    summary = {"machine": machine_description(torch.device("cpu")), "load_before": load_before,
               "load_after": load_average(), "model": str(model), "requests": args.requests, "clients": args.clients,
               "rounds": args.rounds, "modes": {}}
    print(f"\n| micro-batching | req/s | p50 ms | p90 ms | p99 ms | requests per model call | 5xx |")
    print("|---|---|---|---|---|---|---|")
    for mode, runs in results.items():
        medians = {key: statistics.median(run[key] for run in runs)
                   for key in ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "requests_per_call")}
        fives = sum(count for run in runs for status, count in run["statuses"].items() if status >= 500)
        summary["modes"][mode] = {**medians, "server_errors": fives, "runs": runs}
        print(f"| {mode} | {medians['requests_per_second']:.1f} | {medians['p50_ms']:.0f} | {medians['p90_ms']:.0f} | "
              f"{medians['p99_ms']:.0f} | {medians['requests_per_call']:.1f} | {fives} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
