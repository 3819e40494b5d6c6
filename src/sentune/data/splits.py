"""Clean, deduplicate and split a source's texts (stratified, seeded): `load_splits`.

The source's own splits are kept; those it lacks are carved out of its train split by class;
`data.train_size` / `data.val_size` subsample. Every row dropped is counted by reason, and the
result is fingerprinted (the token cache and a run's manifest key on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

import pandas as pd

from sentune.config import DataConfig
from sentune.data.load import SPLITS, load_source
from sentune.data.stratify import stratified_split
from sentune.data.text import clean_text
from sentune.errors import DataError

logger = logging.getLogger(__name__)

DROP_REASONS = (
    "missing_label",
    "empty",
    "too_short",
    "conflicting_labels",
    "duplicates",
    "cross_split_duplicates",
)


def load_splits(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """Load, clean and split the data named by `cfg.dataset`; no tokenization.

    Args:
        cfg: The data settings (source, columns, fractions, subsample sizes, seed).

    Returns:
        `{"train", "validation", "test"}` DataFrames with columns `text` (str) and `label` (the
        label name, str), and the stats: source, rows read, rows dropped by reason, split sizes
        before (`available_sizes`) and after (`split_sizes`) subsampling, class counts per split,
        label names and the data fingerprint.

    Raises:
        DataError: The source cannot be found or read, or the data cannot make three splits.
    """
    _check_fractions(cfg)
    raw, stats = load_source(cfg)
    stats["rows_read"] = int(sum(len(df) for df in raw.values()))
    stats["rows_read_by_split"] = {name: len(df) for name, df in raw.items()}
    dropped = dict.fromkeys(DROP_REASONS, 0)
    frames = {name: _clean(df, cfg.min_words, dropped) for name, df in raw.items()}
    _drop_cross_split_duplicates(frames, dropped)
    stats["dropped"] = dropped
    if not any(len(df) for df in frames.values()):
        raise DataError(
            f"dataset '{cfg.dataset}': no examples left after cleaning ({dropped}); "
            "check the text column or lower data.min_words"
        )
    stats["split_origin"] = {
        name: "source" if name in frames else "carved from train" for name in SPLITS
    }
    frames = _split(frames, cfg)
    # Before subsampling: how many examples data.train_size / data.val_size chose from.
    stats["available_sizes"] = {name: len(frames[name]) for name in SPLITS}
    frames = _subsample(frames, cfg)
    label_names = _check_labels(frames, cfg)
    stats["label_names"] = label_names
    stats["split_sizes"] = {name: len(frames[name]) for name in SPLITS}
    stats["class_counts"] = {
        name: {label: int((frames[name]["label"] == label).sum()) for label in label_names}
        for name in SPLITS
    }
    stats["fingerprint"] = _fingerprint(frames, cfg)
    return frames, stats


def _check_fractions(cfg: DataConfig) -> None:
    for key in ("val_fraction", "test_fraction"):
        value = getattr(cfg, key)
        if not 0 < value < 1:
            raise DataError(f"data.{key} must be between 0 and 1 (exclusive), got {value}")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise DataError(
            "data.val_fraction + data.test_fraction must be below 1, got "
            f"{cfg.val_fraction} + {cfg.test_fraction}"
        )
    if cfg.min_words < 0:
        raise DataError(f"data.min_words must be 0 or more, got {cfg.min_words}")


# --- cleaning -------------------------------------------------------------------------------------


def _normalise_texts(texts: pd.Series) -> pd.Series:
    """`text.clean_text` over a column; missing values become ""."""
    return texts.fillna("").astype(str).map(clean_text)


def _label_name(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _clean(frame: pd.DataFrame, min_words: int, dropped: dict[str, int]) -> pd.DataFrame:
    """Normalise texts and labels, then drop (and count) bad rows; the order of steps matters."""
    frame = frame.assign(text=_normalise_texts(frame["text"]))
    labels = frame["label"].map(lambda v: None if pd.isna(v) else _label_name(v))
    keep = labels.notna() & (labels != "")
    dropped["missing_label"] += int((~keep).sum())
    frame = frame.assign(label=labels)[keep]

    steps = (
        ("empty", lambda f: f["text"] != ""),
        ("too_short", lambda f: f["text"].str.split().str.len() >= min_words),
        ("conflicting_labels", lambda f: f.groupby("text")["label"].transform("nunique") == 1),
        ("duplicates", lambda f: ~f["text"].duplicated()),
    )
    for reason, keep_rows in steps:
        if frame.empty:
            break
        mask = keep_rows(frame)
        dropped[reason] += int((~mask).sum())
        frame = frame[mask]
    return frame.reset_index(drop=True)


def _drop_cross_split_duplicates(frames: dict[str, pd.DataFrame], dropped: dict[str, int]) -> None:
    """Keep a text only in its highest-priority split: test, then validation, then train."""
    seen: set[str] = set()
    for name in reversed(SPLITS):
        if name not in frames:
            continue
        frame = frames[name]
        mask = ~frame["text"].isin(seen)
        dropped["cross_split_duplicates"] += int((~mask).sum())
        frames[name] = frame[mask].reset_index(drop=True)
        seen.update(frames[name]["text"])


# --- splitting ------------------------------------------------------------------------------------


def _stratified(
    frame: pd.DataFrame, size: int, seed: int, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, part) where `part` holds `size` rows, stratified by label."""
    if frame.empty:
        raise DataError(
            f"no training examples left to carve the {what} from (after cleaning and removing "
            "texts that other splits also hold); use more data or lower data.min_words"
        )
    if frame["label"].nunique() < 2:
        raise DataError(
            f"only one class ({frame['label'].iloc[0]!r}) left for the {what}; a classifier needs "
            "at least two: check data.label_column"
        )
    try:
        rest, part = stratified_split(frame["label"].to_numpy(), size, seed)
    except ValueError as exc:
        counts = frame["label"].value_counts().to_dict()
        raise DataError(
            f"cannot split {len(frame)} examples for the {what} by class ({exc}); class counts: "
            f"{counts}; drop the rare labels or use more data"
        ) from None
    rest, part = frame.take(rest), frame.take(part)
    return rest.reset_index(drop=True), part.reset_index(drop=True)


