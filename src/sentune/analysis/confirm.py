"""Confirmation over seeds: which configurations are retrained over which seeds, their scores
over those seeds (`confirm.csv`) and the configuration that wins.

The plan is what the search runs (`sentune.search` imports `confirmation_plan`); the scores are
read from the run's confirmation trials like any other trials, through the leaderboard.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from sentune import config, runs
from sentune.analysis.ranking import COMPLETED, STOPPED, leaderboard
from sentune.runs import Run

#: `confirm.csv`: one row per configuration and seed that trained the full budget, configurations
#: in leaderboard order, then the configuration's mean and std over its seeds.
CONFIRM_COLUMNS = [
    "rank",
    "trial_id",
    "seed",
    config.VAL_MACRO_F1,
    "mean",
    "std",
    "n_seeds",
    "confirm_trial",
    "best_epoch",
    "checkpoint",
]
_CONFIRM_STATS = ("mean", "std", "n_seeds")
#: The per-configuration summary of a confirmation, best mean first.
CONFIRM_CONFIG_COLUMNS = ["rank", "trial_id", "mean", "std", "n_seeds", "seeds_planned"]


class ConfirmItem(NamedTuple):
    """One configuration to confirm: the search trial holding it and the seeds it needs."""

    #: The trial's leaderboard rank (1 = first).
    rank: int
    trial_id: str
    #: Every seed the configuration is scored over, the search trial's own first.
    seeds: tuple[int, ...]
    #: The search trial's seed when it trained the full budget (it counts as that seed), else
    #: None (every seed is retrained).
    searched_seed: int | None

    @property
    def missing(self) -> tuple[int, ...]:
        """The seeds a confirmation trial has to train."""
        return tuple(s for s in self.seeds if s != self.searched_seed)


def confirmation_plan(run: Run, table: pd.DataFrame | None = None) -> list[ConfirmItem]:
    """Which configurations are confirmed over which seeds (empty when `budget.confirm_seeds`
    is 0).

    The first `config.confirm_top(budget)` trials of the leaderboard that were scored without
    error: those that trained the full budget come first (`RANKING_RULE`). Seeds are the trial's
    `train.seed` and the ones after it, so every configuration is scored over as many seeds;
    a trial that trained the full budget is its own first seed, so only the others are trained.

    Args:
        run: The run (its search trials).
        table: `leaderboard(run)`, when already computed.
    """
    budget = run.manifest.budget
    if budget.confirm_seeds <= 0:
        return []
    table = leaderboard(run) if table is None else table
    scored = table[table[config.VAL_MACRO_F1].notna() & table["status"].isin([COMPLETED, STOPPED])]
    plan = []
    for position, row in scored.head(config.confirm_top(budget)).iterrows():
        first = runs.trial_seed(run.params[row["trial_id"]])
        plan.append(
            ConfirmItem(
                rank=int(position) + 1,
                trial_id=str(row["trial_id"]),
                seeds=tuple(first + i for i in range(budget.confirm_seeds)),
                searched_seed=first if row["status"] == COMPLETED else None,
            )
        )
    return plan


def expected_confirm_trials(budget: config.BudgetConfig) -> int:
    """The full-budget trials a confirmation over seeds is expected to add: `confirmation_plan`'s
    count where the top trials trained the full budget (each is its own first seed), as they
    usually do (the leaderboard ranks them first). The search's estimates count them."""
    return min(config.confirm_top(budget), budget.trials) * max(0, budget.confirm_seeds - 1)


class Confirmation(NamedTuple):
    """The confirmed configurations' scores over seeds, and the configuration that wins."""

    #: `CONFIRM_COLUMNS`: one row per configuration and seed that trained the full budget.
    table: pd.DataFrame
    #: `CONFIRM_CONFIG_COLUMNS`, best mean first (ties: the better leaderboard rank).
    configs: pd.DataFrame
    #: The search trial whose configuration has the best mean (None: no seed has a score yet).
    winner: str | None

    def winner_seed(self) -> pd.Series | None:
        """The winning configuration's best seed (its checkpoint is the one exported)."""
        if self.winner is None:
            return None
        rows = self.table[self.table["trial_id"] == self.winner]
        return rows.loc[rows[config.VAL_MACRO_F1].idxmax()]


def format_mean_std(values: list[float]) -> str:
    """`0.7012 ± 0.0040` (sample std; `± n/a` for one value): how a confirmed score is shown."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.4f} ± n/a"
    return f"{mean:.4f} ± {float(np.std(values, ddof=1)):.4f}"


def confirmation(run: Run, table: pd.DataFrame | None = None) -> Confirmation | None:
    """Score the confirmed configurations over their seeds (None: the run has no confirmation
    trials).

    A seed counts once it trained the full budget: the search trial's own (see
    `confirmation_plan`) or a confirmation trial's; each is scored by its best epoch, as the
    leaderboard scores trials. Seeds still training or failed are left out, so an interrupted
    confirmation gives means over fewer seeds (`n_seeds` < `seeds_planned`).

    Args:
        run: The run, with its confirmation trials (`run.confirmation`).
        table: `leaderboard(run)`, when already computed.
    """
    if run.confirmation is None:
        return None  # off, an older run, or a search that has not got there
    table = leaderboard(run) if table is None else table
    plan = confirmation_plan(run, table)
    if not plan:
        return None
    retrained: dict[tuple[str, int], tuple[str, pd.Series]] = {}
    for _, row in leaderboard(run.confirmation).iterrows():
        if row["status"] != COMPLETED:
            continue
        params = run.confirmation.params[row["trial_id"]]
        key = (str(params.get(runs.CONFIRMS_KEY)), runs.trial_seed(params))
        retrained[key] = (str(row["trial_id"]), row)
    searched = table.set_index("trial_id")
    rows = []
    for item in plan:
        for seed in item.seeds:
            if seed == item.searched_seed:
                confirm_trial, score = "", searched.loc[item.trial_id]
            elif (item.trial_id, seed) in retrained:
                confirm_trial, score = retrained[(item.trial_id, seed)]
            else:
                continue
            rows.append(
                {
                    "rank": item.rank,
                    "trial_id": item.trial_id,
                    "seed": seed,
                    config.VAL_MACRO_F1: float(score[config.VAL_MACRO_F1]),
                    "confirm_trial": confirm_trial,
                    "best_epoch": score["best_epoch"],
                    "checkpoint": score["checkpoint"],
                }
            )
    frame = pd.DataFrame(rows, columns=[c for c in CONFIRM_COLUMNS if c not in _CONFIRM_STATS])
    stats = frame.groupby("trial_id")[config.VAL_MACRO_F1].agg(["mean", "std", "count"])
    stats = stats.rename(columns={"count": "n_seeds"})
    frame = frame.join(stats, on="trial_id")[CONFIRM_COLUMNS]
    configs = pd.DataFrame(
        [
            {
                "rank": item.rank,
                "trial_id": item.trial_id,
                "seeds_planned": len(item.seeds),
                **(stats.loc[item.trial_id] if item.trial_id in stats.index else {"n_seeds": 0}),
            }
            for item in plan
        ],
        columns=CONFIRM_CONFIG_COLUMNS,
    )
    configs["n_seeds"] = configs["n_seeds"].fillna(0).astype(int)
    configs = configs.sort_values(
        ["mean", "rank"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    scored = configs[configs["n_seeds"] > 0]
    winner = str(scored["trial_id"].iloc[0]) if len(scored) else None
    return Confirmation(frame, configs, winner)
