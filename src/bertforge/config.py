"""Typed configs: the BERT architecture (`BertConfig`), the presets table, and the loader that
turns YAML recipes plus dotted command-line overrides into checked dataclasses.

`BertConfig` reads and writes Hugging Face's `config.json`. Keys it does not know are kept in
`extra` and written back, so a round trip through bertforge never drops information.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Collection, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

from bertforge.errors import BertforgeError

IGNORE_INDEX = -100
"""Label value that the masked-LM, NSP and token-classification losses skip."""


class ConfigKeyError(BertforgeError):
    """A bad value (or an unknown key) in a config; `key` is its dotted name, so a loader that
    knows where the key sits in its YAML file can name the file and line (`located`)."""

    def __init__(self, message: str, *, key: str):
        super().__init__(message)
        self.key = key


@dataclass
class BertConfig:
    """The BERT architecture, field for field the Hugging Face `config.json` of a BERT model."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    """Exact (erf) GELU, as in the paper's TF code. `gelu_new`/`gelu_pytorch_tanh` use tanh."""
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    """Standard deviation of the truncated-free normal init, as in google-research/bert."""
    pad_token_id: int = 0
    classifier_dropout: float | None = None
    """Dropout before a task head; None means `hidden_dropout_prob` (as in transformers)."""
    id2label: dict[int, str] | None = None
    """Label names of a task head, written to config.json so transformers shows them too."""
    problem_type: str | None = None
    """`single_label_classification`, `multi_label_classification` or `regression`."""
    sparse_prediction: bool = True
    """Compute masked-LM logits only where labels != -100 (google-research/bert's gather)."""
    fused_qkv: bool = True
    """One (H, 3H) projection for query, key and value; saved as HF's three separate tensors."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every config.json key bertforge does not use, kept verbatim for the round trip."""

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BertforgeError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise BertforgeError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise BertforgeError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise BertforgeError(
                f"BertConfig.hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise BertforgeError(f"BertConfig.pad_token_id {self.pad_token_id} is outside the vocab")
        if self.id2label is not None:
            self.id2label = _checked_id2label(self.id2label)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in (self.id2label or {}).items()}

    # -- Hugging Face config.json ---------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BertConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(data.get("extra", {}) or {})
        hints = get_type_hints(cls)
        for key, value in data.items():
            if key == "extra":
                continue
            if key == "id2label":
                kwargs[key] = value  # checked by __post_init__, which names what is wrong with it
            elif key in known:
                kwargs[key] = _coerce(value, hints[key], key)
            elif key == "label2id":
                _check_label2id(value)  # derived from id2label, but a malformed one is the file's fault
            elif key == "model_type" and value == "bert":
                continue  # written back by to_dict
            else:
                extra[key] = value
        if "sparse_prediction" not in data and "bertforge" in extra:
            switches = extra.pop("bertforge")
            if not isinstance(switches, Mapping):
                raise ConfigKeyError(f"bertforge: expected a mapping, got {switches!r}", key="bertforge")
            kwargs.update({k: _coerce(v, hints[k], f"bertforge.{k}") for k, v in switches.items() if k in known})
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BertforgeError("config file not found", path=path) from None
        except NotADirectoryError:
            model_directory(path.parent)  # a file where the model directory should be: says so
            raise BertforgeError("cannot read the config file", path=path) from None
        except IsADirectoryError:
            raise BertforgeError("is a directory, expected a config.json file", path=path) from None
        except OSError as error:
            raise BertforgeError(f"cannot read the config file: {error.strerror}", path=path) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            line = getattr(error, "lineno", None)
            raise BertforgeError(f"not a valid JSON config ({error.__class__.__name__}: "
                                 f"{getattr(error, 'msg', error)})", path=path, line=line) from None
        if not isinstance(data, dict):
            raise BertforgeError("config.json must hold a JSON object", path=path)
        try:
            return cls.from_dict(data)
        except TypeError as error:
            raise BertforgeError(f"bad config: {error}", path=path) from None
        except BertforgeError as error:
            raise BertforgeError(str(error), path=path) from None

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config.json content (bertforge-only switches under `bertforge`)."""
        data: dict[str, Any] = dict(self.extra)
        data.setdefault("model_type", "bert")
        for f in fields(self):
            if f.name in ("extra", "sparse_prediction", "fused_qkv", "id2label", "problem_type"):
                continue
            data[f.name] = getattr(self, f.name)
        if self.id2label is not None:
            data["id2label"] = {str(key): value for key, value in self.id2label.items()}
            data["label2id"] = self.label2id
        if self.problem_type is not None:
            data["problem_type"] = self.problem_type
        data["bertforge"] = {"sparse_prediction": self.sparse_prediction, "fused_qkv": self.fused_qkv}
        return data

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BertConfig":
        if name not in PRESETS:
            raise BertforgeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> "BertConfig":
        return dataclasses.replace(self, **changes)


def model_directory(path: str | Path) -> Path:
    """`path` as a model directory (config.json and weights), or a one-line error naming it."""
    path = Path(path)
    if path.is_file():
        raise BertforgeError("is a file, expected a model directory (the folder that holds config.json)", path=path)
    if not path.is_dir():
        raise BertforgeError("model directory not found", path=path)
    return path


def _checked_id2label(id2label: Any) -> dict[int, str]:
    """`id2label` with integer keys (config.json writes them as strings), or a one-line error."""
    if not isinstance(id2label, Mapping):
        raise ConfigKeyError(f"id2label: expected a mapping of label ids to names, got {id2label!r}", key="id2label")
    checked: dict[int, str] = {}
    for key, value in id2label.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigKeyError(f"id2label: key {key!r} is not an integer label id", key="id2label") from None
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigKeyError(f"id2label: the name of label {key} must be a string, got {value!r}", key="id2label")
        checked[index] = str(value)
    return checked


def _check_label2id(label2id: Any) -> None:
    """config.json's `label2id` (ignored: derived from id2label) must at least be well-formed."""
    if not isinstance(label2id, Mapping):
        raise ConfigKeyError(f"label2id: expected a mapping of label names to ids, got {label2id!r}", key="label2id")
    for name, index in label2id.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigKeyError(f"label2id: the id of label {name!r} must be an integer, got {index!r}",
                                 key="label2id")