def _split(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Carve the splits the source lacks out of its train split.

    Both fractions are shares of the train split as the source gives it; sizes are rounded counts
    so that, e.g., 10 % of 600 is 60 and not 61.
    """
    frames = dict(frames)
    train = frames["train"]
    pool = len(train)
    if "test" not in frames:
        size = max(1, round(cfg.test_fraction * pool))
        train, frames["test"] = _stratified(train, size, cfg.seed, "test split")
    if "validation" not in frames:
        size = max(1, round(cfg.val_fraction * pool))
        train, frames["validation"] = _stratified(train, size, cfg.seed, "validation split")
    frames["train"] = train
    return {name: frames[name] for name in SPLITS}


def _subsample(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Stratified subsamples of the sizes `cfg` asks for; a size in `cfg.capped_sizes` (from a
    space file) is a cap, others (from the command line) are exact."""
    frames = dict(frames)
    for name, key in (("train", "train_size"), ("validation", "val_size")):
        size = getattr(cfg, key)
        if size is None:
            continue
        available, classes = len(frames[name]), frames[name]["label"].nunique()
        if size > available and key in cfg.capped_sizes:
            logger.info(
                "data.%s is %d (a cap, from the space file) but the %s split has %d examples; "
                "using all of them",
                key,
                size,
                name,
                available,
            )
            size = available
        if size > available:
            raise DataError(
                f"data.{key} is {size} but the {name} split has only {available} examples; "
                f"set data.{key} to at most {available} (or leave it unset for all)"
            )
        if size < classes:
            raise DataError(
                f"data.{key} is {size} but there are {classes} classes; set data.{key} to at "
                f"least {classes}"
            )
        if size < available:
            _, frames[name] = _stratified(frames[name], size, cfg.seed, f"data.{key} subsample")
    return frames


def _check_labels(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> list[str]:
    for name in SPLITS:
        if frames[name].empty:
            raise DataError(
                f"dataset '{cfg.dataset}': the {name} split is empty after cleaning and splitting;"
                " use more data or lower data.min_words"
            )
    train_labels = set(frames["train"]["label"])
    if len(train_labels) < 2:
        raise DataError(
            f"dataset '{cfg.dataset}': a single class ({next(iter(train_labels))!r}) in training;"
            " a classifier needs at least two: check data.label_column"
        )
    for name in ("validation", "test"):
        unknown = sorted(set(frames[name]["label"]) - train_labels)
        if unknown:
            raise DataError(
                f"dataset '{cfg.dataset}': labels {unknown} of the {name} split are absent from "
                f"training (train labels: {sorted(train_labels)}); fix the labels or raise "
                "data.train_size"
            )
    return sorted(train_labels)


def _fingerprint(frames: dict[str, pd.DataFrame], cfg: DataConfig) -> str:
    # Whether a size is a cap changes no data that loads either way: it stays out of the hash,
    # so unchanged inputs keep the fingerprint (and token cache) they had.
    settings = {k: v for k, v in asdict(cfg).items() if k != "capped_sizes"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in SPLITS:
        digest.update(f"\x1d{name}\x1d".encode())
        for column in ("text", "label"):
            digest.update("\x1e".join(frames[name][column]).encode())
            digest.update(b"\x1f")
    return digest.hexdigest()[:16]
