"""bertforge: the whole life of a BERT model in one toolkit.

The public names are imported lazily so that `import bertforge` (and the CLI's `--help`)
stays fast and does not pull in torch until a model is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bertforge.version import __version__

_PUBLIC = {
    "BertConfig": "bertforge.config",
    "PRESETS": "bertforge.config",
    "BertModel": "bertforge.model",
    "BertForPreTraining": "bertforge.model",
    "BertForMaskedLM": "bertforge.model",
    "BertTokenizer": "bertforge.tokenizer",
    "BertforgeError": "bertforge.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from bertforge.config import PRESETS, BertConfig
    from bertforge.errors import BertforgeError
    from bertforge.model import BertForMaskedLM, BertForPreTraining, BertModel
    from bertforge.tokenizer import BertTokenizer


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bertforge' has no attribute {name!r}")
