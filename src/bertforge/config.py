"""Typed configs: the BERT architecture (`BertConfig`), the presets table, and the loader that
turns YAML recipes plus dotted command-line overrides into checked dataclasses.

`BertConfig` reads and writes Hugging Face's `config.json`. Keys it does not know are kept in
`extra` and written back, so a round trip through bertforge never drops information.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

from bertforge.errors import BertforgeError

IGNORE_INDEX = -100
"""Label value that the masked-LM, NSP and token-classification losses skip."""


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
            self.id2label = {int(key): str(value) for key, value in self.id2label.items()}

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
        for key, value in data.items():
            if key == "extra":
                continue
            if key in known:
                kwargs[key] = value
            elif key == "label2id":
                continue  # derived from id2label
            elif key == "model_type" and value == "bert":
                continue  # written back by to_dict
            else:
                extra[key] = value
        if "sparse_prediction" not in data and "bertforge" in extra:
            kwargs.update({k: v for k, v in extra.pop("bertforge").items() if k in known})
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BertforgeError("config file not found", path=path) from None
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
        raise BertforgeError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise BertforgeError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BertforgeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build_dataclass(tp, value, prefix=where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise BertforgeError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = get_args(tp) or (Any,)
        items = [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise BertforgeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise BertforgeError(f"{where}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise BertforgeError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise BertforgeError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise BertforgeError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise BertforgeError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise BertforgeError(f"{where}: expected a path, got {value!r}")
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
            raise BertforgeError(f"unknown config key {where!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], where)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise BertforgeError(f"{prefix or cls.__name__}: {error}") from None
    except BertforgeError as error:
        # A section's own check names the field; the prefix says which section it sits in.
        if not prefix or error.path is not None or str(error).startswith(prefix.split(".")[0]):
            raise
        raise BertforgeError(f"{prefix}.{error}") from None


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
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BertforgeError("config file not found", path=path) from None
    except UnicodeDecodeError:
        raise BertforgeError("config file is not UTF-8 text", path=path) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise BertforgeError(f"invalid YAML: {getattr(error, 'problem', error)}", path=path,
                             line=None if mark is None else mark.line + 1) from None
    if not isinstance(data, dict):
        raise BertforgeError("a config file must hold a mapping at the top level", path=path)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: Mapping[str, Any] | None = None) -> T:
    """Defaults, then the YAML file, then dotted overrides, into a checked `cls`."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    data = merge_overrides(data, overrides or [])
    try:
        return build_dataclass(cls, data)
    except BertforgeError as error:
        if path is not None:
            raise BertforgeError(str(error), path=path) from None
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
