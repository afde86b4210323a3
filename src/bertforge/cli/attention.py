"""`bertforge attention`: attention maps of one text as a PNG or an interactive HTML page
(see bertforge.explain.attention)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.fileio import OVERWRITE_HELP


@dataclass
class AttentionOptions:
    texts: list[str] = option(default_factory=list, positional=True, help="the text (one)")
    model: Path | None = option(None, help="model directory (default: runs/pretrain/final, `bertforge pretrain`'s)")
    out: Path | None = option(None, help="FILE.png (matplotlib) or FILE.html (interactive)")
    layer: int | None = option(None, help="layer (from 0); alone: the grid of its heads")
    head: int | None = option(None, help="head (from 0), with --layer: one map with token labels")
    text_pair: str | None = option(None, help="a second text, for sentence-pair models")
    max_length: int | None = option(None, help="tokens drawn, [CLS] and [SEP] included, at most the model's "
                                               "max_position_embeddings (default: 128, or that when smaller)")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run(options: AttentionOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.explain.attention import MAX_TOKENS, write_attention
    from bertforge.fileio import prepare_output
    from bertforge.tasks.loading import check_length, load_model

    if len(options.texts) != 1:
        raise BertforgeError(f"attention takes one text, got {len(options.texts)} (quote the sentence)")
    if options.out is None:
        raise BertforgeError("attention needs --out FILE.png or --out FILE.html")
    if options.out.suffix.lower() == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BertforgeError("PNG output needs matplotlib: pip install 'bertforge[plot]' "
                                 "(or write .html)") from None
    if options.max_length is not None and options.max_length < 3:
        raise BertforgeError("--max-length must be at least 3")
    prepare_output(options.out, kind="file", overwrite=options.overwrite)
    model = options.model or Path("runs/pretrain/final")
    loaded = load_model(model)
    if options.max_length is not None:
        check_length(options.max_length, loaded.config, "--max-length")
    max_length = options.max_length or min(MAX_TOKENS, loaded.config.max_position_embeddings)
    maps = write_attention(loaded, options.texts[0], options.out, text_pair=options.text_pair, layer=options.layer,
                           head=options.head, max_length=max_length)
    print(f"{options.out}: {maps.layers} layers x {maps.heads} heads over {len(maps.tokens)} tokens")
    return 0


COMMANDS = [Command(
    ("attention",), AttentionOptions, run,
    "draw a model's attention maps for one text (PNG grid or one head, or an interactive HTML page)",
    examples=["bertforge attention 'The cat sat on the mat.' --out attention.png",
              "bertforge attention --model runs/sst2/final 'a gripping film' --layer 1 --head 0 --out head.png",
              "bertforge attention --model runs/sst2/final 'a gripping film' --out attention.html"])]
