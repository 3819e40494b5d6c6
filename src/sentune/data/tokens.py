"""Tokenize every split once, untruncated, and cache the token ids on disk, so that every trial
of a search (and the next search on the same data) reuses them.

The cache is keyed by the data fingerprint and the tokenizer (`tokenizer_key`); a folder is
written whole, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sentune.data.load import SPLITS
from sentune.errors import DataError

logger = logging.getLogger(__name__)

_TOKENIZE_BATCH = 1000

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def tokenizer_key(tokenizer_path: str) -> str:
    """Hash of the tokenizer's name and its files (a local folder) or vocabulary size (a hub id)."""
    digest = hashlib.sha256(str(tokenizer_path).encode())
    folder = Path(tokenizer_path).expanduser()
    if folder.is_dir():
        for name in _TOKENIZER_FILES:
            if (folder / name).is_file():
                digest.update(name.encode() + (folder / name).read_bytes())
    else:
        digest.update(str(len(_load_tokenizer(tokenizer_path))).encode())
    return digest.hexdigest()[:12]


def _load_tokenizer(tokenizer_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tokenizer_path, use_fast=True)
    except (OSError, ValueError) as exc:
        first_line = (str(exc).splitlines() or [""])[0][:160]
        raise DataError(
            f"cannot load the tokenizer '{tokenizer_path}' ({first_line}); there is no hub access "
            "here: use a local model folder or the registered model 'minilm'"
        ) from None


def tokenize(
    frames: dict[str, pd.DataFrame], tokenizer_path: str
) -> tuple[dict[str, list[np.ndarray]], int]:
    """Token ids of every split, and the tokenizer's padding id."""
    tokenizer = _load_tokenizer(tokenizer_path)
    out = {}
    for name in SPLITS:
        texts = frames[name]["text"].tolist()
        flat: list[int] = []
        lengths: list[int] = []
        for start in range(0, len(texts), _TOKENIZE_BATCH):
            # verbose=False: sequences longer than the model maximum are intended (cut per trial).
            encoded = tokenizer(
                texts[start : start + _TOKENIZE_BATCH],
                add_special_tokens=True,
                truncation=False,
                verbose=False,
            )["input_ids"]
            for ids in encoded:
                flat.extend(ids)
                lengths.append(len(ids))
        out[name] = _unflatten(np.asarray(flat, dtype=np.int32), np.asarray(lengths))
    logger.info(
        "tokenized %s texts with %s",
        ", ".join(f"{len(v)} {n}" for n, v in out.items()),
        Path(tokenizer_path).name or tokenizer_path,
    )
    return out, int(tokenizer.pad_token_id or 0)


def _unflatten(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def read_cache(
    folder: Path, sizes: dict[str, int]
) -> tuple[dict[str, list[np.ndarray]], int] | None:
    if not folder.is_dir():
        return None
    try:
        pad_id = int(json.loads((folder / "meta.json").read_text())["pad_id"])
        out = {}
        for name in SPLITS:
            flat = np.load(folder / f"{name}.ids.npy", allow_pickle=False)
            lengths = np.load(folder / f"{name}.lengths.npy", allow_pickle=False)
            if len(lengths) != sizes[name] or lengths.sum() != len(flat):
                raise ValueError(f"{name}: {len(lengths)} lengths for {sizes[name]} texts")
            out[name] = _unflatten(flat, lengths)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable token cache %s (%s)", folder, exc)
        return None
    return out, pad_id


def write_cache(folder: Path, ids: dict[str, list[np.ndarray]], meta: dict) -> None:
    """Write the cache folder whole, then rename it into place, so readers never see half of it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, arrays in ids.items():
            lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
            flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int32)
            np.save(tmp / f"{name}.ids.npy", flat.astype(np.int32, copy=False))
            np.save(tmp / f"{name}.lengths.npy", lengths)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():
            shutil.rmtree(folder)  # a stale, unreadable cache
        os.replace(tmp, folder)
    except OSError as exc:
        # Another process may have written the same cache first; theirs is as good as ours.
        logger.debug("token cache %s not written (%s)", folder, exc)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
