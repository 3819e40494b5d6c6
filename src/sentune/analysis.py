"""A run read into plain data: the leaderboard, learning curves, parameter importance, token
lengths and summaries. No figures (`report.py` draws them) and no model runs (`evaluate.py` scores
the floor and the winner; `analyze` gathers everything the report shows).

Reads the run through `runs.py`, so it works on a finished, interrupted or still-running search
without the search process or Ray.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config, runs
from sentune.importance import parameter_importance
from sentune.runs import Manifest, Run, open_run

if TYPE_CHECKING:
    from sentune.data import PreparedData
    from sentune.space import Param
    from sentune.train.evaluate import Confusion, Floor

log = logging.getLogger(__name__)

#: Leaderboard columns before the searched parameters (DESIGN.md contract, then extras).
LEADERBOARD_COLUMNS = [
    "trial_id",
    config.OBJECTIVE,
    "best_epoch",
    "epochs",
    "stopped_early",
    "status",
    "rung",
    "train_s",
    config.TRAIN_SAMPLES_PER_S,
    config.VAL_F1_WEIGHTED,
    config.VAL_ACCURACY,
    config.VAL_LOSS,
    "checkpoint",
    "error",
]


#: Numeric per-evaluation columns kept in the learning curves (besides per-class P/R).
_CURVE_COLUMNS = [
    config.EPOCH,
    config.OBJECTIVE,
    config.VAL_F1_WEIGHTED,
    config.VAL_ACCURACY,
    config.VAL_LOSS,
    config.TRAIN_LOSS,
    config.TRAIN_SAMPLES_PER_S,
    "train_s",
    "time_total_s",
    "timestamp",
]


def asha_rungs(budget: config.BudgetConfig, strategy: str) -> list[float]:
    """The epochs at which ASHA compares trials (its rungs), ending with `max_epochs`.

    Ray's `ASHAScheduler` puts rungs at `grace_period * reduction_factor**k` up to `max_epochs`;
    a FIFO strategy has no rung before the last epoch.
    """
    max_epochs = float(budget.max_epochs)
    if strategy.endswith("fifo"):
        return [max_epochs]
    grace, factor = float(budget.grace_period), float(budget.reduction_factor)
    count = int(math.log(max_epochs / grace) / math.log(factor) + 1)
    rungs = [grace * factor**k for k in range(count)]
    return sorted({r for r in rungs if r < max_epochs} | {max_epochs})


#: How the leaderboard orders trials (shown in the report), as one sentence.
RANKING_RULE = (
    "Trials trained for the full epoch budget come first, ranked by their best epoch's score; "
    "the others follow, ranked by their score at the highest epoch they all reached (f1@N), "
    "so no score is compared with one from a longer training."
)
#: What each trial was compared on: the epoch and its score there.
RANK_COLUMNS = ["rank_epoch", "rank_score"]
#: Per-epoch score columns of the leaderboard: `f1@1`, `f1@2`, … (blank where not reached).
EPOCH_SCORE_PREFIX = "f1@"


def epoch_score_column(epoch: float) -> str:
    """The leaderboard column holding each trial's score at `epoch` (`f1@2`)."""
    return f"{EPOCH_SCORE_PREFIX}{epoch:g}"


