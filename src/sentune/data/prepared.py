"""The prepared data of a search: `prepare` loads the splits (`splits.load_splits`), then
tokenizes them once (`tokens`), untruncated, into a `PreparedData` of three `Split`s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from sentune.config import CACHE_DIR, DataConfig
from sentune.data.batching import truncate
from sentune.data.load import SPLITS
from sentune.data.splits import load_splits
from sentune.data.tokens import read_cache, tokenize, tokenizer_key, write_cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Split:
    """One split: texts, label ids and untruncated token ids (with the special tokens)."""

    texts: list[str]
    labels: np.ndarray
    input_ids: list[np.ndarray]

    @cached_property
    def lengths(self) -> np.ndarray:
        """Token count of each text, special tokens included."""
        return np.fromiter(
            (len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids)
        )

    def __len__(self) -> int:
        return len(self.texts)

    def truncated(self, max_length: int, strategy: str = "head") -> list[np.ndarray]:
        """Token ids cut to `max_length`, keeping [CLS] first and [SEP] last.

        Args:
            max_length: The most tokens per text, special tokens included (at least 2).
            strategy: Which text tokens are kept: `head`, `tail` or `head_tail`
                (see `batching.truncate`).

        Returns:
            One int32 array per text; texts that fit are returned unchanged (not copied).
        """
        return [truncate(ids, max_length, strategy) for ids in self.input_ids]


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The cleaned, split and tokenized data of a search.

    Attributes:
        train, validation, test: The three splits; the search never looks at `test`.
        label_names: Label names, sorted; the index is the label id.
        stats: JSON-serialisable record of how the data was made (see `load_splits`).
        fingerprint: Hash of the cleaned, split data and the data config.
        tokenizer: The tokenizer name or path used for `input_ids`.
        pad_id: The tokenizer's padding id, for batching.
    """

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    stats: dict
    fingerprint: str
    tokenizer: str
    pad_id: int


def prepare(
    cfg: DataConfig, tokenizer_path: str, *, cache_dir: str | Path = CACHE_DIR
) -> PreparedData:
    """Load the splits, then tokenize them once (untruncated), caching the ids on disk.

    The cache is keyed by the data fingerprint and the tokenizer (its name, plus a hash of its
    files for a local folder or its vocabulary size otherwise). With a local tokenizer folder a
    second call loads the ids without loading the tokenizer; a hub id is loaded to read its
    vocabulary size.

    Args:
        cfg: The data settings.
        tokenizer_path: A local tokenizer folder or a hub name, for `AutoTokenizer`.
        cache_dir: Where token ids are cached.

    Returns:
        The prepared data; `stats["train_token_lengths"]` holds train length percentiles.
    """
    frames, stats = load_splits(cfg)
    fingerprint = stats["fingerprint"]
    label_names = stats["label_names"]
    folder = Path(cache_dir) / f"{fingerprint}-{tokenizer_key(tokenizer_path)}"
    sizes = {name: len(frames[name]) for name in SPLITS}
    cached = read_cache(folder, sizes)
    if cached is None:
        ids, pad_id = tokenize(frames, tokenizer_path)
        meta = {"fingerprint": fingerprint, "tokenizer": tokenizer_path, "pad_id": pad_id}
        write_cache(folder, ids, meta)
    else:
        ids, pad_id = cached
        logger.info("token ids of %s read from cache %s", cfg.dataset, folder)
    label_ids = {name: i for i, name in enumerate(label_names)}
    splits = {
        name: Split(
            texts=frames[name]["text"].tolist(),
            labels=frames[name]["label"].map(label_ids).to_numpy(dtype=np.int64),
            input_ids=ids[name],
        )
        for name in SPLITS
    }
    stats = {
        **stats,
        "tokenizer": tokenizer_path,
        "train_token_lengths": _percentiles(splits["train"].lengths),
    }
    return PreparedData(
        **splits,
        label_names=label_names,
        stats=stats,
        fingerprint=fingerprint,
        tokenizer=tokenizer_path,
        pad_id=pad_id,
    )


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if not len(lengths):
        return {}
    points = np.percentile(lengths, [50, 90, 95, 99])
    return {
        **{f"p{p}": int(np.ceil(v)) for p, v in zip((50, 90, 95, 99), points, strict=True)},
        "max": int(lengths.max()),
    }
