"""Classify texts with an exported model on onnxruntime.

This path never imports torch or transformers: the tokenizer is read from the export's
`tokenizer.json` with the `tokenizers` library, and the model runs on onnxruntime. It needs the
`export` extra: `pip install 'sentune[export]'`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sentune.config import TRUNCATIONS
from sentune.data.batching import pad_batch, sorted_batches, truncate
from sentune.data.text import clean_text
from sentune.errors import DataError, ExportError
from sentune.serve.onnx import (
    EXPORT_MANIFEST,
    INT8_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    build_session,
    run_session,
    softmax,
)

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Predictions:
    """Labels and class probabilities of a list of texts, in input order."""

    texts: list[str]
    labels: list[str]
    probabilities: np.ndarray
    label_names: list[str]


class Predictor:
    """An exported model and its tokenizer, loaded for inference on onnxruntime.

    Args:
        export_dir: A folder written by `sentune export` (`analysis/<run>/export`).
        int8: Use the int8-quantized model (`model.int8.onnx`) instead of `model.onnx`.
        threads: onnxruntime intra-op threads (None: the CPU count).

    Raises:
        ExportError: The folder is not an export, or lacks the requested model.
    """

    def __init__(self, export_dir: str | Path, *, int8: bool = False, threads: int | None = None):
        folder = Path(export_dir)
        manifest = read_export_manifest(folder)
        model_file = folder / (INT8_FILE if int8 else ONNX_FILE)
        if not model_file.is_file():
            flag = "--formats onnx,int8" if int8 else "--formats onnx"
            raise ExportError(
                f"{folder}: has no {model_file.name}; re-export with `sentune export ... {flag} "
                "--force`"
            )
        self.label_names: list[str] = list(manifest["labels"])
        self.max_length: int = int(manifest["max_length"])
        #: How the trial cut longer texts; an export written before this was recorded: `head`.
        self.truncation: str = manifest.get("truncation", "head")
        self.pad_id: int = int(manifest["pad_id"])
        self.model_file = model_file
        self._tokenizer = _load_tokenizer(folder / TOKENIZER_FILE)
        self._session = build_session(model_file, threads=threads)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens of the texts cleaned as training cleaned them
        (`text.clean_text`), cut to the export's `max_length` the way its trial cut them
        (`batching.truncate` with the export's `truncation`)."""
        encoded = self._tokenizer.encode_batch([clean_text(t) for t in texts])
        return [truncate(enc.ids, self.max_length, self.truncation) for enc in encoded]

    def logits(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Logits (len(texts), num_labels); batches group texts of similar length."""
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), len(self.label_names)), dtype=np.float32)
        for rows in sorted_batches(np.array([len(x) for x in ids]), batch_size):
            input_ids, mask = pad_batch([ids[i] for i in rows], pad_id=self.pad_id)
            out[rows] = run_session(self._session, input_ids, mask)
        return out

    def predict(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> Predictions:
        """Label and class probabilities of each text.

        Raises:
            DataError: A text is empty once cleaned (the model would guess a label for nothing).
        """
        texts = [str(t) for t in texts]
        empty = empty_rows(texts)
        if empty:
            raise DataError(
                f"text {empty[0] + 1} of {len(texts)} is empty after cleaning "
                f"({len(empty)} empty in all); remove empty texts"
            )
        if not texts:
            return Predictions([], [], np.zeros((0, len(self.label_names))), self.label_names)
        probabilities = softmax(self.logits(texts, batch_size=batch_size))
        labels = [self.label_names[i] for i in probabilities.argmax(axis=-1)]
        return Predictions(texts, labels, probabilities, self.label_names)


def read_export_manifest(folder: Path) -> dict:
    """The `export.json` of an export folder.

    Raises:
        ExportError: The folder does not exist or is not an export.
    """
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        what = (
            "does not exist" if not folder.exists() else f"is not a sentune export (no {path.name})"
        )
        raise ExportError(
            f"{folder}: {what}; pass the folder written by `sentune export` (analysis/<run>/export)"
        )
    try:
        manifest = json.loads(path.read_text())
        for key in ("labels", "max_length", "pad_id"):
            manifest[key]  # noqa: B018 - presence check
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: unreadable export manifest ({exc}); re-export it") from None
    if manifest.get("truncation", "head") not in TRUNCATIONS:
        raise ExportError(
            f"{path}: unknown truncation {manifest['truncation']!r} (known: "
            f"{', '.join(TRUNCATIONS)}); re-export it with this sentune"
        )
    return manifest


def _load_tokenizer(path: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ExportError("the tokenizers package is missing: pip install tokenizers") from None
    if not path.is_file():
        raise ExportError(f"{path.parent}: has no {path.name}; re-export it with `--force`")
    tokenizer = Tokenizer.from_file(str(path))
    # Untruncated, as `data.prepare` tokenizes: `batching.truncate` then cuts as training did
    # (the library's own truncation keeps the head only).
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def empty_rows(texts: Sequence[str]) -> list[int]:
    """Indices of the texts that are empty once cleaned (HTML-only or blank texts included)."""
    return [i for i, text in enumerate(texts) if not clean_text(str(text))]


# --- tables in and out (`sentune predict --file`) -------------------------------------------

#: Input file types `read_table` knows, by suffix.
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
OUTPUT_FORMATS = ("table", "json", "csv")
#: The columns a prediction adds to each row: the label, then one probability per class.
LABEL_COLUMN = "label"
PROBABILITY_PREFIX = "p_"


@dataclass(frozen=True)
class Table:
    """Rows of an input file with every column kept, in file order."""

    columns: list[str]
    rows: list[dict[str, Any]]


def read_table(path: str | Path, *, stdin: TextIO | None = None) -> Table:
    """A CSV, TSV or JSON Lines file (UTF-8), or standard input for `-`, with every column.

    Standard input is read as JSON Lines when it starts with `{`, as TSV when its header has a
    tab and no comma, else as CSV.

    Raises:
        DataError: The file does not exist, has an unknown type or cannot be parsed.
    """
    name = str(path)
    if name == "-":
        text = (stdin or sys.stdin).read()
        head = text.lstrip()[:1]
        header = text.split("\n", 1)[0]
        kind = (
            ".jsonl" if head == "{" else ".tsv" if "\t" in header and "," not in header else ".csv"
        )
    else:
        path = Path(path)
        kind = path.suffix.lower()
        if not path.is_file():
            what = "no such file" if not path.exists() else "not a file"
            raise DataError(f"{what}: {path}; pass a CSV, TSV or JSONL file, or - for stdin")
        if kind not in TABLE_SUFFIXES:
            raise DataError(
                f"{path}: unsupported file type {kind or '(none)'!r}; use one of "
                f"{', '.join(TABLE_SUFFIXES)} (or - for stdin)"
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read it as UTF-8 text ({exc}); re-save it") from None
    if kind == ".jsonl":
        return _parse_jsonl(text, name)
    return _parse_delimited(text, name, delimiter="\t" if kind == ".tsv" else ",")


def _parse_delimited(text: str, name: str, *, delimiter: str) -> Table:
    try:
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        rows = [dict(row) for row in reader]
        columns = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise DataError(
            f"{name}: cannot parse it as {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})"
        ) from None
    for i, row in enumerate(rows, start=1):
        if None in row:
            raise DataError(f"{name}: row {i} has more fields than the header; quote its text")
    return Table(columns, rows)


def _parse_jsonl(text: str, name: str) -> Table:
    rows, columns = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{name}: line {number} is not JSON ({exc.msg}); one object a line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{name}: line {number} is not a JSON object; one object a line")
        rows.append(row)
        columns.update(dict.fromkeys(row))
    # Every row gets every column (None where a line lacks a key), in first-seen order.
    return Table(list(columns), [{c: row.get(c) for c in columns} for row in rows])


def table_texts(table: Table, column: str, *, source: str) -> list[str]:
    """The texts of `column` (missing values as "").

    Raises:
        DataError: The table has no such column; the message lists its columns.
    """
    if column not in table.columns:
        raise DataError(
            f"{source}: no column {column!r} (columns: {', '.join(table.columns) or 'none'}); "
            "pass --column NAME"
        )
    return ["" if row.get(column) is None else str(row[column]) for row in table.rows]


def predict_table(
    predictor: Predictor,
    table: Table,
    column: str,
    *,
    source: str,
    skip_empty: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Table:
    """Every input row with its prediction appended: `label` and `p_<label>` per class.

    Args:
        predictor: The loaded export.
        table: The input rows (`read_table`).
        column: The text column.
        source: The input's name, for messages.
        skip_empty: Keep rows whose text is empty with a blank label and probabilities, instead
            of failing.
        batch_size: Texts per onnxruntime call.

    Returns:
        The input columns followed by the prediction columns (an input column of the same name
        is kept; the prediction's gets the prefix `predicted_`).

    Raises:
        DataError: No such column, or an empty text without `skip_empty`.
    """
    texts = table_texts(table, column, source=source)
    empty = empty_rows(texts)
    if empty and not skip_empty:
        rows = ", ".join(str(i + 1) for i in empty[:5]) + (" …" if len(empty) > 5 else "")
        raise DataError(
            f"{source}: empty text in column {column!r} at row {rows} ({len(empty)} in all); "
            "remove those rows or pass --skip-empty to leave them unlabelled"
        )
    skipped = set(empty)
    kept = [i for i in range(len(texts)) if i not in skipped]
    predictions = predictor.predict([texts[i] for i in kept], batch_size=batch_size)
    names = [LABEL_COLUMN, *(PROBABILITY_PREFIX + n for n in predictor.label_names)]
    added = [f"predicted_{n}" if n in table.columns else n for n in names]
    out: list[dict[str, Any]] = [{**row, **dict.fromkeys(added)} for row in table.rows]
    for i, label, probs in zip(kept, predictions.labels, predictions.probabilities, strict=True):
        out[i].update(zip(added, [label, *(round(float(p), 6) for p in probs)], strict=True))
    return Table([*table.columns, *added], out)


def write_table(table: Table, stream: TextIO, *, fmt: str) -> None:
    """Write rows as an aligned `table`, a `json` array of objects, or `csv` (None as empty)."""
    if fmt == "json":
        stream.write("[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in table.rows))
        stream.write("\n]\n" if table.rows else "]\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=table.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table.rows)
    else:
        stream.write("\n".join(format_table(table)) + "\n")


def format_table(table: Table, *, max_width: int = 60) -> list[str]:
    """Aligned lines: a header, then one line per row; long cells are cut to `max_width`."""

    def cell(value: Any) -> str:
        text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        text = " ".join(text.split())
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(row.get(c)) for c in table.columns] for row in table.rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(table.columns)]
    lines = [table.columns, *cells]
    return [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