def _changes_class() -> type:
    """`BertConfigChanges`: every architecture field of `BertConfig` as an optional override."""
    hints = get_type_hints(BertConfig)
    specs = [(f.name, hints[f.name] | None, field(default=None)) for f in fields(BertConfig)
             if f.name not in _NOT_CHANGEABLE]

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set (not None), as BertConfig keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    cls = dataclasses.make_dataclass("BertConfigChanges", specs, namespace={
        "as_dict": as_dict, "__doc__": "Changes to a preset's (or a checkpoint's) BertConfig; None: unchanged. "
                                       "Written to YAML without the unset fields."})
    cls.__module__ = __name__
    cls.omit_none = True
    return cls


_NOT_CHANGEABLE = ("vocab_size", "id2label", "problem_type", "extra")
"""vocab_size comes from the data's vocab; labels and `extra` belong to task heads and config.json."""
BertConfigChanges = _changes_class()


ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")

# Turc et al. 2019 ("Well-Read Students Learn Better"): the 24 compact BERTs. The FFN is 4H and
# the head size is 64, as in BERT itself.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}


def count_parameters(config: BertConfig, with_heads: bool = True) -> int:
    """Exact parameter count of BertModel (plus the MLM/NSP heads), computed without building it."""
    hidden, inter = config.hidden_size, config.intermediate_size
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden  # q, k, v, out + LayerNorm
    layer += hidden * inter + inter + inter * hidden + hidden + 2 * hidden  # FFN + LayerNorm
    pooler = hidden * hidden + hidden
    total = embeddings + config.num_hidden_layers * layer + pooler
    if with_heads:
        # MLM transform + LayerNorm + output bias (decoder weight is tied) + NSP classifier.
        total += hidden * hidden + hidden + 2 * hidden + config.vocab_size + 2 * hidden + 2
    return total


# -- recipes: YAML plus dotted overrides into nested dataclasses ------------------------------

