"""Classify texts with an exported model on onnxruntime.

This path never imports torch or transformers: the tokenizer is read from the export's
`tokenizer.json` with the `tokenizers` library, and the model runs on onnxruntime. It needs the
`export` extra: `pip install 'sentune[export]'`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from sentune.batching import pad_batch, sorted_batches, truncate
from sentune.config import TRUNCATIONS
from sentune.errors import ExportError

#: Files of an export folder that inference reads.
EXPORT_MANIFEST = "export.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: Input names of the exported ONNX graph, in order.
ONNX_INPUTS = ("input_ids", "attention_mask")
DEFAULT_BATCH_SIZE = 32


def import_onnxruntime():
    """onnxruntime, or an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "onnxruntime is not installed; install the export extra: pip install 'sentune[export]'"
        ) from None
    return onnxruntime


def build_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session with `threads` intra-op threads (None: the CPU count)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Logits of one padded batch (int64 inputs of shape (batch, length))."""
    feeds = dict(zip(ONNX_INPUTS, (input_ids, attention_mask), strict=True))
    return session.run(None, feeds)[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


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
        """Token ids with special tokens, cut to the export's `max_length` the way its trial
        cut them (`batching.truncate` with the export's `truncation`)."""
        encoded = self._tokenizer.encode_batch(list(texts))
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
        """Label and class probabilities of each text."""
        texts = [str(t) for t in texts]
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


def read_texts(path: str | Path, column: str) -> list[str]:
    """The `column` of a CSV file (UTF-8), as a list of texts.

    Raises:
        ExportError: The file cannot be read or has no such column.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if column not in columns:
                raise ExportError(
                    f"{path}: no column {column!r} (columns: {', '.join(columns) or 'none'}); "
                    "pass --column NAME"
                )
            return [row[column] or "" for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ExportError(f"{path}: cannot read it as a UTF-8 CSV file ({exc})") from None


def write_csv(predictions: Predictions, stream: TextIO) -> None:
    """CSV with columns `text,label,p_<label>...` (probabilities to 6 decimals)."""
    writer = csv.writer(stream)
    writer.writerow(["text", "label", *(f"p_{name}" for name in predictions.label_names)])
    for text, label, probs in zip(
        predictions.texts, predictions.labels, predictions.probabilities, strict=True
    ):
        writer.writerow([text, label, *(f"{p:.6f}" for p in probs)])


def format_lines(predictions: Predictions) -> list[str]:
    """One readable line per text: label, its probability, all probabilities, the text."""
    lines = []
    for text, label, probs in zip(
        predictions.texts, predictions.labels, predictions.probabilities, strict=True
    ):
        shown = " ".join(
            f"{name}={p:.3f}" for name, p in zip(predictions.label_names, probs, strict=True)
        )
        best = float(probs.max())
        lines.append(f"{label:<10} {best:.3f}  [{shown}]  {text}")
    return lines
