"""The benchmark's numbers from its runs' evaluations: anytime curves, time to a target, bands
over seeds, overheads per trial and the per-method summary. Plain data (pandas and numpy); the
terms are defined in `DEFINITIONS`, which `summary.md` repeats."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentune import config
from sentune.bench.methods import PEER, MethodRun
from sentune.bench.throughput import TRIAL_LOOP

#: What the benchmark's numbers mean (markdown; the "Definitions" section of `summary.md`).
DEFINITIONS = """\
- **Cumulative trial-seconds** at an evaluation: the evaluations of all trials of a search are put
  in the order they were reported (`timestamp`, Tune's whole-second report time, ties broken by
  `time_total_s`); at evaluation *k* it is the sum over trials of `time_total_s` of each trial's
  latest evaluation at or before *k* (`time_total_s`: seconds since the trial started, model
  loading included). Running trials count up to their latest report; a trial contributes nothing
  after its last report. For the peer, a trial starts when `model_init` is called.
- **Wall-clock seconds**: time of the evaluation minus the time the method's search was started
  (data already prepared; Ray already running).
- **Best so far**: the running maximum of `val_macro_f1` over those evaluations.
- **Time to target**: the first cumulative trial-second (or wall second) at which the best so far
  reaches the target; missing when it never does.
- **Overhead per trial** (Ray trials): `time_total_s - train_s - evaluations * eval_s`, where
  `train_s` is the trial's own training time (optimizer steps only) and `eval_s` is one
  validation pass timed outside Ray with the same threads. It holds model loading, checkpoint
  saves, batching outside the timed steps and Ray's actor start, reporting and persistence; the
  same quantity of a direct `run_trial` call (no Ray) is reported beside it, so the difference is
  Ray's share.
