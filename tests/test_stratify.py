"""The stratified split picks scikit-learn's rows, and says when it cannot split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from sentune.data.stratify import stratified_split


def _sklearn(labels, size, seed):
    positions = np.arange(len(labels))
    rest, part = train_test_split(positions, test_size=size, stratify=labels, random_state=seed)
    return rest, part


def _cases():
    rng = np.random.default_rng(7)
    for case in range(60):
        classes = int(rng.integers(2, 7))
        # Equal counts too: ties in the remainders are broken by the seeded shuffle.
        counts = (
            np.full(classes, int(rng.integers(2, 40)))
            if case % 4 == 0
            else rng.integers(2, 120, size=classes)
        )
        labels = np.repeat([f"class {c}" for c in range(classes)], counts)
        rng.shuffle(labels)
        low, high = classes, len(labels) - classes
        yield labels, int(rng.integers(low, high + 1)), int(rng.integers(0, 2**31 - 1))


@pytest.mark.parametrize("labels, size, seed", list(_cases()))
def test_the_rows_are_scikit_learns(labels, size, seed):
    rest, part = stratified_split(labels, size, seed)
    expected_rest, expected_part = _sklearn(labels, size, seed)
    np.testing.assert_array_equal(rest, expected_rest)
    np.testing.assert_array_equal(part, expected_part)


def test_the_parts_cover_every_row_once_and_keep_the_class_ratios():
    labels = np.array(["neg"] * 300 + ["pos"] * 100 + ["neutral"] * 600)
    rest, part = stratified_split(labels, 200, seed=3)
    assert len(part) == 200 and len(rest) == 800
    assert sorted([*rest, *part]) == list(range(len(labels)))
    counts = pd.Series(labels[part]).value_counts().to_dict()
    assert counts == {"neutral": 120, "neg": 60, "pos": 20}


def test_the_seed_decides_the_rows():
    labels = np.array(["a", "b"] * 50)
    first = stratified_split(labels, 10, seed=1)[1]
    assert list(first) == list(stratified_split(labels, 10, seed=1)[1])
    assert list(first) != list(stratified_split(labels, 10, seed=2)[1])


@pytest.mark.parametrize(
    "labels, size, message",
    [
        (["a", "a", "b", "b", "c"], 3, "these have 1: ['c']"),
        (["a", "a", "b", "b"], 1, "the held-out part would hold 1 rows, fewer than the 2 classes"),
        (["a", "a", "b", "b"], 3, "the rest would hold 1 rows, fewer than the 2 classes"),
        (["a", "a", "b", "b"], 4, "must hold 1 to 3 rows, not 4"),
        (["a", "a", "b", "b"], 0, "must hold 1 to 3 rows, not 0"),
    ],
)
def test_what_cannot_be_split_is_said(labels, size, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        stratified_split(labels, size, seed=0)
    # scikit-learn refuses the same inputs.
    with pytest.raises(ValueError):
        _sklearn(np.array(labels), size, 0)


def test_preparing_the_data_does_not_import_scikit_learn(tmp_path):
    """The split is on the way to the first training step; scikit-learn takes seconds."""
    rows = [(f"text number {i} is {'good' if i % 2 else 'bad'}", i % 2) for i in range(200)]
    csv = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(csv, index=False)
    code = (
        "import sys\n"
        "from sentune.config import DataConfig\n"
        "from sentune.data import load_splits\n"
        f"frames, _ = load_splits(DataConfig(dataset={str(csv)!r}))\n"
        "assert len(frames['validation']) > 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
