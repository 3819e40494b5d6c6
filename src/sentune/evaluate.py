"""Evaluation: logits over a split, the metrics (each defined once), the floor, the confusion.

The trial loop, the report's winner, the export and the benchmark score models here, so a metric
means the same thing and keeps the same name (`config.metric_name`) from the trial to the export.
torch is imported where a model runs, so that the floor and the metrics stay light.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from sentune import config
from sentune.batching import pad_batch, sorted_batches

if TYPE_CHECKING:
    import torch

    from sentune.data import PreparedData, Split


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
    ids = list(range(len(label_names)))
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, preds, labels=ids, zero_division=0
    )
    name = lambda metric: config.metric_name(split, metric)  # noqa: E731
    metrics = {
        name(config.MACRO_F1): float(
            f1_score(labels, preds, labels=ids, average="macro", zero_division=0)
        ),
        name(config.F1_WEIGHTED): float(
            f1_score(labels, preds, labels=ids, average="weighted", zero_division=0)
        ),
        name(config.ACCURACY): float(accuracy_score(labels, preds)),
    }
    for i, label in enumerate(label_names):
        metrics[f"{name(config.PRECISION)}/{label}"] = float(precision[i])
        metrics[f"{name(config.RECALL)}/{label}"] = float(recall[i])
    return metrics


def split_scores(
    labels: np.ndarray, preds: np.ndarray, label_names: list[str], *, split: str
) -> dict[str, Any]:
    """`compute_metrics` plus the support of each class and the confusion matrix (JSON-ready)."""
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
) -> torch.Tensor:
    """fp32 logits of every example of `split` (in split order), from length-sorted batches.

    Args:
        model: A model in eval mode.
        split: The examples (for their lengths).
        ids: Their token ids, cut as the trial cut them (`split.truncated(n, strategy)`).
        pad_id: The tokenizer's padding id.
        batch_size: Examples per forward pass.
        device: Where the model is.
        autocast: A context manager factory for mixed precision (none by default).
    """
    import torch

    out = torch.empty(len(split), model.config.num_labels)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    with torch.no_grad():
        for indices in sorted_batches(lengths, batch_size):
            input_ids, mask = pad_batch([ids[i] for i in indices], pad_id=pad_id)
            with autocast():
                logits = model(
                    input_ids=torch.from_numpy(input_ids).to(device),
                    attention_mask=torch.from_numpy(mask).to(device),
                ).logits
            out[indices] = logits.float().cpu()
    return out


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
    model = build_floor_model()
    model.fit(data.train.texts, data.train.labels)
    preds = model.predict(data.validation.texts)
    scores = compute_metrics(data.validation.labels, preds, list(data.label_names))
    return Floor(
        val_macro_f1=scores[config.OBJECTIVE],
        val_accuracy=scores[config.VAL_ACCURACY],
        train_size=len(data.train),
        val_size=len(data.validation),
        fingerprint=data.fingerprint,
        fingerprint_matches=recorded_fingerprint in (None, data.fingerprint),
        method=FLOOR_METHOD,
    )


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
    """Load a checkpoint and predict the validation split: confusion matrix and per-class scores."""
    from transformers.utils import logging as hf_logging

    from sentune.model import load_model

    # A progress bar per weight load is noise in a report's log.
    hf_logging.disable_progress_bar()
    model = load_model(checkpoint).eval()
    split = data.validation
    logits = predict_logits(
        model,
        split,
        ids=split.truncated(max_length, truncation),
        pad_id=data.pad_id,
        batch_size=batch_size,
    )
    preds = logits.argmax(-1).numpy()
    names = list(data.label_names)
    label_ids = list(range(len(names)))
    matrix = confusion_matrix(split.labels, preds, labels=label_ids)
    precision, recall, f1, support = precision_recall_fscore_support(
        split.labels, preds, labels=label_ids, zero_division=0
    )
    return Confusion(
        trial_id=trial_id,
        checkpoint=str(checkpoint),
        matrix=pd.DataFrame(matrix, index=names, columns=names),
        per_class=pd.DataFrame(
            {"label": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
        ),
        val_macro_f1=compute_metrics(split.labels, preds, names)[config.OBJECTIVE],
    )