def leaderboard(run: Run) -> pd.DataFrame:
    """One row per trial, best first at equal fidelity (see `RANKING_RULE`).

    A trial's `val_macro_f1` is its best epoch's score; the order compares trials that trained
    equally long: those that reached `budget.max_epochs` by that score, then the others by their
    score at the highest epoch all of them reached (`rank_epoch`, `rank_score`). ASHA promotes
    whichever trial meets a rung unopposed (the first ones when trials run one at a time), so
    ranking best-of-3-epochs against best-of-1 would crown the trial order.

    Columns: those of `LEADERBOARD_COLUMNS`, then `f1@<epoch>` for every epoch evaluated (blank
    where a trial did not get there), then one per searched parameter (dotted key; blank where
    the parameter was inactive). `status` is `completed` (trained every epoch), `stopped` (ASHA
    stopped it), `error` or `unfinished` (running, or the search was killed); `rung` is the last
    ASHA rung it reached (an epoch count, 0 before the first).
    """
    searched = run.manifest.space.searched
    max_epochs = run.manifest.budget.max_epochs
    rungs = asha_rungs(run.manifest.budget, run.manifest.strategy)
    rows, by_epoch = [], {}
    for trial_id, params in run.params.items():
        history = run.histories.get(trial_id, pd.DataFrame())
        row: dict[str, Any] = {"trial_id": trial_id, "error": run.errors.get(trial_id, "")}
        done = False
        if config.OBJECTIVE in history and len(history):
            best = history.loc[history[config.OBJECTIVE].idxmax()]
            epochs = float(history[config.EPOCH].max())
            done = bool(history["done"].iloc[-1]) if "done" in history else False
            row.update(
                {
                    config.OBJECTIVE: best[config.OBJECTIVE],
                    "best_epoch": best[config.EPOCH],
                    "epochs": epochs,
                    "train_s": _column_max(history, "train_s"),
                    config.TRAIN_SAMPLES_PER_S: _column_mean(history, config.TRAIN_SAMPLES_PER_S),
                    config.VAL_F1_WEIGHTED: best.get(config.VAL_F1_WEIGHTED),
                    config.VAL_ACCURACY: best.get(config.VAL_ACCURACY),
                    config.VAL_LOSS: best.get(config.VAL_LOSS),
                }
            )
            # A trial retried from its checkpoint reports some epochs again: the last counts.
            by_epoch[trial_id] = history.groupby(config.EPOCH)[config.OBJECTIVE].last()
        else:
            row.update({"epochs": 0.0})
        if row["error"]:
            row["status"] = "error"
        elif row["epochs"] >= max_epochs:
            row["status"] = "completed"
        else:
            row["status"] = "stopped" if done else "unfinished"
        row["stopped_early"] = row["status"] == "stopped"
        row["rung"] = max((r for r in rungs if r <= row["epochs"]), default=0.0)
        best_checkpoint = runs.best_checkpoint(run.trial_dir(trial_id))
        row["checkpoint"] = str(best_checkpoint) if best_checkpoint else ""
        row.update({key: params.get(key) for key in searched})
        rows.append(row)
    epochs = sorted({float(e) for scores in by_epoch.values() for e in scores.index})
    score_columns = [epoch_score_column(e) for e in epochs]
    table = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS + list(searched))
    table["rank_epoch"], table["rank_score"] = np.nan, np.nan
    for epoch, column in zip(epochs, score_columns, strict=True):
        table[column] = [
            by_epoch[t].get(epoch, np.nan) if t in by_epoch else np.nan for t in table["trial_id"]
        ]
    table = table[LEADERBOARD_COLUMNS + RANK_COLUMNS + score_columns + list(searched)]
    return _rank_at_equal_fidelity(table, by_epoch, max_epochs)


def _rank_at_equal_fidelity(
    table: pd.DataFrame, by_epoch: dict[str, pd.Series], max_epochs: float
) -> pd.DataFrame:
    """Order `table` by `RANKING_RULE`, filling `rank_epoch` and `rank_score` (what each trial
    was compared on)."""
    scored = table[config.OBJECTIVE].notna()
    full = scored & (table["epochs"] >= max_epochs)
    others = scored & ~full
    table.loc[full, "rank_epoch"] = table.loc[full, "epochs"]
    table.loc[full, "rank_score"] = table.loc[full, config.OBJECTIVE]
    if others.any():
        common = float(table.loc[others, "epochs"].min())
        # The score AT the common epoch; a trial evaluated between epochs (eval_every_steps)
        # but not exactly there counts its last evaluation before it.
        table.loc[others, "rank_epoch"] = common
        table.loc[others, "rank_score"] = [
            _score_at(by_epoch[t], common) for t in table.loc[others, "trial_id"]
        ]
    table["_tier"] = np.select([full, others], [0, 1], 2)
    # Ties keep the longer-trained, then the better best-epoch trial first.
    return (
        table.sort_values(
            ["_tier", "rank_score", "epochs", config.OBJECTIVE],
            ascending=[True, False, False, False],
            na_position="last",
            kind="stable",
        )
        .drop(columns="_tier")
        .reset_index(drop=True)
    )


def _score_at(scores: pd.Series, epoch: float) -> float:
    """The last score reported at or before `epoch` (NaN when none was)."""
    before = scores[scores.index <= epoch]
    return float(before.iloc[-1]) if len(before) else float("nan")


def _column_max(history: pd.DataFrame, column: str) -> float:
    return float(history[column].max()) if column in history else float("nan")


def _column_mean(history: pd.DataFrame, column: str) -> float:
    return float(history[column].mean()) if column in history else float("nan")


# --- accuracy against latency: the Pareto front ---------------------------------------------

