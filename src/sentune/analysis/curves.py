"""The search over time: every evaluation of every trial (learning curves), the best score so
far, and what the search cost."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.runs import Run

#: Numeric per-evaluation columns kept in the learning curves (besides per-class P/R).
_CURVE_COLUMNS = [
    config.EPOCH,
    config.VAL_MACRO_F1,
    config.VAL_F1_WEIGHTED,
    config.VAL_ACCURACY,
    config.VAL_LOSS,
    config.TRAIN_LOSS,
    config.TRAIN_SAMPLES_PER_S,
    "train_s",
    "time_total_s",
    "timestamp",
]


def learning_curves(run: Run) -> pd.DataFrame:
    """Every evaluation of every trial, long format.

    Returns:
        Columns `trial_id`, `epoch`, the validation and training metrics, per-class precision and
        recall (`val_precision/<label>`, `val_recall/<label>`), and `wall_s`: seconds since the
        first trial started. Sorted by trial and epoch.
    """
    frames = []
    for trial_id, history in run.histories.items():
        if not len(history):
            continue
        keep = [c for c in _CURVE_COLUMNS if c in history] + [
            c
            for c in history.columns
            if c.startswith((config.VAL_PRECISION_PREFIX, config.VAL_RECALL_PREFIX))
        ]
        frames.append(history[keep].assign(trial_id=trial_id))
    columns = ["trial_id", *_CURVE_COLUMNS, "wall_s"]
    if not frames:
        return pd.DataFrame(columns=columns)
    curves = pd.concat(frames, ignore_index=True)
    if "timestamp" in curves and "time_total_s" in curves:
        started = (curves["timestamp"] - curves["time_total_s"]).min()
        curves["wall_s"] = curves["timestamp"] - started
    else:
        curves["wall_s"] = np.nan
    first = ["trial_id", config.EPOCH]
    curves = curves[first + [c for c in curves.columns if c not in first]]
    # A trial retried from its checkpoint reports some epochs again: the last report counts.
    curves = curves.drop_duplicates(first, keep="last")
    return curves.sort_values(first, kind="stable").reset_index(drop=True)


class History(NamedTuple):
    """The search's progress: per trial in start order, and per evaluation in time order."""

    #: `trial_index` (0 = first started), `trial_id`, `value` (best epoch), `best_so_far`.
    by_trial: pd.DataFrame
    #: `wall_s`, `trial_id`, `value` (that evaluation), `best_so_far` (over all evaluations).
    by_time: pd.DataFrame


def optimization_history(table: pd.DataFrame, curves: pd.DataFrame) -> History:
    """Best score so far against trial index and against wall time.

    Args:
        table: `leaderboard(run)`.
        curves: `learning_curves(run)`.
    """
    if not len(curves):
        empty = pd.DataFrame(columns=["trial_index", "trial_id", "value", "best_so_far"])
        return History(empty, pd.DataFrame(columns=["wall_s", "trial_id", "value", "best_so_far"]))
    # A trial's start is its first evaluation's time less the time it took to get there.
    first = curves.sort_values(config.EPOCH).groupby("trial_id", sort=False).first()
    start = (first["wall_s"] - first["time_total_s"]).rename("start_s")
    by_trial = (
        table[["trial_id", config.VAL_MACRO_F1]]
        .rename(columns={config.VAL_MACRO_F1: "value"})
        .merge(start, left_on="trial_id", right_index=True, how="inner")
        .sort_values(["start_s", "trial_id"], kind="stable")
        .reset_index(drop=True)
    )
    by_trial.insert(0, "trial_index", range(len(by_trial)))
    by_trial["best_so_far"] = by_trial["value"].cummax()
    by_time = (
        curves[["wall_s", "trial_id", config.VAL_MACRO_F1]]
        .rename(columns={config.VAL_MACRO_F1: "value"})
        .sort_values(["wall_s", "trial_id"], kind="stable")
        .reset_index(drop=True)
    )
    by_time["best_so_far"] = by_time["value"].cummax()
    return History(by_trial, by_time)


class ComputeTime(NamedTuple):
    """What the search cost."""

    #: Sum over trials of each trial's training time so far (its last `time_total_s`): the
    #: search's trials and the confirmation's together.
    trials_s: float
    #: From the first trial's start to the last report (the confirmation's included).
    wall_s: float
    #: The part of `trials_s` spent by the confirmation trials (0 without any).
    confirm_s: float = 0.0


def compute_time(curves: pd.DataFrame, confirmation: pd.DataFrame | None = None) -> ComputeTime:
    """Total trial time and wall time of a run; NaN when the results carry no times.

    Args:
        curves: The search trials' `learning_curves`.
        confirmation: The confirmation trials' `learning_curves` (None: the run has none); the
            seeds retrained after the search cost time too, and a headline without them
            understates what the run took.
    """
    if not len(curves) or "time_total_s" not in curves or curves["time_total_s"].isna().all():
        return ComputeTime(float("nan"), float("nan"))
    search_s = _trial_time(curves)
    wall_s = float(curves["wall_s"].max())
    if confirmation is None or not len(confirmation) or "time_total_s" not in confirmation:
        return ComputeTime(search_s, wall_s)
    confirm_s = _trial_time(confirmation)
    if "timestamp" in curves and "timestamp" in confirmation:
        # Both sets of curves measure wall_s from their own first start: span them in time.
        started = (curves["timestamp"] - curves["time_total_s"]).min()
        ended = max(curves["timestamp"].max(), confirmation["timestamp"].max())
        wall_s = float(ended - started)
    return ComputeTime(search_s + confirm_s, wall_s, confirm_s)


def _trial_time(curves: pd.DataFrame) -> float:
    return float(curves.groupby("trial_id")["time_total_s"].max().fillna(0.0).sum())


def whole_epochs(curves: pd.DataFrame) -> bool:
    """True when every evaluation sits at a whole epoch (the curves' axis ticks every epoch)."""
    epochs = pd.to_numeric(curves.get(config.EPOCH, pd.Series(dtype=float)), errors="coerce")
    return bool(len(epochs)) and bool((epochs.dropna() % 1 == 0).all())
