"""The CLI generated from typed option dataclasses.

Each command is a dataclass of options plus a function that takes it. The parser is built
from the dataclass fields (as litgpt builds its CLI from typed signatures): each field of a
simple type becomes a `--flag`, every field can also be set from `--config FILE.yaml` or by a
dotted `key=value` override, and the result is checked by `bertforge.config.build_dataclass`.
Precedence: dataclass defaults < `--config` file < flags < dotted overrides.

The options dataclass is usually a library config itself, or a subclass adding a few CLI-only
switches (`bertforge data prepare` is `PrepareConfig` plus `--quiet`), so no setting is copied:
the `--help` text of a field is its `option(help=...)`, else the docstring written under it in
the library class. A command with `section_flags` also gets dotted flags for the fields of its
nested dataclass sections (`--masking.masked-lm-prob 0.2`); the others set sections with
overrides only (`train.max_steps=100`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints

from bertforge.config import build_dataclass, command_line_keys, deep_merge, load_yaml_lines, located, merge_overrides
from bertforge.errors import BertforgeError


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
    section_flags: bool = False
    """Give the fields of nested dataclass sections dotted flags (`--masking.masked-lm-prob`)."""
    flag_names: dict[str, str] = field(default_factory=dict)
    """A field's flag when it is not `--field-name` (`{"inputs": "--input"}`)."""
    defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Completes the merged raw options before they are checked (a recipe's defaults that
    depend on what was asked for); the whole typed tree is then built at once."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a dataclass (and its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _help_of(cls: type, f: dataclasses.Field) -> str:
    return (f.metadata.get("help") or field_docs(cls).get(f.name, "")).rstrip(".")


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
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", default=None,
                        help="YAML file of options (flags and overrides win over it)")
    _add_fields(parser, command, command.options, "")
    if command.takes_overrides:
        parser.add_argument("overrides", nargs="*", metavar="key=value", default=[],
                            help="dotted overrides, e.g. train.max_steps=100")


def _add_fields(parser: argparse.ArgumentParser, command: Command, cls: type, prefix: str) -> None:
    """A flag for each simple field of `cls`; with `section_flags`, dotted ones for its sections."""
    hints = get_type_hints(cls)
    # Required options first in --help (a subclass's kw-only fields come after its base's).
    ordered = sorted(fields(cls), key=lambda f: f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING)
    for f in ordered:
        if not f.init:
            continue
        dest = prefix + f.name
        kwargs = _flag_kwargs(hints[f.name])
        if kwargs is None:
            inner, _ = _simple_type(hints[f.name])
            if command.section_flags and dataclasses.is_dataclass(inner):
                _add_fields(parser, command, inner, dest + ".")
            continue
        help_text = _help_of(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default not in (None, dataclasses.MISSING) and not isinstance(default, bool):
            help_text += f" (default: {default})"
        if f.metadata.get("positional"):
            kwargs.pop("action", None)
            parser.add_argument(f.name, help=help_text, default=argparse.SUPPRESS,
                                nargs=kwargs.pop("nargs", "?"), **kwargs)
            continue
        names = [command.flag_names.get(dest, "--" + dest.replace("_", "-"))]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        parser.add_argument(*names, dest=dest, help=help_text, default=argparse.SUPPRESS, **kwargs)


def _flag_values(cls: type, namespace: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The flags given on the command line, nested as the dataclass sections are."""
    values: dict[str, Any] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        dest = prefix + f.name
        if hasattr(namespace, dest):
            values[f.name] = getattr(namespace, dest)
            continue
        inner, _ = _simple_type(hints[f.name])
        if dataclasses.is_dataclass(inner):
            nested = _flag_values(inner, namespace, dest + ".")
            if nested:
                values[f.name] = nested
    return values


def _check_required(command: Command, data: dict[str, Any]) -> None:
    """A missing required option is a one-line error naming its flag."""
    for f in fields(command.options):
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.init and missing and data.get(f.name) in (None, "", []):
            flag = command.flag_names.get(f.name, "--" + f.name.replace("_", "-"))
            raise BertforgeError(f"no {f.name}: pass {flag} ({_help_of(command.options, f)})")


def resolve_options(command: Command, namespace: argparse.Namespace) -> Any:
    """Defaults < config file < flags < dotted overrides, checked into the options dataclass."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    config_path = getattr(namespace, "config", None)
    if config_path is not None:
        data, lines = load_yaml_lines(config_path)
    flags = _flag_values(command.options, namespace)
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
    if command.defaults is not None:
        data = command.defaults(data)
    _check_required(command, data)
    try:
        return build_dataclass(command.options, data)
    except BertforgeError as error:
        if config_path is None or error.path is not None:
            raise
        # A bad value from the file is reported at its line; one from the command line is not.
        raise located(error, config_path, lines, command_line_keys(flags, overrides)) from None


def looks_like_override(text: str) -> bool:
    key, sep, _ = text.partition("=")
    return bool(sep) and key.replace(".", "").replace("_", "").isalnum() and not key[:1].isdigit()
