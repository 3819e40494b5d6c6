"""Search strategies by name: which Optuna sampler proposes trials (the one place samplers are
built, with their settings) and which scheduler stops them (ASHA or FIFO, built in `search`).
Imports neither Ray nor the trial: the bench names its methods with it, `search` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentune import config
from sentune.config import BudgetConfig
from sentune.errors import SpaceError
from sentune.space import SearchSpec, check_sampler


@dataclass(frozen=True)
class Strategy:
    """A search strategy: which Optuna sampler proposes trials, which scheduler stops them."""

    sampler: str
    scheduler: str


#: Schedulers by name: ASHA stops weak trials at its rungs, FIFO trains every trial fully.
SCHEDULERS = ("asha", "fifo")
#: Search strategies by name, every sampler (`config.SAMPLERS`, built by `build_sampler`) with
#: every scheduler (built by `search.build_scheduler`).
STRATEGIES: dict[str, Strategy] = {
    f"{sampler}-{scheduler}": Strategy(sampler, scheduler)
    for scheduler in SCHEDULERS
    for sampler in config.SAMPLERS
}


def strategy_name(spec: SearchSpec, strategy: str | None) -> str:
    """The strategy asked for, else the space's sampler (TPE unless named) with ASHA."""
    name = strategy or f"{spec.sampler or 'tpe'}-asha"
    if name not in STRATEGIES:
        raise SpaceError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    check_sampler(f"strategy {name}", STRATEGIES[name].sampler, spec.params)
    return name


#: TPE, GP and CMA-ES propose at random for a share of the trial budget first (see
#: `sampler_settings`): at least this many trials, at most Optuna's own default.
MIN_STARTUP_TRIALS, MAX_STARTUP_TRIALS = 3, 10


def sampler_settings(name: str, budget: BudgetConfig) -> dict[str, Any]:
    """The settings of sampler `name` for a search of `budget` (recorded in the manifest).

    `n_startup_trials` is a third of the trial budget, between 3 and 10: Optuna's default of
    10 random trials left TPE nothing to propose in spaces of 10 trials or fewer, while 3 is
    the fewest that split into a good and a bad group; two thirds of the budget then follow
    the model. TPE is multivariate with `group` (the joint density of parameters that appear
    together, which conditional parameters need), and uses the constant liar when trials run
    concurrently, so that trials started together do not get the same proposal.
    """
    startup = min(MAX_STARTUP_TRIALS, max(MIN_STARTUP_TRIALS, budget.trials // 3))
    concurrent = budget.concurrency is None or budget.concurrency > 1
    settings: dict[str, Any] = {"name": name, "seed": budget.seed}
    if name in ("tpe", "gp", "cmaes"):
        settings["n_startup_trials"] = startup
    if name == "tpe":
        settings.update(multivariate=True, group=True, constant_liar=concurrent)
    if name == "qmc":
        settings.update(scramble=True)
    return settings


def build_sampler(settings: dict[str, Any]):
    """The Optuna sampler of `sampler_settings(...)`.

    Raises:
        SpaceError: `cmaes` without the `cmaes` package.
    """
    import importlib.util
    import warnings

    import optuna

    options = {k: v for k, v in settings.items() if k != "name"}
    name = settings["name"]
    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise SpaceError("sampler cmaes needs the cmaes package; pip install cmaes")
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "qmc": optuna.samplers.QMCSampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }
    with warnings.catch_warnings():
        # multivariate/group TPE and the constant liar are marked experimental by Optuna.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return samplers[name](**options)