"""

_BAND_POINTS = 200


@dataclass(frozen=True)
class BenchResults:
    """What `compute_results` computed: per-run rows, curves, bands, summary and throughput."""

    results: pd.DataFrame
    curves: pd.DataFrame
    bands: pd.DataFrame
    summary: pd.DataFrame
    throughput: pd.DataFrame
    target: float
    target_source: str


# --- anytime curves and time to target -------------------------------------------------------


def anytime_curve(reports: pd.DataFrame, *, started: float = 0.0) -> pd.DataFrame:
    """Best validation macro-F1 so far against cumulative trial-seconds and wall seconds
    (see `DEFINITIONS`).

    Args:
        reports: One row per evaluation: `trial_id`, `timestamp`, `time_total_s`, the objective.
        started: Unix time the search started (`wall_s` is measured from it).

    Returns:
        One row per evaluation, in report order: `trial_id`, `timestamp`, `wall_s`, `trial_s`
        (cumulative trial-seconds), the objective and `best` (best so far).
    """
    columns = ["trial_id", "timestamp", "wall_s", "trial_s", config.VAL_MACRO_F1, "best"]
    if reports.empty:
        return pd.DataFrame(columns=columns)
    ordered = reports.sort_values(["timestamp", "time_total_s"], kind="stable")
    latest: dict[str, float] = {}
    trial_s = []
    for trial_id, total in zip(ordered["trial_id"], ordered["time_total_s"], strict=True):
        latest[trial_id] = float(total)
        trial_s.append(sum(latest.values()))
    curve = pd.DataFrame(
        {
            "trial_id": ordered["trial_id"].to_numpy(),
            "timestamp": ordered["timestamp"].to_numpy(dtype=float),
            "wall_s": ordered["timestamp"].to_numpy(dtype=float) - started,
            "trial_s": trial_s,
            config.VAL_MACRO_F1: ordered[config.VAL_MACRO_F1].to_numpy(dtype=float),
        }
    )
    curve["best"] = curve[config.VAL_MACRO_F1].cummax()
    return curve[columns]


def time_to_target(curve: pd.DataFrame, target: float, *, x: str = "trial_s") -> float:
    """The first `x` (trial-seconds or wall seconds) at which the best so far reaches `target`;
    NaN when it never does."""
    reached = curve.loc[curve["best"] >= target, x]
    return float(reached.iloc[0]) if len(reached) else math.nan


def step_values(curve: pd.DataFrame, grid: np.ndarray, *, x: str = "trial_s") -> np.ndarray:
    """The best so far at each grid point (a step function; NaN before the first evaluation)."""
    xs = curve[x].to_numpy(dtype=float)
    best = curve["best"].to_numpy(dtype=float)
    index = np.searchsorted(xs, grid, side="right") - 1
    return np.where(index >= 0, best[np.clip(index, 0, None)], np.nan)


def curve_bands(curves: pd.DataFrame, *, x: str = "trial_s", points: int = _BAND_POINTS):
    """Median, quartiles and min/max over seeds of each method's anytime curve, on one grid.

    Args:
        curves: Anytime curves of several runs, with `method` and `seed` columns.
        x: `trial_s` or `wall_s`.
        points: Grid points from 0 to the largest `x` of any run.

    Returns:
        One row per (method, grid point): `method`, `x` (the axis name), `value`, `median`,
        `q25`, `q75`, `min`, `max` and `n` (seeds with an evaluation by then).
    """
    if curves.empty:
        return pd.DataFrame(
            columns=["method", "x", "value", "median", "q25", "q75", "min", "max", "n"]
        )
    grid = np.linspace(0.0, float(curves[x].max()), points)
    rows = []
    for method, group in curves.groupby("method", sort=False):
        stacked = np.vstack(
            [step_values(run, grid, x=x) for _, run in group.groupby("seed", sort=True)]
        )
        n = np.sum(~np.isnan(stacked), axis=0)
        # All-NaN columns (before any seed's first evaluation) stay NaN without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = {
                "median": np.nanmedian(stacked, axis=0),
                "q25": np.nanpercentile(stacked, 25, axis=0),
                "q75": np.nanpercentile(stacked, 75, axis=0),
                "min": np.nanmin(stacked, axis=0),
                "max": np.nanmax(stacked, axis=0),
            }
        frame = pd.DataFrame({"method": method, "x": x, "value": grid, **stats, "n": n})
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


# --- overheads -------------------------------------------------------------------------------


def trial_overheads(reports: pd.DataFrame, *, eval_s: float | None) -> pd.DataFrame:
    """Per Ray trial: wall time, training time, evaluations and what is left (see
    `DEFINITIONS`): `trial_id`, `wall_s`, `train_s`, `evaluations`, `nontrain_s`, `overhead_s`."""
    columns = ["trial_id", "wall_s", "train_s", "evaluations", "nontrain_s", "overhead_s"]
    if reports.empty or "train_s" not in reports:
        return pd.DataFrame(columns=columns)
    grouped = reports.groupby("trial_id", sort=True)
    table = pd.DataFrame(
        {
            "wall_s": grouped["time_total_s"].max(),
            "train_s": grouped["train_s"].max(),
            "evaluations": grouped.size(),
        }
    ).reset_index()
    table["nontrain_s"] = table["wall_s"] - table["train_s"]
    table["overhead_s"] = (
        table["nontrain_s"] - table["evaluations"] * eval_s if eval_s is not None else math.nan
    )
    return table[columns]


# --- per run and per method ------------------------------------------------------------------


def compute_results(
    runs: list[MethodRun],
    throughput: pd.DataFrame,
    *,
    target: float | None,
    budget_s: float,
) -> BenchResults:
    """Curves, time to target, final bests and overheads of every run; medians per method.

    Args:
        runs: The searches, any methods and seeds.
        throughput: `measure_throughput`'s table (may be empty).
        target: Macro-F1 to reach (None: the peer's median final best, else the lowest
            median final best of the methods).
        budget_s: The budget each search had.

    Returns:
        The tables and the target with where it came from.
    """
    curves = pd.concat(
        [
            anytime_curve(run.reports, started=run.started).assign(method=run.method, seed=run.seed)
            for run in runs
        ],
        ignore_index=True,
    )
    finals = {
        (run.method, run.seed): float(c["best"].iloc[-1]) if len(c) else math.nan
        for run in runs
        for c in [curves[(curves["method"] == run.method) & (curves["seed"] == run.seed)]]
    }
    target, source = _target(finals, target)
    eval_s = _trial_eval_s(throughput)
    rows = []
    for run in runs:
        curve = curves[(curves["method"] == run.method) & (curves["seed"] == run.seed)]
        overheads = trial_overheads(run.reports, eval_s=eval_s)
        rows.append(
            {
                "method": run.method,
                "seed": run.seed,
                "final_best": finals[(run.method, run.seed)],
                "time_to_target_trial_s": time_to_target(curve, target, x="trial_s"),
                "time_to_target_wall_s": time_to_target(curve, target, x="wall_s"),
                "trials": run.trials,
                "evaluations": len(run.reports),
                "failed": len(run.errors),
                "trial_s_total": float(curve["trial_s"].iloc[-1]) if len(curve) else 0.0,
                "last_report_wall_s": float(curve["wall_s"].iloc[-1]) if len(curve) else 0.0,
                "budget_s": budget_s,
                "trial_wall_s_mean": _mean(overheads["wall_s"]),
                "nontrain_s_mean": _mean(overheads["nontrain_s"]),
                "overhead_s_mean": _mean(overheads["overhead_s"]),
                "overhead_s_per_eval": _mean(overheads["overhead_s"] / overheads["evaluations"]),
                "peak_rss_mb": run.peak_rss_mb if run.peak_rss_mb is not None else math.nan,
                "run_dir": run.run_dir or "",
            }
        )
    results = pd.DataFrame(rows)
    bands = pd.concat(
        [curve_bands(curves, x="trial_s"), curve_bands(curves, x="wall_s")], ignore_index=True
    )
    return BenchResults(
        results=results,
        curves=curves,
        bands=bands,
        summary=summarise(results),
        throughput=throughput,
        target=target,
        target_source=source,
    )


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _target(finals: dict[tuple[str, int], float], target: float | None) -> tuple[float, str]:
    if target is not None:
        return float(target), "given"
    by_method: dict[str, list[float]] = {}
    for (method, _seed), value in finals.items():
        by_method.setdefault(method, []).append(value)
    medians = {m: float(np.nanmedian(v)) for m, v in by_method.items() if not np.all(np.isnan(v))}
    if PEER in medians:
        return medians[PEER], "the peer's median final best"
    if not medians:
        return math.nan, "no evaluations"
    return min(medians.values()), "the lowest median final best of the methods"


def _trial_eval_s(throughput: pd.DataFrame) -> float | None:
    if throughput.empty:
        return None
    rows = throughput[throughput["loop"] == TRIAL_LOOP]
    return float(rows["eval_s"].iloc[0]) if len(rows) else None


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method: medians over seeds, spreads, and time to target against the peer's.

    A run that never reaches the target counts as infinitely slow in the median; `reached` says
    how many did. `speedup_vs_peer` is the peer's median time to target over the method's
    (above 1: the method gets there sooner), on cumulative trial-seconds and on wall seconds;
    `wall_ratio_q25`/`wall_ratio_q75` the quartiles over seeds of each seed's wall time to the
    target over the peer's median (below 1: sooner); `final_best_ge_peer` the seeds whose final
    best is at least the peer's with the same seed.

    Args:
        results: `compute_results`'s per-run table.

    Returns:
        One row per method, in the order of `results`.
    """
    rows = []
    for method, group in results.groupby("method", sort=False):
        rows.append(
            {
                "method": method,
                "seeds": len(group),
                "final_best_median": float(group["final_best"].median()),
                "final_best_min": float(group["final_best"].min()),
                "final_best_max": float(group["final_best"].max()),
                "reached": int(group["time_to_target_trial_s"].notna().sum()),
                "ttt_trial_s_median": _median_time(group["time_to_target_trial_s"]),
                "ttt_wall_s_median": _median_time(group["time_to_target_wall_s"]),
                "trials_median": float(group["trials"].median()),
                "evaluations_median": float(group["evaluations"].median()),
                "overhead_s_per_trial": float(group["overhead_s_mean"].median()),
                "peak_rss_mb": float(group["peak_rss_mb"].max()),
            }
        )
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    peer = summary[summary["method"] == PEER]
    for x in ("trial_s", "wall_s"):
        column = f"ttt_{x}_median"
        peer_time = float(peer[column].iloc[0]) if len(peer) else math.nan
        summary[f"speedup_vs_peer_{x}"] = peer_time / summary[column]
    # The spread of the wall-time ratio over seeds (each seed's time to the target over the
    # peer's median; a seed that never gets there is infinitely slow), and how many seeds end
    # at or above the peer's final best with the same seed.
    peer_wall = float(peer["ttt_wall_s_median"].iloc[0]) if len(peer) else math.nan
    peer_finals = results[results["method"] == PEER].set_index("seed")["final_best"]
    quartiles, wins = [], []
    for method in summary["method"]:
        group = results[results["method"] == method]
        ratios = group["time_to_target_wall_s"].fillna(math.inf) / peer_wall
        # The nearest seed's ratio: interpolating toward a seed that never got there (inf)
        # would give NaN.
        quartiles.append(
            np.quantile(ratios, [0.25, 0.75], method="nearest") if len(ratios) else [math.nan] * 2
        )
        paired = group.set_index("seed")["final_best"].reindex(peer_finals.index).dropna()
        wins.append(int((paired >= peer_finals.reindex(paired.index)).sum()))
    summary["wall_ratio_q25"] = [q[0] for q in quartiles]
    summary["wall_ratio_q75"] = [q[1] for q in quartiles]
    summary["final_best_ge_peer"] = wins
    return summary


def _median_time(times: pd.Series) -> float:
    return float(times.fillna(math.inf).median())
