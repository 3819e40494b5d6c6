"""Calibrated probabilities: one temperature fitted on the validation split (temperature scaling,
Guo et al. 2017), with the expected calibration error (15 equal-width confidence bins) and the
negative log-likelihood before and after, on validation and on the test split.

The temperature lives in the model's config (`SentimentConfig.temperature`): the model divides
its logits by it, so the Hugging Face folder, the ONNX and int8 graphs and `sentune predict` all
return the calibrated probabilities, and their parity checks compare like with like. It changes
no prediction (argmax is unchanged), only how confident each one says it is.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sentune.data import PreparedData, Split
from sentune.data.batching import pad_batch, sorted_batches
from sentune.export.common import EVAL_BATCH, Engine, Winner

log = logging.getLogger(__name__)

#: Equal-width confidence bins of the expected calibration error and the reliability table.
ECE_BINS = 15
#: The temperatures searched (log-uniform bounds); a fit at a bound is said in the log.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def split_logits(engine: Engine, split: Split, ids: list[np.ndarray], pad_id: int) -> np.ndarray:
    """The engine's logits for every text of `split`, in split order."""
    logits: np.ndarray | None = None
    for indices in sorted_batches(split.lengths, EVAL_BATCH):
        input_ids, mask = pad_batch([ids[i] for i in indices], pad_id=pad_id)
        batch = engine(input_ids, mask)
        if logits is None:
            logits = np.empty((len(split), batch.shape[-1]), dtype=np.float64)
        logits[indices] = batch
    return np.zeros((0, 0)) if logits is None else logits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (of the top class's probability): count, mean confidence, accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if low == 0.0:
            inside |= confidence == 0.0
        count = int(inside.sum())
        rows.append(
            {
                "low": round(float(low), 4),
                "high": round(float(high), 4),
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over `ECE_BINS` bins."""
    rows = reliability(probs, labels)
    total = sum(r["count"] for r in rows)
    return float(
        sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows if r["count"]) / total
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the validation NLL (a bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(
        lambda log_t: nll(softmax(logits, float(np.exp(log_t))), labels),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(np.exp(found.x))
    if min(abs(found.x - low), abs(found.x - high)) < 1e-3:
        log.warning("the fitted temperature %.3g is at the searched bound", temperature)
    return temperature


def calibrate(engine: Engine, data: PreparedData, winner: Winner) -> dict[str, Any]:
    """Fit the temperature on the validation logits of `engine` (the uncalibrated model) and
    measure ECE and NLL before and after on validation and test.

    Returns:
        `metrics.json`'s `calibration`: the temperature, where it lives, and per split the
        scores before and after with the reliability bins.
    """
    splits = {"validation": data.validation, "test": data.test}
    logits = {
        name: split_logits(engine, split, winner.truncated(split), data.pad_id)
        for name, split in splits.items()
    }
    temperature = fit_temperature(logits["validation"], data.validation.labels)
    result: dict[str, Any] = {
        "method": "temperature scaling fitted on the validation split (NLL)",
        "temperature": temperature,
        "bins": ECE_BINS,
        "where": "config.json `temperature`: the model divides its logits by it, so every "
        "format (HF, ONNX, int8) returns calibrated probabilities",
    }
    for name, split in splits.items():
        before, after = softmax(logits[name]), softmax(logits[name], temperature)
        result[name] = {
            "ece_before": expected_calibration_error(before, split.labels),
            "ece_after": expected_calibration_error(after, split.labels),
            "nll_before": nll(before, split.labels),
            "nll_after": nll(after, split.labels),
            "reliability_before": reliability(before, split.labels),
            "reliability_after": reliability(after, split.labels),
        }
    log.info(
        "temperature %.3f: validation ECE %.4f -> %.4f, test ECE %.4f -> %.4f, test NLL "
        "%.4f -> %.4f",
        temperature,
        result["validation"]["ece_before"],
        result["validation"]["ece_after"],
        result["test"]["ece_before"],
        result["test"]["ece_after"],
        result["test"]["nll_before"],
        result["test"]["nll_after"],
    )
    return result