#: `pareto.csv` columns before the searched parameters: each trial's leaderboard score (its
#: best epoch), how long it trained, its inference cost, whether it is on the front of
#: macro-F1 against p95 latency and whether it meets the latency budget.
PARETO_COLUMNS = [
    "trial_id",
    config.OBJECTIVE,
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
    measured["on_front"] = pareto_front(measured[config.OBJECTIVE], measured[config.LATENCY_P95_MS])
    measured["meets_budget"] = (
        measured[config.LATENCY_P95_MS] <= budget_ms if budget_ms is not None else True
    )
    searched = list(run.manifest.space.searched)
    measured = measured[PARETO_COLUMNS + searched].sort_values(
        ["on_front", config.OBJECTIVE], ascending=[False, False], kind="stable"
    )
    measured = measured.reset_index(drop=True)
    return Pareto(measured, budget_ms, choose_under_budget(measured, budget_ms))


def choose_under_budget(table: pd.DataFrame, budget_ms: float | None) -> str | None:
    """The front trial with the best macro-F1 whose p95 latency meets `budget_ms` (any, when
    None) and that has a checkpoint; None when there is none."""
    ok = table["on_front"] & table[config.OBJECTIVE].notna() & (table["checkpoint"] != "")
    if budget_ms is not None:
        ok &= table[config.LATENCY_P95_MS] <= budget_ms
    candidates = table[ok]
    if candidates.empty:
        return None
    return str(candidates.loc[candidates[config.OBJECTIVE].idxmax(), "trial_id"])


def _last_values(history: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """The last reported value of each column the history has (NaN-free)."""
    values = {}
    for column in columns:
        if column in history and history[column].notna().any():
            values[column] = float(history[column].dropna().iloc[-1])
    return values


# --- confirmation over seeds -------------------------------------------------------------------

#: `confirm.csv`: one row per configuration and seed that trained the full budget, configurations
#: in leaderboard order, then the configuration's mean and std over its seeds.
CONFIRM_COLUMNS = [
    "rank",
    "trial_id",
    "seed",
    config.OBJECTIVE,
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
    scored = table[table[config.OBJECTIVE].notna() & table["status"].isin(["completed", "stopped"])]
    plan = []
    for position, row in scored.head(config.confirm_top(budget)).iterrows():
        first = runs.trial_seed(run.params[row["trial_id"]])
        plan.append(
            ConfirmItem(
                rank=int(position) + 1,
                trial_id=str(row["trial_id"]),
                seeds=tuple(first + i for i in range(budget.confirm_seeds)),
                searched_seed=first if row["status"] == "completed" else None,
            )
        )
    return plan


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
        return rows.loc[rows[config.OBJECTIVE].idxmax()]


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
        if row["status"] != "completed":
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
                    config.OBJECTIVE: float(score[config.OBJECTIVE]),
                    "confirm_trial": confirm_trial,
                    "best_epoch": score["best_epoch"],
                    "checkpoint": score["checkpoint"],
                }
            )
    frame = pd.DataFrame(rows, columns=[c for c in CONFIRM_COLUMNS if c not in _CONFIRM_STATS])
    stats = frame.groupby("trial_id")[config.OBJECTIVE].agg(["mean", "std", "count"])
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
        table[["trial_id", config.OBJECTIVE]]
        .rename(columns={config.OBJECTIVE: "value"})
        .merge(start, left_on="trial_id", right_index=True, how="inner")
        .sort_values(["start_s", "trial_id"], kind="stable")
        .reset_index(drop=True)
    )
    by_trial.insert(0, "trial_index", range(len(by_trial)))
    by_trial["best_so_far"] = by_trial["value"].cummax()
    by_time = (
        curves[["wall_s", "trial_id", config.OBJECTIVE]]
        .rename(columns={config.OBJECTIVE: "value"})
        .sort_values(["wall_s", "trial_id"], kind="stable")
        .reset_index(drop=True)
    )
    by_time["best_so_far"] = by_time["value"].cummax()
    return History(by_trial, by_time)


class Board(NamedTuple):
    """The leaderboard as shown: its main columns, with the TF-IDF floor as a row at its rank."""

    #: The shown columns of `leaderboard`, the floor's row (`trial_id` "TF-IDF floor") inserted.
    table: pd.DataFrame
    #: The floor's row position in `table` (None: no floor).
    floor_row: int | None


#: The leaderboard's columns the report and the terminal show, before the searched parameters.
BOARD_COLUMNS = [
    "trial_id",
    config.OBJECTIVE,
    "best_epoch",
    "epochs",
    "status",
    "rung",
    "train_s",
    config.TRAIN_SAMPLES_PER_S,
]
FLOOR_LABEL = "TF-IDF floor"


