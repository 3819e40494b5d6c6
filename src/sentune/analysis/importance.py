"""Parameter importance at equal fidelity: which searched parameters explain the score.

fANOVA (Optuna's `FanovaImportanceEvaluator`) over the trials that reached a common epoch, each
scored AT that epoch: first at the lowest common rung, which every trial reached (ASHA's
survivors alone are a selected sample: a parameter that decided which trials ASHA stopped is
constant among them), then, where enough trials went further, at that higher epoch too. The mean
over forest seeds and bootstrap resamples with its spread, and beside it the noise: the same
importance with the scores shuffled among the trials (a permutation baseline); a parameter whose
importance does not exceed its noise is marked as such and ranked after the others. Plain data;
`sentune.report` draws it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sentune import config
from sentune.runs import Run

if TYPE_CHECKING:
    from sentune.space import Param

log = logging.getLogger(__name__)

#: Trials at the importance fidelity: at least this many, and at least half of the scored trials.
MIN_FIDELITY_TRIALS = 4
#: Fewer trials than this at the chosen fidelity: no importance is computed.
MIN_IMPORTANCE_TRIALS = 3
#: Shuffles of the scores for the permutation baseline, and the quantile of their importances
#: that a parameter must exceed to count as above the noise.
PERMUTATIONS = 30
NOISE_QUANTILE = 0.95

IMPORTANCE_COLUMNS = [
    "param",
    "importance_mean",
    "importance_std",
    "low",
    "high",
    "noise",
    "below_noise",
    "fidelity_epoch",
    "n_trials",
    "note",
]


def fidelity(curves: pd.DataFrame) -> tuple[float, int] | None:
    """The highest epoch that enough trials reached to compare them there.

    Enough is `max(MIN_FIDELITY_TRIALS, half of the scored trials)`, or every scored trial
    when there are fewer. ASHA gives stopped trials fewer epochs: comparing a stopped trial's
    epoch-1 score with a finished trial's epoch-3 score would credit parameters with the
    effect of training longer.

    Returns:
        `(epoch, number of trials evaluated at that epoch)`, or None when nothing was scored.
    """
    if not len(curves):
        return None
    counts = curves.groupby(config.EPOCH)["trial_id"].nunique().sort_index()
    scored = curves["trial_id"].nunique()
    needed = min(scored, max(MIN_FIDELITY_TRIALS, math.ceil(scored / 2)))
    reached = counts[counts >= needed]
    epoch = float(reached.index.max()) if len(reached) else float(counts.idxmax())
    return epoch, int(counts[epoch])


def fidelities(curves: pd.DataFrame) -> list[tuple[float, int]]:
    """The epochs importance is computed at: the lowest common rung (the highest epoch every
    scored trial reached) and, when it is higher, `fidelity(curves)`; each with its number of
    trials. Empty when nothing was scored."""
    higher = fidelity(curves)
    if higher is None:
        return []
    counts = curves.groupby(config.EPOCH)["trial_id"].nunique().sort_index()
    common = counts[counts == curves["trial_id"].nunique()]
    if not len(common):
        return [higher]
    lowest = (float(common.index.max()), int(common.iloc[-1]))
    return [lowest] if higher[0] <= lowest[0] else [lowest, higher]


def parameter_importance(
    run: Run,
    curves: pd.DataFrame,
    params: dict[str, Param],
    *,
    seeds: int = 3,
    bootstraps: int = 10,
    permutations: int = PERMUTATIONS,
) -> pd.DataFrame:
    """fANOVA importance of each searched parameter at each of `fidelities(curves)`: the
    lowest common rung's rows first, then the higher epoch's (see `importance_at`)."""
    levels = fidelities(curves) or [(float("nan"), 0)]
    tables = [
        importance_at(
            run,
            curves,
            params,
            level,
            seeds=seeds,
            bootstraps=bootstraps,
            permutations=permutations,
        )
        for level in levels
    ]
    return pd.concat(tables, ignore_index=True)[IMPORTANCE_COLUMNS]


def importance_at(
    run: Run,
    curves: pd.DataFrame,
    params: dict[str, Param],
    level: tuple[float, int],
    *,
    seeds: int = 3,
    bootstraps: int = 10,
    permutations: int = PERMUTATIONS,
) -> pd.DataFrame:
    """fANOVA importance of each searched parameter, at equal fidelity, with its spread.

    Every trial evaluated at the fidelity epoch (see `fidelity`) enters an Optuna study with its
    score AT that epoch (not its best); Optuna's `FanovaImportanceEvaluator` then gives each
    parameter the share of the score's variance it explains alone (main effect; the rest is
    interactions and noise). This is repeated for `seeds` forest seeds on each of `bootstraps`
    resamples of the trials (the first being the trials themselves), so the spread shows which
    importances a handful of trials can actually support.

    A conditional parameter (`when:` in the space) is measured among the trials where it was
    active, by a forest over the parameters active in all of them (its parents included): fANOVA
    needs complete rows, and filling an inactive value would credit the parameter with its
    parent's effect (an inactive `head.width` is exactly `head.layers: 0`). Its `n_trials` is
    then the number of those trials, and its share is of the variance among them.

    Args:
        run: `runs.open_run(...)`.
        curves: `analysis.learning_curves(run)`.
        params: The searched distributions (`analysis.params_or_observed(run)`).
        seeds: Forest seeds per resample.
        bootstraps: Resamples of the trials (with replacement), including the original set.

    Returns:
        One row per searched parameter, most important first (those below the noise last):
        `importance_mean`, `importance_std`, `low`/`high` (5th/95th percentiles over all
        fits), `noise` (the `NOISE_QUANTILE` of its importance over `permutations` shuffles of
        the scores), `below_noise`, `fidelity_epoch`, `n_trials` (those the parameter was
        measured on), and `note`, which says why the numbers are missing when they are.
    """
    searched = list(params)
    epoch, n = level

    def without_numbers(note: str) -> pd.DataFrame:
        rows = [
            {
                "param": key,
                "fidelity_epoch": epoch,
                "n_trials": n,
                "note": note,
                "below_noise": False,
            }
            for key in searched or ["(none)"]
        ]
        return pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)

    if not searched:
        return without_numbers("nothing was searched")
    if len(searched) == 1:
        return without_numbers(
            "only one searched parameter: its importance is 1 by construction; "
            "see the slice plot instead"
        )
    if n < MIN_IMPORTANCE_TRIALS:
        return without_numbers(
            f"only {n} trial(s) scored at the same epoch; importance needs at least "
            f"{MIN_IMPORTANCE_TRIALS}"
        )
    at = curves[curves[config.EPOCH] == epoch].drop_duplicates("trial_id", keep="last")
    values = at.set_index("trial_id")[config.VAL_MACRO_F1].astype(float)
    trials = [(run.params[t], v) for t, v in values.items() if t in run.params]
    if np.ptp([v for _, v in trials]) == 0:
        return without_numbers(
            f"every trial scored the same at epoch {epoch:g}; nothing to attribute"
        )
    parts = [
        _importance_where_active(
            keys,
            trials,
            params,
            epoch=epoch,
            seeds=seeds,
            bootstraps=bootstraps,
            permutations=permutations,
        )
        for keys in _activity_groups(trials, searched)
    ]
    table = pd.concat(parts, ignore_index=True)
    table["below_noise"] = table["below_noise"].fillna(False).astype(bool)
    # Ranked: measured and above the noise; the rest (noise, constant, unmeasurable) after.
    table["unranked"] = table["below_noise"] | table["note"].fillna("").ne("")
    return table.sort_values(
        ["unranked", "importance_mean"],
        ascending=[True, False],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)[IMPORTANCE_COLUMNS]


def _is_active(values: dict[str, Any], key: str) -> bool:
    # A conditional parameter that was inactive is absent from the trial's config.
    return values.get(key) is not None


def _activity_groups(trials: list[tuple[dict[str, Any], float]], keys: list[str]) -> list[list]:
    """The searched keys grouped by the trials in which they were active (in `keys` order)."""
    groups: dict[tuple[bool, ...], list[str]] = {}
    for key in keys:
        groups.setdefault(tuple(_is_active(p, key) for p, _ in trials), []).append(key)
    return list(groups.values())


def _importance_where_active(
    keys: list[str],
    trials: list[tuple[dict[str, Any], float]],
    params: dict[str, Param],
    *,
    epoch: float,
    seeds: int,
    bootstraps: int,
    permutations: int,
) -> pd.DataFrame:
    """fANOVA importance of `keys` (active in the same trials) among the trials where they were
    active, the forest fitted on every parameter active in all of those trials, beside its
    permutation baseline."""
    subset = [(p, v) for p, v in trials if all(_is_active(p, k) for k in keys)]
    fitted = [k for k in params if all(_is_active(p, k) for p, _ in subset)]
    where = "" if len(subset) == len(trials) else " where it was active"

    def without_numbers(note: str) -> pd.DataFrame:
        rows = [
            {
                "param": k,
                "fidelity_epoch": epoch,
                "n_trials": len(subset),
                "note": note,
                "below_noise": False,
            }
            for k in keys
        ]
        return pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)

    if len(subset) < MIN_IMPORTANCE_TRIALS:
        return without_numbers(
            f"active in only {len(subset)} trial(s) at epoch {epoch:g}; importance needs at "
            f"least {MIN_IMPORTANCE_TRIALS}"
        )
    if np.ptp([v for _, v in subset]) == 0:
        return without_numbers(
            f"every trial{where} scored the same at epoch {epoch:g}; nothing to attribute"
        )
    fits = _fanova_fits(subset, {k: params[k] for k in fitted}, seeds=seeds, bootstraps=bootstraps)
    if not len(fits):
        return without_numbers("fANOVA failed on every resample")
    table = pd.DataFrame(
        {
            "param": keys,
            "importance_mean": [fits[k].mean() for k in keys],
            "importance_std": [fits[k].std(ddof=0) for k in keys],
            "low": [fits[k].quantile(0.05) for k in keys],
            "high": [fits[k].quantile(0.95) for k in keys],
        }
    )
    table["fidelity_epoch"] = epoch
    table["n_trials"] = len(subset)
    # ASHA keeps the trials that share the good values: a parameter may not vary among them.
    constant = {k for k in keys if len({repr(p.get(k)) for p, _ in subset}) == 1}
    noise = _permutation_noise(subset, {k: params[k] for k in fitted}, permutations)
    # Like for like: the forests on the trials themselves (the first resample), against forests
    # on the same trials with their scores shuffled.
    observed = fits.iloc[: max(1, seeds)].mean()
    table["noise"] = [noise.get(k, float("nan")) for k in keys]
    table["below_noise"] = [
        k not in constant and not (observed[k] > noise.get(k, float("-inf"))) for k in keys
    ]
    table["note"] = [
        f"constant among the trials{where} at epoch {epoch:g}: no importance measurable"
        if k in constant
        else f"below the noise: {observed[k]:.2f} on these trials does not exceed {noise[k]:.2f}, "
        f"the {NOISE_QUANTILE:.0%} quantile of its importance with the scores shuffled"
        if table["below_noise"][i]
        else ""
        for i, k in enumerate(keys)
    ]
    return table


def _permutation_noise(
    trials: list[tuple[dict[str, Any], float]], params: dict[str, Param], permutations: int
) -> dict[str, float]:
    """Each parameter's `NOISE_QUANTILE` importance over `permutations` shuffles of the scores
    among the trials (one forest each): what fANOVA credits a parameter with by chance, with
    this many trials."""
    rng = np.random.default_rng(1)
    scores = np.array([v for _, v in trials])
    fits = []
    for _ in range(max(1, permutations)):
        shuffled = [
            (p, float(v)) for (p, _), v in zip(trials, rng.permutation(scores), strict=True)
        ]
        fit = _fanova_fits(shuffled, params, seeds=1, bootstraps=1)
        if len(fit):
            fits.append(fit.iloc[0])
    if not fits:
        return {}
    frame = pd.DataFrame(fits)
    return {k: float(frame[k].quantile(NOISE_QUANTILE)) for k in frame.columns}


def _observed_distribution(param: Param):
    # Observed quniform values are multiples of q, not always on Optuna's grid: no step here.
    return param.to_optuna(grid=False)


def _clip(value: Any, distribution) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(distribution, IntDistribution):
        return int(min(max(round(value), distribution.low), distribution.high))
    if isinstance(distribution, FloatDistribution):
        return float(min(max(value, distribution.low), distribution.high))
    return value


def _fanova_fits(
    trials: list[tuple[dict[str, Any], float]],
    params: dict[str, Param],
    *,
    seeds: int,
    bootstraps: int,
) -> pd.DataFrame:
    """One row per (resample, seed) fit: the raw fANOVA importance of each parameter."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {key: _observed_distribution(p) for key, p in params.items()}
    frozen = [
        optuna.trial.create_trial(
            params={k: _clip(values[k], d) for k, d in distributions.items()},
            distributions=distributions,
            value=float(score),
        )
        for values, score in trials
        if all(k in values for k in distributions)
    ]
    rng = np.random.default_rng(0)
    rows = []
    for b in range(max(1, bootstraps)):
        picked = np.arange(len(frozen)) if b == 0 else rng.integers(0, len(frozen), len(frozen))
        study = optuna.create_study(direction=config.MODE + "imize")
        for i in picked:
            study.add_trial(frozen[i])
        for seed in range(max(1, seeds)):
            try:
                raw = FanovaImportanceEvaluator(seed=seed).evaluate(study, params=list(params))
            except (ValueError, RuntimeError) as exc:  # a degenerate resample
                log.debug("fANOVA fit %d/%d skipped: %s", b, seed, exc)
                continue
            rows.append({k: float(raw.get(k, 0.0)) for k in params})
    return pd.DataFrame(rows, columns=list(params))
