"""The stratified split: which rows go to a held-out part, drawn per class.

It picks exactly the rows that scikit-learn's `train_test_split(..., stratify=labels,
random_state=seed)` (its `StratifiedShuffleSplit`, 1.x) picks, in NumPy alone. scikit-learn is
not imported for it: with the SciPy it pulls in, that import takes ~3 s of one core on the
search's path from the command to the first training step (the data is prepared while Ray starts,
and both want the interpreter). The rows are also pinned to this code rather than to whichever
scikit-learn is installed, so a seed gives the same splits (and token cache) everywhere.
`tests/test_stratify.py` checks it against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the rest and of a held-out part of `size` rows, stratified by label.

    Args:
        labels: One label per row (any values NumPy can sort).
        size: How many rows the held-out part gets.
        seed: The seed of the shuffle; the same seed gives the same rows.

    Returns:
        `(rest, part)`: positions into `labels`, each in shuffled order.

    Raises:
        ValueError: `size` is not between 1 and the rows less one; a class has a single row; or
            either part would have fewer rows than there are classes.
    """
    y = np.asarray(labels)
    rows = len(y)
    if not 0 < size < rows:
        raise ValueError(f"the held-out part must hold 1 to {rows - 1} rows, not {size}")
    n_part, n_rest = size, rows - size
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        single = classes[class_counts < 2].tolist()
        raise ValueError(f"a class needs at least 2 rows to be split; these have 1: {single}")
    for what, n in (("the rest", n_rest), ("the held-out part", n_part)):
        if n < len(classes):
            raise ValueError(f"{what} would hold {n} rows, fewer than the {len(classes)} classes")
    by_class = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    # The order of every draw below is scikit-learn's: the rows depend on it.
    rest_counts = _apportion(class_counts, n_rest, rng)
    part_counts = _apportion(class_counts - rest_counts, n_part, rng)
    rest: list[int] = []
    part: list[int] = []
    for members, n_r, n_p in zip(by_class, rest_counts, part_counts, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        rest.extend(shuffled[:n_r])
        part.extend(shuffled[n_r : n_r + n_p])
    return rng.permutation(rest), rng.permutation(part)


def _apportion(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` rows each class gives: its share rounded down, then one more for the
    classes with the largest remainders, ties broken at random (scikit-learn's
    `_approximate_mode`, the approximate mode of the multivariate hypergeometric)."""
    continuous = class_counts / class_counts.sum() * draws
    counts = np.floor(continuous)
    missing = int(draws - counts.sum())
    if missing > 0:
        remainder = continuous - counts
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            take = min(len(tied), missing)
            counts[rng.choice(tied, size=take, replace=False)] += 1
            missing -= take
            if missing == 0:
                break
    return counts.astype(int)
