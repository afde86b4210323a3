"""The one progress bar: tqdm on stderr, or a do-nothing stand-in when it is off.

Low in the layers (it imports nothing of bertforge), so data preparation and the trainer share
it without data importing train.
"""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, initial: int = 0, enabled: bool = True, description: str = "", *,
                 unit: str = "step", unit_scale: bool = False, mininterval: float = 1.0) -> Any:
    """A tqdm bar on stderr, or a `NoBar` when not `enabled` (no terminal, a non-main rank).

    `unit_scale` shows large counts with SI prefixes in powers of 1000 (bytes as kB, MB).
    """
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm

    scale = {"unit_scale": True, "unit_divisor": 1000} if unit_scale else {}
    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True,
                file=sys.stderr, mininterval=mininterval, **scale)


class NoBar:
    """The bar's methods, doing nothing."""

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
