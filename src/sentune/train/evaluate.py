"""Evaluation: logits over a split, the metrics (each defined once), the floor, the confusion.

The trial loop, the report's winner, the export and the benchmark score models here, so a metric
means the same thing and keeps the same name (`config.metric_name`) from the trial to the export.
torch is imported where a model runs, so that the floor and the metrics stay light, and
scikit-learn where a metric is computed, so that a trial reaches its first step without it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.data.batching import pad_batch, pad_batch_static, sorted_batches

if TYPE_CHECKING:
    import torch

    from sentune.data import PreparedData, Split

log = logging.getLogger(__name__)

# --- metrics ---------------------------------------------------------------------------------


def compute_metrics(
    labels: np.ndarray, preds: np.ndarray, label_names: list[str], *, split: str = config.VAL
) -> dict[str, float]:
    """Macro and weighted F1, accuracy and per-class precision/recall, by their one names.

    Args:
        labels, preds: True and predicted label ids.
        label_names: The names of the label ids (index = id).
        split: Names the metrics (`val` gives `val_macro_f1`, `val_precision/<label>`, …).
    """
    from sklearn.metrics import precision_recall_fscore_support

    ids = list(range(len(label_names)))
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, preds, labels=ids, zero_division=0
    )
    name = lambda metric: config.metric_name(split, metric)  # noqa: E731
    metrics = {
        name(metric): score(metric, labels, preds, ids)
        for metric in (config.MACRO_F1, config.F1_WEIGHTED, config.ACCURACY)
    }
    for i, label in enumerate(label_names):
        metrics[f"{name(config.PRECISION)}/{label}"] = float(precision[i])
        metrics[f"{name(config.RECALL)}/{label}"] = float(recall[i])
    return metrics


def score(metric: str, labels: np.ndarray, preds: np.ndarray, label_ids: list[int]) -> float:
    """One whole-split metric: `config.MACRO_F1`, `config.F1_WEIGHTED` or `config.ACCURACY`.

    Args:
        metric: The metric's name.
        labels, preds: True and predicted label ids.
        label_ids: Every label id (a class absent from a sample still counts in the macro mean).
    """
    from sklearn.metrics import confusion_matrix

    return score_confusion(metric, confusion_matrix(labels, preds, labels=label_ids))


def score_confusion(metric: str, matrix: np.ndarray) -> float:
    """`score` from a confusion matrix (rows true, columns predicted): where each metric is
    defined, as scikit-learn defines it with `zero_division=0`. The bootstrap resamples
    confusion matrices, which is hundreds of times faster than rescoring resampled labels."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits, total = np.diag(matrix), matrix.sum()
    if metric == config.ACCURACY:
        return float(hits.sum() / total) if total else 0.0
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    # F1 = 2 tp / (2 tp + fp + fn); a class never seen nor predicted scores 0.
    f1 = np.divide(
        2 * hits, support + predicted, out=np.zeros_like(hits), where=support + predicted > 0
    )
    if metric == config.MACRO_F1:
        return float(f1.mean())
    if metric == config.F1_WEIGHTED:
        return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    raise KeyError(f"unknown metric {metric!r}")


class Interval(NamedTuple):
    """A bootstrap confidence interval of a metric on one split."""

    low: float
    high: float
    level: float
    resamples: int
    seed: int