def board_with_floor(table: pd.DataFrame, searched: list[str], floor: Floor | None) -> Board:
    """The leaderboard's shown columns with the floor ranked among the trials.

    Args:
        table: `leaderboard(run)`.
        searched: The searched keys (their columns follow `BOARD_COLUMNS`).
        floor: The TF-IDF floor, or None.

    Returns:
        A `Board`: the floor sits before the first trial, in leaderboard order, whose score is
        below it (the leaderboard ranks at equal fidelity, so scores need not fall steadily);
        trials that tie with the floor rank above it.
    """
    shown = table[BOARD_COLUMNS + list(searched)].copy()
    if floor is None:
        return Board(shown, None)
    below = (shown[config.OBJECTIVE] < floor.val_macro_f1).to_numpy()
    rank = int(below.argmax()) if below.any() else len(shown)
    row = pd.DataFrame([{"trial_id": FLOOR_LABEL, config.OBJECTIVE: floor.val_macro_f1}])
    shown = pd.concat([shown.iloc[:rank], row, shown.iloc[rank:]], ignore_index=True)
    return Board(shown, rank)


class ComputeTime(NamedTuple):
    """What the search cost."""

    #: Sum over trials of each trial's training time so far (its last `time_total_s`).
    trials_s: float
    #: From the first trial's start to the last report.
    wall_s: float


def compute_time(curves: pd.DataFrame) -> ComputeTime:
    """Total trial time and wall time of a run, from its learning curves (`learning_curves`);
    NaN when the results carry no times."""
    if not len(curves) or "time_total_s" not in curves or curves["time_total_s"].isna().all():
        return ComputeTime(float("nan"), float("nan"))
    trials = float(curves.groupby("trial_id")["time_total_s"].max().sum())
    return ComputeTime(trials, float(curves["wall_s"].max()))


def whole_epochs(curves: pd.DataFrame) -> bool:
    """True when every evaluation sits at a whole epoch (the curves' axis ticks every epoch)."""
    epochs = pd.to_numeric(curves.get(config.EPOCH, pd.Series(dtype=float)), errors="coerce")
    return bool(len(epochs)) and bool((epochs.dropna() % 1 == 0).all())


# --- the searched parameters -------------------------------------------------------------


def search_params(manifest: Manifest) -> dict[str, Param]:
    """The searched parameters of a run and their distributions, parsed from the manifest's copy
    of the space file (restricted to the keys the run actually searched); max_length quantiles
    are the choice the run resolved them to (the manifest's `max_length` entry)."""
    from sentune import space

    searched = manifest.space.searched
    with tempfile.TemporaryDirectory(prefix="sentune-space-") as folder:
        path = Path(folder) / f"{manifest.space.name}.yaml"
        path.write_text(manifest.space.text)
        spec = space.load(path)
    params = {key: spec.params[key] for key in searched if key in spec.params}
    key = space.MAX_LENGTH_KEY
    if key in params and params[key].kind == "quantiles":
        params[key] = space.Param("choice", tuple((manifest.max_length or {})["values"]))
    return params


class ParamAxis(NamedTuple):
    """How one searched parameter is drawn in every panel, decided by its distribution in the
    run's space (never by its observed values: `choice: [0, 1, 2]` is three categories, not a
    range from 0 to 2)."""

    key: str
    #: "category" (a `choice`), "log" (`loguniform`) or "linear" (every other range).
    scale: str
    #: A categorical parameter's choices in the space's order; empty otherwise.
    choices: tuple = ()
    #: The label of each choice (`value_label`), in the same order.
    categories: tuple[str, ...] = ()

    def label(self, value: Any) -> str:
        """The label of a trial's value: its choice's label when it is one of the choices."""
        for choice, text in zip(self.choices, self.categories, strict=True):
            if _same_value(choice, value):
                return text
        return value_label(value)


