"""The export's scores: every format on the validation and the held-out test split, with
bootstrap intervals, beside the TF-IDF floor trained on the same examples as the model."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from sentune import config
from sentune.data import PreparedData, Split
from sentune.data.batching import pad_batch, sorted_batches
from sentune.export.common import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    EVAL_BATCH,
    INTERVAL_METRICS,
    Engine,
    Winner,
    macro_f1_of,
)
from sentune.runs import Run
from sentune.train.evaluate import FLOOR_METHOD, bootstrap_interval, floor_scores, split_scores

log = logging.getLogger(__name__)


def _predict_split(engine: Engine, split: Split, ids: list[np.ndarray], pad_id: int) -> np.ndarray:
    preds = np.empty(len(split), dtype=np.int64)
    for indices in sorted_batches(split.lengths, EVAL_BATCH):
        input_ids, mask = pad_batch([ids[i] for i in indices], pad_id=pad_id)
        preds[indices] = engine(input_ids, mask).argmax(-1)
    return preds


def score(
    engines: dict[str, Engine],
    data: PreparedData,
    winner: Winner,
    run: Run,
    parity: dict[str, Any],
) -> dict[str, Any]:
    """Every format on validation and on the held-out test split the search never saw."""
    names = list(data.label_names)
    formats: dict[str, Any] = {}
    test_preds: dict[str, np.ndarray] = {}
    for name, engine in engines.items():
        started = time.perf_counter()
        formats[name] = {}
        for split_name, prefix, split in _scored_splits(data):
            preds = _predict_split(engine, split, winner.truncated(split), data.pad_id)
            formats[name][split_name] = split_scores(split.labels, preds, names, split=prefix)
            if prefix == config.TEST:
                test_preds[name] = preds
        log.info(
            "%s: test macro-F1 %.4f (validation %.4f), scored in %.1f s",
            name,
            macro_f1_of(formats[name], "test"),
            macro_f1_of(formats[name], "validation"),
            time.perf_counter() - started,
        )
    gap = {
        name: macro_f1_of(f, "test") - macro_f1_of(f, "validation") for name, f in formats.items()
    }
    metrics: dict[str, Any] = {
        "run": run.path.name,
        "trial_id": winner.trial_id,
        "leaderboard_rank": winner.rank,
        "best_epoch": winner.best_epoch,
        "max_length": winner.max_length,
        "truncation": winner.truncation,
        "labels": names,
        "data_fingerprint": data.fingerprint,
        "search_val_macro_f1": winner.val_macro_f1,
        # Per seed of the winning configuration (`confirm.csv`); null when not confirmed.
        "confirmed_val_macro_f1": winner.confirmed,
        "note": (
            "validation and test are scored here in fp32; search_val_macro_f1 is what the trial "
            "reported during the search (in its training precision)"
        ),
        "formats": formats,
        "val_to_test_gap_macro_f1": gap,
        "parity": parity,
        "test_intervals": _intervals(data.test.labels, test_preds["pytorch"], len(names)),
        "floor": _test_floor(data),
        "train_size": len(data.train),
        "search_train_size": run.manifest.data.stats.get("split_sizes", {}).get("train"),
        "refit": winner.refit,
    }
    metrics["vs_floor"] = _against_floor(metrics)
    if "int8" in formats:
        base = macro_f1_of(formats["pytorch"], "test")
        metrics["int8_test_macro_f1_drop"] = base - macro_f1_of(formats["int8"], "test")
    return metrics


def _against_floor(metrics: dict[str, Any]) -> dict[str, Any]:
    """The shipped model against the floor trained on the same examples, on the test split:
    the gap in macro-F1 and whether their 95 % intervals overlap."""
    key = config.metric_name(config.TEST, config.MACRO_F1)
    model, floor = macro_f1_of(metrics["formats"]["pytorch"], "test"), metrics["floor"][key]
    mine, theirs = metrics["test_intervals"][key], metrics["floor"]["intervals"][key]
    return {
        "test_macro_f1_gain": model - floor,
        "beats_floor": model > floor,
        "intervals_overlap": mine["low"] <= theirs["high"] and theirs["low"] <= mine["high"],
    }


def _intervals(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Bootstrap 95 % intervals of the test metrics in `INTERVAL_METRICS`, by metric name."""
    return {
        config.metric_name(config.TEST, metric): bootstrap_interval(
            labels, preds, metric, n=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, num_labels=num_labels
        )._asdict()
        for metric in INTERVAL_METRICS
    }


def _test_floor(data: PreparedData) -> dict[str, Any]:
    """The TF-IDF floor trained on the train split and scored on the test split, with intervals.

    Only here does the floor see the test split: it puts the winner's test scores in context.
    """
    scores, preds = floor_scores(data, split=config.TEST)
    kept = [config.metric_name(config.TEST, m) for m in (*INTERVAL_METRICS, config.F1_WEIGHTED)]
    return {
        "method": FLOOR_METHOD,
        "train_size": len(data.train),
        "n": scores["n"],
        **{key: scores[key] for key in kept},
        "intervals": _intervals(data.test.labels, preds, len(data.label_names)),
    }


def _scored_splits(data: PreparedData):
    """(name in metrics.json, metric prefix, split) of the scored splits."""
    return (("validation", config.VAL, data.validation), ("test", config.TEST, data.test))