def bootstrap_interval(
    labels: np.ndarray,
    preds: np.ndarray,
    metric: str,
    n: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
    num_labels: int | None = None,
) -> Interval:
    """Percentile bootstrap interval of `metric` over resamples of the examples.

    The examples are drawn with replacement `n` times (seeded, so an export is reproducible);
    the interval is the central `level` share of the metric over the resamples.

    Args:
        labels, preds: True and predicted label ids of one split.
        metric: A name `score` knows (`config.MACRO_F1`, `config.ACCURACY`, …).
        n: Resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.
        num_labels: Classes of the task (None: the largest id seen, plus one).

    Returns:
        `low`, `high` and how they were computed.
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    k = num_labels or int(max(labels.max(initial=0), preds.max(initial=0))) + 1
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), size=(n, len(labels)))
    # One confusion matrix per resample, counted at once: cell codes offset by resample.
    codes = (labels * k + preds)[rows] + np.arange(n)[:, None] * (k * k)
    matrices = np.bincount(codes.ravel(), minlength=n * k * k).reshape(n, k, k)
    values = np.array([score_confusion(metric, m) for m in matrices])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), level, n, seed)


def split_scores(
    labels: np.ndarray, preds: np.ndarray, label_names: list[str], *, split: str
) -> dict[str, Any]:
    """`compute_metrics` plus the support of each class and the confusion matrix (JSON-ready)."""
    from sklearn.metrics import confusion_matrix

    return {
        "n": len(labels),
        **compute_metrics(labels, preds, label_names, split=split),
        "support": {n: int((labels == i).sum()) for i, n in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(
            labels, preds, labels=range(len(label_names))
        ).tolist(),
    }


# --- running a model over a split ------------------------------------------------------------


def predict_logits(
    model: torch.nn.Module,
    split: Split,
    *,
    ids: list[np.ndarray],
    pad_id: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    autocast: Callable[[], Any] = contextlib.nullcontext,
    static_max_length: int | None = None,
) -> torch.Tensor:
    """fp32 logits of every example of `split` (in split order), from length-sorted batches.

    The logits stay on the device until the last batch, so that a GPU is not stalled by a copy
    back after each batch; inputs go from pinned memory without blocking on CUDA.

    Args:
        model: A model in eval mode (or a compiled one: see `static_max_length`).
        split: The examples (for their lengths).
        ids: Their token ids, cut as the trial cut them (`split.truncated(n, strategy)`).
        pad_id: The tokenizer's padding id.
        batch_size: Examples per forward pass.
        device: Where the model is.
        autocast: A context manager factory for mixed precision (none by default).
        static_max_length: For a compiled model: pad every batch to `batch_size` rows and a
            width of `batching.bucket_length(…, static_max_length)`, so it sees few shapes.
    """
    import torch

    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order, pieces = [], []
    with torch.no_grad():
        for indices in sorted_batches(lengths, batch_size):
            batch = [ids[i] for i in indices]
            if static_max_length is None:
                input_ids, mask = pad_batch(batch, pad_id=pad_id)
            else:
                input_ids, mask = pad_batch_static(
                    batch, pad_id=pad_id, max_length=static_max_length, rows=batch_size
                )
                # Each batch a new step for CUDA graphs: the previous one's logits are copied.
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                logits = model(
                    input_ids=to_device(torch.from_numpy(input_ids), device),
                    attention_mask=to_device(torch.from_numpy(mask), device),
                ).logits
            order += indices
            # A copy: a CUDA graph's replay overwrites its outputs in place.
            pieces.append(logits[: len(indices)].to(torch.float32, copy=True))
    out = torch.empty(len(split), model.config.num_labels)
    if pieces:
        out[order] = torch.cat(pieces).cpu()
    return out


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; to a GPU through pinned memory, without blocking the host."""
    if torch_device_type(device) == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def torch_device_type(device: torch.device | str) -> str:
    """`cuda` for `cuda`, `cuda:1` or a CUDA `torch.device`; else its type (`cpu`)."""
    return getattr(device, "type", None) or str(device).split(":", 1)[0]


# --- the reference floor ---------------------------------------------------------------------


class Floor(NamedTuple):
    """The TF-IDF + logistic-regression reference on the run's own train/validation splits."""

    val_macro_f1: float
    val_accuracy: float
    train_size: int
    val_size: int
    fingerprint: str
    #: False when the rebuilt data differs from the data the search saw.
    fingerprint_matches: bool
    method: str


FLOOR_METHOD = "TF-IDF (word 1-2 grams, sublinear tf) + logistic regression (balanced, C=2)"


def reference_floor(data: PreparedData, *, recorded_fingerprint: str | None = None) -> Floor:
    """Train TF-IDF + logistic regression on the train split, score it on validation.

    A fine-tuned encoder that does not beat this floor on the same examples is not done. The
    test split is never read.
    """
    scores, _ = floor_scores(data, split=config.VAL)
    return Floor(
        val_macro_f1=scores[config.VAL_MACRO_F1],
        val_accuracy=scores[config.VAL_ACCURACY],
        train_size=len(data.train),
        val_size=len(data.validation),
        fingerprint=data.fingerprint,
        fingerprint_matches=recorded_fingerprint in (None, data.fingerprint),
        method=FLOOR_METHOD,
    )