T = TypeVar("T")


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) `value` against the annotation `tp`; raise on a mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except BertforgeError as error:
                errors.append(str(error))
        raise ConfigKeyError(f"{where}: expected {_describe(tp)}, got {value!r}", key=where)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigKeyError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}", key=where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigKeyError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}", key=where)
        return build_dataclass(tp, value, prefix=where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigKeyError(f"{where}: expected a list, got {value!r}", key=where)
        (item_type, *_) = get_args(tp) or (Any,)
        items = [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigKeyError(f"{where}: expected a mapping, got {value!r}", key=where)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigKeyError(f"{where}: expected a boolean, got {value!r}", key=where)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigKeyError(f"{where}: expected an integer, got {value!r}", key=where)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigKeyError(f"{where}: expected an integer, got {value!r}", key=where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigKeyError(f"{where}: expected a number, got {value!r}", key=where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigKeyError(f"{where}: expected a string, got {value!r}", key=where)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigKeyError(f"{where}: expected a path, got {value!r}", key=where)
    return value


def build_dataclass(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build `cls` from a mapping, checking every key and type; unknown keys are errors."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigKeyError(f"unknown config key {where!r}{hint}", key=where)
        kwargs[key] = _coerce(value, hints[key], where)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigKeyError(f"{prefix or cls.__name__}: {error}", key=prefix) from None
    except BertforgeError as error:
        # A section's own check names the field; the prefix says which section it sits in.
        if isinstance(error, ConfigKeyError) or error.path is not None:
            raise
        if not prefix:
            raise ConfigKeyError(str(error), key=_leading_key(str(error))) from None
        if str(error).startswith(prefix.split(".")[0]):
            raise ConfigKeyError(str(error), key=_leading_key(str(error)) or prefix) from None
        raise ConfigKeyError(f"{prefix}.{error}", key=prefix) from None


def _leading_key(message: str) -> str:
    """The dotted key a check's message starts with (`settings.max_length must ...`), or ""."""
    match = re.match(r"[A-Za-z_][\w.]*(\[\d+\])?", message)
    return "" if match is None else match.group(0).rstrip(".:")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` into (["a", "b", "c"], value), with the value parsed as YAML."""
    import yaml

    if "=" not in text:
        raise BertforgeError(f"override {text!r} must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise BertforgeError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides onto a nested dict (a copy); keys are checked later by the dataclass."""
    result = json.loads(json.dumps(data, default=str)) if data else {}
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise BertforgeError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (a one-line error naming the file otherwise)."""
    return load_yaml_lines(path)[0]


def load_yaml_lines(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML config file's mapping, and the line of every dotted key in it (`train.batch_size`,
    `data.inputs[0]`), so that a bad value can be reported as FILE:LINE (`located`)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise BertforgeError("is a directory, expected a YAML config file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BertforgeError("config file not found", path=path) from None
    except UnicodeDecodeError:
        raise BertforgeError("config file is not UTF-8 text", path=path) from None
    except OSError as error:
        raise BertforgeError(f"cannot read config file: {error.strerror}", path=path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise BertforgeError(f"invalid YAML: {getattr(error, 'problem', error)}", path=path,
                             line=None if mark is None else mark.line + 1) from None
    if not isinstance(data, dict):
        raise BertforgeError("a config file must hold a mapping at the top level", path=path)
    lines: dict[str, int] = {}
    _node_lines(node, "", lines)
    return data, lines


def _node_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    """Record the line of each key (and list item) under a composed YAML node."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _node_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[f"{prefix}[{index}]"] = item.start_mark.line + 1
            _node_lines(item, f"{prefix}[{index}]", lines)


def command_line_keys(flags: Mapping[str, Any], overrides: list[str]) -> set[str]:
    """The dotted keys that nested flag values and `key=value` overrides set."""
    keys = {text.split("=", 1)[0].strip().lstrip("-") for text in overrides if "=" in text}

    def walk(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            keys.add(dotted)
            if isinstance(value, Mapping):
                walk(value, dotted)

    walk(flags, "")
    return keys


def located(error: BertforgeError, path: str | Path, lines: Mapping[str, int],
            command_line: Collection[str] = ()) -> BertforgeError:
    """`error` as FILE:LINE when it is about a key the YAML file set (and the command line did
    not); the file alone when its key is unknown; unchanged when the command line set it."""
    key = getattr(error, "key", "") or _leading_key(str(error))
    candidates = [key]
    while "." in candidates[-1] or "[" in candidates[-1]:
        shorter = candidates[-1].rsplit("[", 1)[0] if candidates[-1].endswith("]") else candidates[-1].rsplit(".", 1)[0]
        candidates.append(shorter)
    for candidate in candidates:
        if candidate in command_line:
            return error
        if candidate in lines:
            return BertforgeError(str(error), path=path, line=lines[candidate])
    return BertforgeError(str(error), path=path)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: Mapping[str, Any] | None = None) -> T:
    """Defaults, then the YAML file, then dotted overrides, into a checked `cls`."""
    data: dict[str, Any] = dict(defaults or {})
    lines: dict[str, int] = {}
    if path is not None:
        loaded, lines = load_yaml_lines(path)
        data = deep_merge(data, loaded)
    data = merge_overrides(data, overrides or [])
    try:
        return build_dataclass(cls, data)
    except BertforgeError as error:
        if path is not None and error.path is None:
            raise located(error, path, lines, command_line_keys({}, overrides or [])) from None
        raise


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        omit_none = getattr(obj, "omit_none", False)
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)
                if not (omit_none and getattr(obj, f.name) is None)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): to_plain(value) for key, value in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
