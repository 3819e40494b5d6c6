"""Writes of a run's files (and of the analysis derived from it) that land whole or not at all:
a temporary file beside the target, then a rename, so that a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def write_text(path: Path, text: str) -> Path:
    """Write a file whole or not at all (a temporary file beside it, then a rename)."""
    return write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a file's bytes whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def write_json(path: Path, value: Any) -> Path:
    """Write JSON whole or not at all."""
    return write_text(path, json.dumps(value, indent=1, default=str))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as CSV whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path