def floor_scores(data: PreparedData, *, split: str) -> tuple[dict[str, Any], np.ndarray]:
    """The floor trained on the train split and scored on `split` (`config.VAL` or
    `config.TEST`): its `split_scores` and its predicted label ids.

    Only the export scores the test split (beside the winner's test scores); the search and the
    report never call this with `config.TEST`.
    """
    scored = {config.VAL: data.validation, config.TEST: data.test}[split]
    model = build_floor_model()
    model.fit(data.train.texts, data.train.labels)
    preds = model.predict(scored.texts)
    return split_scores(scored.labels, preds, list(data.label_names), split=split), preds


def build_floor_model():
    """The floor's unfitted scikit-learn pipeline (seeded; deterministic)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=2.0, max_iter=2000, class_weight="balanced", random_state=0),
    )


# --- the winner's errors ---------------------------------------------------------------------


class Confusion(NamedTuple):
    """A checkpoint's predictions on the validation split."""

    trial_id: str
    checkpoint: str
    #: Rows: true label, columns: predicted label (counts).
    matrix: pd.DataFrame
    #: `label`, `precision`, `recall`, `f1`, `support`.
    per_class: pd.DataFrame
    val_macro_f1: float


def checkpoint_confusion(
    checkpoint: str,
    data: PreparedData,
    *,
    trial_id: str,
    max_length: int,
    truncation: str = config.TrainConfig.truncation,
    batch_size: int = 64,
) -> Confusion:
    """A checkpoint's confusion matrix and per-class scores on the validation split: from the
    predictions its trial saved beside it (`runs.PREDICTIONS_FILE`, what its score was computed
    from), else by loading it and predicting (a checkpoint of an older run)."""
    names = list(data.label_names)
    preds = stored_predictions(checkpoint, data.validation.labels)
    if preds is None:
        preds = _predict_validation(checkpoint, data, max_length, truncation, batch_size)
    return _confusion(trial_id, str(checkpoint), data.validation.labels, preds, names)


def save_predictions(checkpoint: str | Path, labels: np.ndarray, preds: np.ndarray) -> None:
    """Save a checkpoint's validation predictions beside it, with the labels they are of (read
    back by `stored_predictions`)."""
    from sentune.runs import PREDICTIONS_FILE

    np.save(Path(checkpoint) / PREDICTIONS_FILE, np.stack([labels, preds]).astype(np.int32))


def stored_predictions(checkpoint: str | Path, labels: np.ndarray) -> np.ndarray | None:
    """The validation predictions saved with a checkpoint, if it has them and they are of
    these labels (the same validation split, in the same order); else None."""
    from sentune.runs import PREDICTIONS_FILE

    try:
        saved = np.load(Path(checkpoint) / PREDICTIONS_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if saved.shape != (2, len(labels)) or not np.array_equal(saved[0], labels):
        log.warning(
            "%s: its saved predictions are of another validation split; predicting again",
            checkpoint,
        )
        return None
    return saved[1]


def _predict_validation(
    checkpoint: str, data: PreparedData, max_length: int, truncation: str, batch_size: int
) -> np.ndarray:
    import torch
    from transformers.utils import logging as hf_logging

    from sentune.train.model import load_model

    # A progress bar per weight load is noise in a report's log.
    hf_logging.disable_progress_bar()
    # A GPU when there is one: BERT-base over a validation split takes seconds on CPU cores,
    # and this runs between the search and its report, while the user waits.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(checkpoint).eval().to(device)
    split = data.validation
    logits = predict_logits(
        model,
        split,
        ids=split.truncated(max_length, truncation),
        pad_id=data.pad_id,
        batch_size=batch_size,
        device=device,
    )
    return logits.argmax(-1).numpy()


def _confusion(
    trial_id: str, checkpoint: str, labels: np.ndarray, preds: np.ndarray, names: list[str]
) -> Confusion:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    label_ids = list(range(len(names)))
    matrix = confusion_matrix(labels, preds, labels=label_ids)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=label_ids, zero_division=0
    )
    return Confusion(
        trial_id=trial_id,
        checkpoint=checkpoint,
        matrix=pd.DataFrame(matrix, index=names, columns=names),
        per_class=pd.DataFrame(
            {"label": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
        ),
        val_macro_f1=compute_metrics(labels, preds, names)[config.VAL_MACRO_F1],
    )
