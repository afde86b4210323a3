"""The CLI generated from typed option dataclasses.

Each command is a dataclass of options plus a function that takes it. The parser is built
from the dataclass fields (as litgpt builds its CLI from typed signatures): each field of a
simple type becomes a `--flag`, every field can also be set from `--config FILE.yaml` or by a
dotted `key=value` override, and the result is checked by `bertforge.config.build_dataclass`.
Precedence: dataclass defaults < `--config` file < flags < dotted overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints

from bertforge.config import build_dataclass, deep_merge, load_yaml, merge_overrides


def option(default: Any = dataclasses.MISSING, *, help: str = "", positional: bool = False,
           default_factory: Any = dataclasses.MISSING, short: str | None = None) -> Any:
    """A dataclass field that carries its `--help` text (and whether it is positional)."""
    metadata = {"help": help, "positional": positional, "short": short}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Command:
    """One CLI command: `words` is its path (`("data", "prepare")`), `run` takes the options."""

    words: tuple[str, ...]
    options: type
    run: Callable[[Any], int | None]
    help: str
    examples: list[str] = field(default_factory=list)
    takes_overrides: bool = True
    """Whether trailing `key=value` dotted overrides are accepted."""


def _simple_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional; return (inner type, is_optional)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag_kwargs(tp: Any) -> dict[str, Any] | None:
    """argparse settings for a field type, or None when it is set only by config/overrides."""
    inner, _ = _simple_type(tp)
    origin = get_origin(inner)
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction}
    if inner in (int, float, str, Path):
        return {"metavar": {int: "N", float: "X", str: "TEXT", Path: "PATH"}[inner]}
    if origin is Literal:
        return {"choices": list(get_args(inner))}
    if origin in (list, tuple):
        return {"nargs": "*", "metavar": "VALUE"}
    return None


def build_parser(commands: list[Command], prog: str = "bertforge", description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    groups: dict[tuple[str, ...], Any] = {(): subparsers}
    group_parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for command in commands:
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                group_parser = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                group_parsers[prefix] = group_parser
                groups[prefix] = group_parser.add_subparsers(dest=f"verb{depth}", metavar="<verb>")
        epilog = ""
        if command.examples:
            epilog = "examples:\n" + "\n".join(f"  {example}" for example in command.examples)
        sub = groups[command.words[:-1]].add_parser(
            command.words[-1], help=command.help, description=command.help, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(_command=command)
        _add_options(sub, command)
    for prefix, group_parser in group_parsers.items():
        group_parser.set_defaults(_group=group_parser)
    parser.set_defaults(_group=parser)
    return parser


def _add_options(parser: argparse.ArgumentParser, command: Command) -> None:
    hints = get_type_hints(command.options)
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", default=None,
                        help="YAML file of options (flags and overrides win over it)")
    for f in fields(command.options):
        kwargs = _flag_kwargs(hints[f.name])
        if kwargs is None:
            continue
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if default not in (None, dataclasses.MISSING) and not isinstance(default, bool):
            help_text += f" (default: {default})"
        if f.metadata.get("positional"):
            kwargs.pop("action", None)
            parser.add_argument(f.name, help=help_text, default=argparse.SUPPRESS,
                                nargs=kwargs.pop("nargs", "?"), **kwargs)
            continue
        names = ["--" + f.name.replace("_", "-")]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        parser.add_argument(*names, dest=f.name, help=help_text, default=argparse.SUPPRESS, **kwargs)
    if command.takes_overrides:
        parser.add_argument("overrides", nargs="*", metavar="key=value", default=[],
                            help="dotted overrides, e.g. train.max_steps=100")


def resolve_options(command: Command, namespace: argparse.Namespace) -> Any:
    """Defaults < config file < flags < dotted overrides, checked into the options dataclass."""
    data: dict[str, Any] = {}
    config_path = getattr(namespace, "config", None)
    if config_path is not None:
        data = load_yaml(config_path)
    flags = {f.name: getattr(namespace, f.name) for f in fields(command.options) if hasattr(namespace, f.name)}
    positional = [f.name for f in fields(command.options) if f.metadata.get("positional")]
    overrides = list(getattr(namespace, "overrides", []) or [])
    # A list option (`--fill-mask A B`, positional texts) swallows nothing that looks like an
    # override: `--fill-mask train.max_steps=3` means no sentences and one override.
    for name in list(flags):
        value = flags.get(name)
        if isinstance(value, list) and command.takes_overrides:
            keep = [item for item in value if not looks_like_override(item)]
            overrides = [item for item in value if looks_like_override(item)] + overrides
            flags[name] = keep
        if flags.get(name) is None:
            flags.pop(name, None)
    data = deep_merge(data, flags)
    data = merge_overrides(data, overrides)
    return build_dataclass(command.options, data)


def looks_like_override(text: str) -> bool:
    key, sep, _ = text.partition("=")
    return bool(sep) and key.replace(".", "").replace("_", "").isalnum() and not key[:1].isdigit()
