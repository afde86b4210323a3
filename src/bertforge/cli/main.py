"""`bertforge <command> [<verb>]`: the entry point.

Command modules are listed in `COMMAND_MODULES`; each defines `COMMANDS`, a list of
`bertforge.cli.command.Command`. They import torch and friends only inside their run
functions, so `bertforge --help` stays fast. A `BertforgeError` is printed on one line as
`error: <message>` with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from importlib import import_module

from bertforge.cli.command import Command, looks_like_override, build_parser, resolve_options
from bertforge.errors import BertforgeError

COMMAND_MODULES = (
    "info",
    "tokenizer",
    "data",
    "pretrain",
    "finetune",
    "serve",
    "export",
    "compress",
    "attention",
    "plot",
)

DESCRIPTION = """\
bertforge: the whole life of a BERT model.

Every command takes --config FILE.yaml and dotted key=value overrides;
`bertforge <command> --help` shows its options and examples."""


def available_commands() -> list[Command]:
    commands: list[Command] = []
    for name in COMMAND_MODULES:
        commands.extend(import_module(f"bertforge.cli.{name}").COMMANDS)
    return commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(available_commands(), description=DESCRIPTION)
    # Overrides may come on either side of flags (`a=1 --quiet b=2`); argparse alone would take
    # only the first run of positionals, so the rest are collected here.
    namespace, extra = parser.parse_known_args(argv)
    command: Command | None = getattr(namespace, "_command", None)
    if extra:
        if command is None or not command.takes_overrides or not all(looks_like_override(item) for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        namespace.overrides = list(getattr(namespace, "overrides", []) or []) + extra
    if command is None:
        namespace._group.print_help()
        return 0 if not argv or argv[-1] in ("-h", "--help") else 2
    try:
        options = resolve_options(command, namespace)
        status = command.run(options)
    except BertforgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
