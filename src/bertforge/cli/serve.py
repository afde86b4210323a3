"""`bertforge serve`: put a model directory behind an HTTP API on loopback (see bertforge.serve)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.serve.settings import ServeSettings


@dataclass(kw_only=True)
class ServeOptions(ServeSettings):
    """`bertforge serve`'s options: `ServeSettings` itself, plus the model directory."""

    model: Path | None = option(None, help="model directory: a fine-tuned task model, a pretrained model, "
                                           "or an encoder")


def run(options: ServeOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.serve.server import serve

    if options.model is None:
        raise BertforgeError("serve needs --model DIR")
    serve(options.model, ServeSettings(**{f.name: getattr(options, f.name) for f in fields(ServeSettings)}))
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