def value_label(value: Any) -> str:
    """A parameter value as a reader sees it: `0.003`, `1e-05`, `mean`, `true`, `null`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def _same_value(choice: Any, value: Any) -> bool:
    # pandas turns a column of ints with a gap into floats: 1.0 is the choice 1, True is not.
    if isinstance(choice, bool | np.bool_) or isinstance(value, bool | np.bool_):
        return (
            isinstance(choice, bool | np.bool_)
            and isinstance(value, bool | np.bool_)
            and (bool(choice) == bool(value))
        )
    if isinstance(choice, int | float) and isinstance(value, int | float | np.number):
        return float(choice) == float(value)
    return choice == value


def param_axes(params: dict[str, Param]) -> dict[str, ParamAxis]:
    """The axis of each searched parameter, from its distribution.

    Args:
        params: `search_params(manifest)` (or the observed stand-in when the space no longer
            loads).

    Returns:
        `{key: ParamAxis}` in the order of `params`.
    """
    axes = {}
    for key, param in params.items():
        if param.kind == "choice":
            choices = tuple(param.args)
            axes[key] = ParamAxis(key, "category", choices, tuple(value_label(c) for c in choices))
        else:
            axes[key] = ParamAxis(key, "log" if param.kind == "loguniform" else "linear")
    return axes


def param_values(table: pd.DataFrame, axes: dict[str, ParamAxis]) -> pd.DataFrame:
    """The searched values of each trial as they are drawn, in the leaderboard's order.

    Args:
        table: `leaderboard(run)`.
        axes: `param_axes(...)`.

    Returns:
        `trial_id`, then one column per parameter: a categorical parameter's choice label
        (str, "" when the trial has no value), a numeric parameter's float.
    """
    frame = pd.DataFrame({"trial_id": table["trial_id"]})
    for key, axis in axes.items():
        values = table[key] if key in table else pd.Series([None] * len(table))
        if axis.scale == "category":
            frame[key] = [
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else axis.label(v)
                for v in values
            ]
        else:
            frame[key] = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    return frame


def params_or_observed(run: Run) -> dict[str, Param]:
    """The run's searched parameters (`search_params`); when the space text no longer loads,
    distributions made from the values the trials took."""
    from sentune.errors import SentuneError
    from sentune.space import Param

    try:
        return search_params(run.manifest)
    except SentuneError as exc:
        log.warning("space of %s does not load (%s); using observed values", run.path, exc)
    out = {}
    for key in run.manifest.space.searched:
        seen = [p.get(key) for p in run.params.values()]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen)
        if numeric and len(set(seen)) > 1:
            out[key] = Param("uniform", (min(seen), max(seen)))
        else:
            out[key] = Param("choice", tuple(dict.fromkeys(seen)))
    return out


# --- data of the run: floor, token lengths, winner's confusion ----------------------------


#: Why the TF-IDF floor may beat the best trial, in the order `FloorVerdict.causes` names them.
FLOOR_CAUSES = ("truncation", "too few epochs", "too little data")
#: Fewer training examples than this is named as a likely cause when the floor wins: TF-IDF
#: needs far fewer examples than fine-tuning an encoder does.
SMALL_TRAIN_SIZE = 2000


class FloorVerdict(NamedTuple):
    """The TF-IDF floor matches or beats the best trial; what the likely causes are."""

    trial_id: str
    #: Validation macro-F1 of the best trial and of the floor.
    best: float
    floor: float
    #: The best trial's max_length and the share of training texts it truncates (nan: unknown).
    max_length: int
    truncated_share: float
    #: The most tokens the model takes (None: not recorded by the search).
    model_limit: int | None
    #: Its last evaluation was its best: it was still improving when it stopped.
    still_improving: bool
    epochs: float
    max_epochs: int
    train_size: int
    #: The likely causes among `FLOOR_CAUSES`, in that order; empty when none stands out.
    causes: tuple[str, ...]


def floor_verdict(
    run: Run, table: pd.DataFrame, floor: Floor | None, tokens: TokenLengths | None = None
) -> FloorVerdict | None:
    """When the best trial does not beat the floor, say why it likely lost.

    Causes: `truncation` (its max_length truncates more than `config.TRUNCATION_WARN_SHARE` of
    the training texts), `too few epochs` (its last evaluation was its best) and `too little
    data` (fewer than `SMALL_TRAIN_SIZE` training examples).

    Args:
        run: The run (the best trial's parameters, the budget, the recorded max_length shares).
        table: Its leaderboard, best first.
        floor: The reference floor (None: no verdict).
        tokens: Training token lengths; without them the shares the search recorded are used.

    Returns:
        None when there is no floor or no scored trial, or the best trial beats the floor or
        scores 1.0.
    """
    scored = table.dropna(subset=[config.OBJECTIVE])
    if floor is None or not len(scored):
        return None
    best = scored.iloc[0]
    # A perfect score ties with a perfect floor and has nothing to fix (easy data).
    if best[config.OBJECTIVE] > floor.val_macro_f1 or best[config.OBJECTIVE] >= 1.0:
        return None
    max_length = trial_max_length(run, str(best["trial_id"]))
    if tokens is not None and len(tokens.lengths):
        share = float((tokens.lengths > max_length).mean())
    else:
        recorded = (run.manifest.max_length or {}).get("truncated_share", {})
        share = float(recorded.get(str(max_length), float("nan")))
    still_improving = bool(best["best_epoch"] >= best["epochs"])
    found = {
        "truncation": share > config.TRUNCATION_WARN_SHARE,
        "too few epochs": still_improving,
        "too little data": floor.train_size < SMALL_TRAIN_SIZE,
    }
    return FloorVerdict(
        trial_id=str(best["trial_id"]),
        best=float(best[config.OBJECTIVE]),
        floor=floor.val_macro_f1,
        max_length=max_length,
        truncated_share=share,
        model_limit=(run.manifest.max_length or {}).get("limit"),
        still_improving=still_improving,
        epochs=float(best["epochs"]),
        max_epochs=int(run.manifest.budget.max_epochs),
        train_size=floor.train_size,
        causes=tuple(cause for cause in FLOOR_CAUSES if found[cause]),
    )


class TokenLengths(NamedTuple):
    """Token counts of the training texts and what each candidate max_length cuts."""

    #: Tokens per training text, special tokens included.
    lengths: np.ndarray
    #: `max_length`, `truncated_share` (of training texts), `searched` (vs fixed/default).
    cuts: pd.DataFrame


def token_lengths(data: PreparedData, manifest: Manifest) -> TokenLengths:
    """Train-split token lengths and the share of texts each max_length of the run truncates."""
    from sentune.errors import SentuneError

    key = "train.max_length"
    lengths = np.asarray(data.train.lengths)
    searched = key in manifest.space.searched
    if searched:
        try:
            param = search_params(manifest)[key]
            values = list(param.args) if param.kind == "choice" else list(param.args[:2])
        except (SentuneError, KeyError):
            values = []
    else:
        values = [manifest.space.fixed.get(key, config.TrainConfig.max_length)]
    cuts = pd.DataFrame(
        {
            "max_length": [int(v) for v in sorted(set(values))],
            "truncated_share": [
                float((lengths > int(v)).mean()) if len(lengths) else float("nan")
                for v in sorted(set(values))
            ],
            "searched": searched,
        }
    )
    return TokenLengths(lengths, cuts)


def winner_confusion(
    table: pd.DataFrame, data: PreparedData, run: Run, confirmed: Confirmation | None = None
) -> Confusion | None:
    """The winner scored on the validation split: the best seed of the confirmation's winner,
    else the best trial with a kept checkpoint (None: no checkpoint yet)."""
    from sentune.train.evaluate import checkpoint_confusion

    best_seed = confirmed.winner_seed() if confirmed is not None else None
    kept = table[table["checkpoint"].fillna("").astype(str) != ""]
    if best_seed is not None and best_seed["checkpoint"]:
        winner = best_seed
    elif len(kept):
        winner = kept.iloc[0]
    else:
        return None
    return checkpoint_confusion(
        winner["checkpoint"],
        data,
        trial_id=str(winner["trial_id"]),
        max_length=trial_max_length(run, str(winner["trial_id"])),
        truncation=trial_truncation(run, str(winner["trial_id"])),
    )


def trial_max_length(run: Run, trial_id: str) -> int:
    """The max_length a trial trained with (its parameter, else the default)."""
    value = run.params.get(trial_id, {}).get("train.max_length")
    return int(value or config.TrainConfig.max_length)


def trial_truncation(run: Run, trial_id: str) -> str:
    """How a trial cut long texts (its parameter, else the default)."""
    return run.params.get(trial_id, {}).get("train.truncation") or config.TrainConfig.truncation


class DataSummary(NamedTuple):
    """The run's data as the manifest recorded it."""

    #: `split`, `examples` (used), `available` (before subsampling), then per label
    #: "count (share)".
    splits: pd.DataFrame
    #: `reason`, `rows`: what cleaning dropped.
    dropped: pd.DataFrame
    #: `item`, `value`: dataset, source, rows read and dropped, training rows used, fingerprint.
    facts: pd.DataFrame
    #: Share of each label (columns) in each split (index).
    class_shares: pd.DataFrame
    #: Training examples the trials trained on.
    train_used: int | None
    #: Training examples there were before `data.train_size` subsampled (None: unknown).
    train_available: int | None


def data_summary(manifest: Manifest) -> DataSummary:
    """The run's data as the manifest recorded it: split sizes before and after subsampling
    with class balance, and what cleaning dropped (by reason)."""
    stats = manifest.data.stats
    sizes = stats.get("split_sizes", {})
    available = _available_sizes(manifest)
    counts = stats.get("class_counts", {})
    rows = []
    for split, size in sizes.items():
        row = {"split": split, "examples": size, "available": available.get(split)}
        for label, count in counts.get(split, {}).items():
            row[label] = f"{count} ({count / size:.0%})" if size else str(count)
        rows.append(row)
    dropped = pd.DataFrame(
        [{"reason": k, "rows": v} for k, v in stats.get("dropped", {}).items()],
        columns=["reason", "rows"],
    )
    shares = pd.DataFrame(
        {
            split: {k: v / (sum(c.values()) or 1) for k, v in c.items()}
            for split, c in counts.items()
        }
    ).T
    used, total = sizes.get("train"), available.get("train")
    source = stats.get("source", {})
    facts = pd.DataFrame(
        [
            ("dataset", manifest.data.config.dataset),
            ("source", source.get("path") or source.get("hub_id") or source.get("name")),
            ("rows read", stats.get("rows_read")),
            ("rows dropped", int(dropped["rows"].sum()) if len(dropped) else 0),
            ("training rows used", _used_of(used, total)),
            ("fingerprint", manifest.data.fingerprint),
            ("train token lengths", _flat_text(stats.get("train_token_lengths"))),
        ],
        columns=["item", "value"],
    )
    return DataSummary(pd.DataFrame(rows), dropped, facts, shares, used, total)


def _available_sizes(manifest: Manifest) -> dict[str, int]:
    """Split sizes before subsampling: recorded by data.py, or, for a run made before it
    recorded them, derived where that is exact."""
    stats = manifest.data.stats
    if "available_sizes" in stats:
        return dict(stats["available_sizes"])
    sizes, dropped = stats.get("split_sizes", {}), stats.get("dropped", {})
    # Cleaning keeps every row in one split and only train (and validation, with
    # data.val_size) is subsampled: what train chose from is the rest of the rows.
    if manifest.data.config.val_size is not None or "rows_read" not in stats or not sizes:
        return {}
    kept = stats["rows_read"] - sum(dropped.values())
    return {
        "train": kept - sizes.get("validation", 0) - sizes.get("test", 0),
        "validation": sizes.get("validation"),
        "test": sizes.get("test"),
    }


def _used_of(used: int | None, total: int | None) -> str:
    if used is None:
        return "not recorded"
    if not total:
        return f"{used} (the count before subsampling was not recorded)"
    return f"{used} of {total} ({used / total:.1%})" if used < total else f"all {used}"


def _flat_text(value: Any) -> str:
    """A value as plain text: dicts as `key: value` pairs, lists comma-separated."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_flat_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


#: Manifest fields a reader checks first, in this order; the rest follow as recorded.
_MANIFEST_FIRST = ("run", "started", "space", "model", "model_path", "strategy", "seed")
#: Shown elsewhere: the data's statistics (the data panel) and the space file's text.
_MANIFEST_ELSEWHERE = ("data.stats", "space.text")


def manifest_summary(manifest: Manifest, *, params: dict[str, Param] | None = None) -> pd.DataFrame:
    """The manifest as a two-column table of plain values: nested fields flattened to
    `key.sub` (e.g. `budget.max_epochs`, `versions.torch`), lists comma-separated.

    Args:
        manifest: The run's manifest.
        params: The searched distributions; each becomes a `space.search.<key>` row
            (`choice: 0, 1, 2`) in place of the bare list of searched keys.

    Returns:
        Columns `item` (the dotted field) and `value` (text).
    """
    raw = manifest.to_dict()
    if params:
        raw["space"] = {k: v for k, v in raw["space"].items() if k != "searched"}
        raw["space"]["search"] = {
            key: f"{p.kind} [{', '.join(value_label(a) for a in p.args)}]"
            for key, p in params.items()
        }
    order = [k for k in _MANIFEST_FIRST if k in raw] + [k for k in raw if k not in _MANIFEST_FIRST]
    items: list[tuple[str, str]] = []
    for key in order:
        items += _flatten(key, raw[key])
    items = [(k, v) for k, v in items if not k.startswith(_MANIFEST_ELSEWHERE)]
    if manifest.address is None:
        items = [(k, "local" if k == "address" else v) for k, v in items]
    return pd.DataFrame(items, columns=["item", "value"])


def _flatten(key: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items() for pair in _flatten(f"{key}.{k}", v)]
    return [(key, _flat_text(value))]


# --- everything at once ------------------------------------------------------------------


@dataclass
class RunAnalysis:
    """Everything the report shows, as data. A part that could not be computed is None and
    `notes[part]` says why (the report shows the note in its place)."""

    run: Run
    table: pd.DataFrame
    curves: pd.DataFrame
    history: History
    rungs: list[float]
    importance: pd.DataFrame | None = None
    floor: Floor | None = None
    #: Set when the floor matches or beats the best trial.
    verdict: FloorVerdict | None = None
    tokens: TokenLengths | None = None
    confusion: Confusion | None = None
    data: DataSummary | None = None
    manifest: pd.DataFrame | None = None
    notes: dict[str, str] | None = None
    #: How each searched parameter is drawn (`param_axes`).
    axes: dict[str, ParamAxis] = field(default_factory=dict)
    #: Each trial's searched values as drawn (`param_values`), leaderboard order.
    param_values: pd.DataFrame | None = None
    #: Trial time and wall time of the search (`compute_time`).
    compute: ComputeTime = ComputeTime(float("nan"), float("nan"))
    #: Every evaluation at a whole epoch (`whole_epochs`).
    whole_epochs: bool = True
    #: The top configurations over seeds and the winner (`confirmation`); None when off.
    confirmation: Confirmation | None = None
    #: Macro-F1 against p95 latency (`pareto`); None when the trials measured no latency.
    pareto: Pareto | None = None

    @property
    def board(self) -> Board:
        """The leaderboard as shown, with the floor at its rank (`board_with_floor`)."""
        return board_with_floor(self.table, self.run.manifest.space.searched, self.floor)


def analyze(
    run_dir: str | Path,
    *,
    cache_dir: str | Path = config.CACHE_DIR,
    seeds: int = 3,
    bootstraps: int = 10,
    with_data: bool = True,
) -> RunAnalysis:
    """Read a run and compute every part of its report.

    Args:
        run_dir: `trials/<run>`.
        cache_dir: The token cache shared with `search` (the splits are rebuilt from the
            manifest for the floor, the token lengths and the winner's confusion matrix).
        seeds, bootstraps: Spread of the importance (see `parameter_importance`).
        with_data: False skips the parts that rebuild the data (floor, lengths, confusion).

    Returns:
        A `RunAnalysis`; parts that fail (a moved dataset, a missing checkpoint) are None with
        a note, so a report of what exists is always possible.
    """
    run = open_run(run_dir)
    table = leaderboard(run)
    curves = learning_curves(run)
    params = params_or_observed(run)
    axes = param_axes(params)
    result = RunAnalysis(
        run=run,
        table=table,
        curves=curves,
        history=optimization_history(table, curves),
        rungs=asha_rungs(run.manifest.budget, run.manifest.strategy),
        notes={},
        axes=axes,
        param_values=param_values(table, axes),
        compute=compute_time(curves),
        whole_epochs=whole_epochs(curves),
    )
    result.confirmation = _part(result, "confirmation", confirmation, run, table)
    result.pareto = _part(result, "pareto", pareto, run, table)
    result.data = _part(result, "data", data_summary, run.manifest)
    result.manifest = _part(result, "manifest", manifest_summary, run.manifest, params=params)
    result.importance = _part(
        result,
        "importance",
        parameter_importance,
        run,
        curves,
        params,
        seeds=seeds,
        bootstraps=bootstraps,
    )
    if not with_data:
        for part in ("floor", "tokens", "confusion"):
            result.notes[part] = "skipped (the data was not rebuilt)"
        return result
    from sentune.train.evaluate import reference_floor

    data = _part(
        result, "floor", runs.load_data, run.manifest, cache_dir=cache_dir, allow_changed=True
    )
    if data is None:
        for part in ("tokens", "confusion"):
            result.notes[part] = result.notes["floor"]
        return result
    recorded = run.manifest.data.fingerprint
    result.floor = _part(result, "floor", reference_floor, data, recorded_fingerprint=recorded)
    result.tokens = _part(result, "tokens", token_lengths, data, run.manifest)
    result.verdict = _part(
        result, "verdict", floor_verdict, run, table, result.floor, result.tokens
    )
    result.confusion = _part(
        result, "confusion", winner_confusion, table, data, run, result.confirmation
    )
    if result.confusion is None and "confusion" not in result.notes:
        result.notes["confusion"] = "no trial has a checkpoint yet"
    return result


def _part(result: RunAnalysis, name: str, compute, *args, **kwargs):
    """One optional part of the analysis: its value, or None and a note on why it failed."""
    try:
        return compute(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failed panel must not lose the report
        log.warning("report part %r failed: %s: %s", name, type(exc).__name__, exc)
        result.notes[name] = f"not available ({type(exc).__name__}: {exc})"
        return None


#: The accuracy-latency table of a run, beside its leaderboard.
PARETO_FILE = "pareto.csv"


def write_tables(result: RunAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write `leaderboard.csv` and `importance.csv` (and `confirm.csv`, `pareto.csv`,
    `floor.json`) into `out_dir`, each whole or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"leaderboard": runs.write_csv(result.table, out_dir / "leaderboard.csv")}
    if result.importance is not None:
        written["importance"] = runs.write_csv(result.importance, out_dir / "importance.csv")
    if result.confirmation is not None:
        written["confirm"] = runs.write_csv(result.confirmation.table, out_dir / "confirm.csv")
    if result.pareto is not None:
        written["pareto"] = runs.write_csv(result.pareto.table, out_dir / PARETO_FILE)
    if result.floor is not None:
        written["floor"] = runs.write_json(out_dir / "floor.json", result.floor._asdict())
    return written
