"""Temperature scaling and the calibration error, on logits whose calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from sentune.export.calibrate import (
    ECE_BINS,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
    softmax,
)


def _overconfident(n: int = 4000, classes: int = 3, seed: int = 0):
    """Labels drawn from softmax(z), and logits 3 z: a model three times too sure."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, size=(n, classes))
    probs = softmax(true_logits)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return 3.0 * true_logits, labels


def test_the_fitted_temperature_undoes_overconfidence():
    logits, labels = _overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before, after = softmax(logits), softmax(logits, temperature)
    assert expected_calibration_error(after, labels) < expected_calibration_error(before, labels)
    assert nll(after, labels) < nll(before, labels)
    # Temperature scaling never changes a prediction.
    assert (after.argmax(1) == before.argmax(1)).all()


def test_a_calibrated_model_keeps_a_temperature_near_one():
    logits, labels = _overconfident(seed=1)
    assert fit_temperature(logits / 3.0, labels) == pytest.approx(1.0, rel=0.1)


def test_ece_and_reliability_on_a_hand_made_case():
    # Two texts at confidence 0.9 (one right), two at 0.6 (both right).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    rows = reliability(probs, labels)
    assert len(rows) == ECE_BINS and sum(r["count"] for r in rows) == 4
    filled = [r for r in rows if r["count"]]
    assert [(r["count"], r["accuracy"]) for r in filled] == [(2, 1.0), (2, 0.5)]
    # |0.6 - 1.0| * 2/4 + |0.9 - 0.5| * 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
