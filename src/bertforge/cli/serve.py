"""`bertforge serve`: put a model directory behind an HTTP API on loopback (see bertforge.serve)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from bertforge.cli.command import Command, option


@dataclass
class ServeOptions:
    model: Path | None = option(None, help="model directory: fine-tuned (classify, ner, qa), pretrained, or an encoder")
    host: str = option("127.0.0.1", help="address to bind (loopback by default)")
    port: int = option(8000, help="port (0: any free port)")
    backend: Literal["torch", "onnx"] = option("torch", help="PyTorch, or onnxruntime on MODEL/model.onnx")
    onnx_file: Path | None = option(None, help="ONNX graph for --backend onnx (default MODEL/model.onnx)")
    device: str = option("cpu", help="cpu, cuda, cuda:1 ... (torch backend)")
    threads: int | None = option(None, help="intra-op threads (default: the library's)")
    micro_batching: bool = option(True, help="merge requests that arrive together into one forward pass")
    batch_size: int = option(32, help="most inputs in one merged forward pass")
    max_wait_ms: float = option(5.0, help="how long a request may wait for others to join its batch")
    max_items: int = option(64, help="most inputs per request (more: 413)")
    max_text_chars: int = option(10000, help="longest text in characters (longer: 413)")
    max_body_bytes: int = option(1000000, help="largest request body in bytes (larger: 413)")
    max_attention_tokens: int = option(64, help="tokens shown by /v1/attention and /attention")
    graceful_timeout: float = option(30.0, help="seconds in-flight requests get after SIGTERM")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = option("info", help="uvicorn's log level")


def run(options: ServeOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.serve.server import serve
    from bertforge.serve.settings import ServeSettings

    if options.model is None:
        raise BertforgeError("serve needs --model DIR")
    values = {f.name: getattr(options, f.name) for f in fields(ServeSettings)}
    values["onnx_file"] = None if options.onnx_file is None else str(options.onnx_file)
    serve(options.model, ServeSettings(**values))
    return 0


COMMANDS = [Command(
    ("serve",), ServeOptions, run,
    "serve a model over HTTP: /v1/<task> (classify, ner, qa ...), /v1/fill-mask|embed, /attention, /healthz, "
    "/metrics, /docs",
    examples=[
        "bertforge serve --model runs/sst2/final",
        "bertforge serve --model runs/pretrain/final --port 8080       # fill-mask, embed, attention",
        "bertforge serve --model runs/sst2/final --backend onnx         # after bertforge export onnx",
        "bertforge serve --model runs/sst2/final --no-micro-batching",
        "curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{\"texts\": [\"a fine film\"]}'",
    ])]
