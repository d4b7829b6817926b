"""Progress bars on stderr, off the hot path, switchable for CI logs."""

from __future__ import annotations

import os
from typing import Any


def progress_bar(total: int, desc: str, unit: str = "it") -> Any:
    from tqdm.auto import tqdm

    disabled = os.environ.get("EVALHARNESS_NO_PROGRESS", "") not in ("", "0")
    return tqdm(total=total, desc=desc, unit=unit, mininterval=1.0, disable=disabled or None)
