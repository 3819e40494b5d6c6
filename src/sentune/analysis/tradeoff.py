"""Accuracy against latency: the Pareto front of macro-F1 against p95 latency.

Every trial that measured its inference cost, which of them no other trial beats on both, and
the trial chosen under a latency budget (`pareto.csv`, the report's latency panel, `sentune
export --max-latency-ms`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis.ranking import leaderboard
from sentune.runs import Run

#: `pareto.csv` columns before the searched parameters: each trial's leaderboard score (its
#: best epoch), how long it trained, its inference cost, whether it is on the front of
#: macro-F1 against p95 latency and whether it meets the latency budget.
PARETO_COLUMNS = [
    "trial_id",
    config.VAL_MACRO_F1,
    "best_epoch",
    "epochs",
    "status",
    config.LATENCY_P95_MS,
    config.LATENCY_P50_MS,
    config.THROUGHPUT_B32,
    config.MODEL_MB,
    "on_front",
    "meets_budget",
    "checkpoint",
]


def pareto_front(scores: Any, costs: Any) -> np.ndarray:
    """Which points no other point dominates, for a score to maximise and a cost to minimise.

    A point is dominated when another has a score at least as high and a cost at least as low,
    and is better in one of the two. Equal points are all on the front. NaN points never are.

    Args:
        scores: One score per point (higher is better).
        costs: One cost per point (lower is better).

    Returns:
        A boolean mask, one entry per point.
    """
    scores, costs = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    valid = ~(np.isnan(scores) | np.isnan(costs))
    front = np.zeros(len(scores), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        at_least = (scores >= scores[i]) & (costs <= costs[i])
        better = (scores > scores[i]) | (costs < costs[i])
        front[i] = not np.any(others & at_least & better)
    return front


class Pareto(NamedTuple):
    """Macro-F1 against p95 latency: every trial with its inference cost, the front, the
    budget and the chosen trial (what `pareto.csv` and the report's panel hold)."""

    #: `PARETO_COLUMNS` then the searched parameters; front first, best macro-F1 first.
    table: pd.DataFrame
    #: The p95 latency budget in ms (the objective's bound or one given), None without one.
    budget_ms: float | None
    #: The trial with the best macro-F1 on the front under the budget (the best on the front
    #: without a budget); None when no front trial meets the budget.
    chosen: str | None


def pareto(
    run: Run, table: pd.DataFrame | None = None, *, budget_ms: float | None = None
) -> Pareto | None:
    """The accuracy-latency trade-off of a run whose trials measured their latency.

    Args:
        run: The run.
        table: Its leaderboard (computed when not given).
        budget_ms: The p95 budget; None: the run objective's bound (`Objective.budget_ms`).

    Returns:
        The `Pareto`, or None when no trial reported a latency (a search that did not ask).
    """
    table = leaderboard(run) if table is None else table
    budget_ms = run.manifest.objective.budget_ms() if budget_ms is None else budget_ms
    inference = {
        trial_id: _last_values(history, list(config.INFERENCE_METRICS))
        for trial_id, history in run.histories.items()
    }
    measured = table[
        [config.LATENCY_P95_MS in inference.get(t, {}) for t in table["trial_id"]]
    ].copy()
    if measured.empty:
        return None
    for metric in config.INFERENCE_METRICS:
        measured[metric] = [inference[t][metric] for t in measured["trial_id"]]
    measured["on_front"] = pareto_front(
        measured[config.VAL_MACRO_F1], measured[config.LATENCY_P95_MS]
    )
    measured["meets_budget"] = (
        measured[config.LATENCY_P95_MS] <= budget_ms if budget_ms is not None else True
    )
    searched = list(run.manifest.space.searched)
    measured = measured[PARETO_COLUMNS + searched].sort_values(
        ["on_front", config.VAL_MACRO_F1], ascending=[False, False], kind="stable"
    )
    measured = measured.reset_index(drop=True)
    return Pareto(measured, budget_ms, choose_under_budget(measured, budget_ms))


def choose_under_budget(table: pd.DataFrame, budget_ms: float | None) -> str | None:
    """The front trial with the best macro-F1 whose p95 latency meets `budget_ms` (any, when
    None) and that has a checkpoint; None when there is none."""
    ok = table["on_front"] & table[config.VAL_MACRO_F1].notna() & (table["checkpoint"] != "")
    if budget_ms is not None:
        ok &= table[config.LATENCY_P95_MS] <= budget_ms
    candidates = table[ok]
    if candidates.empty:
        return None
    return str(candidates.loc[candidates[config.VAL_MACRO_F1].idxmax(), "trial_id"])


def _last_values(history: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """The last reported value of each column the history has (NaN-free)."""
    values = {}
    for column in columns:
        if column in history and history[column].notna().any():
            values[column] = float(history[column].dropna().iloc[-1])
    return values
