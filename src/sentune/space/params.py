"""A searched parameter and its one mapping to Optuna.

`Param` is a distribution name and its arguments; `Param.to_optuna` is its Optuna distribution
and `Param.suggest` draws it from a trial. `DefineByRun` is the define-by-run space of a search
(Ray's `OptunaSearch(space=...)`), conditions honoured; Ray pickles it with the searcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One searched parameter: a distribution name and its arguments.

    `when` holds its conditions, `((parent_key, (value, …)), …)`: the parameter is active (drawn
    and passed to the trial) only when every parent is active and took one of its values.
    """

    kind: str
    args: tuple
    when: tuple = ()

    def to_optuna(self, *, grid: bool = True):
        """The Optuna distribution of this parameter (drawn by `suggest`, define-by-run).

        Args:
            grid: Keep the step of `quniform`/`qrandint`. Tune rounds `quniform` to multiples of
                q, which need not lie on Optuna's `low + k*q` grid: analysis of observed values
                passes False.
        """
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(list(self.args))
        low, high = self.args[0], self.args[1]
        step = self.args[2] if grid and self.kind in ("quniform", "qrandint") else None
        if self.kind in ("int", "qrandint"):
            return IntDistribution(int(low), int(high), step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=self.kind == "loguniform", step=step)

    def suggest(self, trial, key: str) -> Any:
        """Draw this parameter from an Optuna trial (define-by-run), by its `to_optuna` form."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        dist = self.to_optuna()
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(key, list(dist.choices))
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


# --- conditional parameters -----------------------------------------------------------------------


class DefineByRun:
    """An Optuna define-by-run space (Ray's `OptunaSearch(space=...)`): called with an
    `optuna.Trial`, it draws the active parameters, parents first, each through
    `Param.suggest`; an inactive one is not drawn, so the trial uses its `config.py` default.
    A class rather than a closure so that Ray can pickle it with the searcher's state."""

    def __init__(self, params: dict[str, Param]):
        self.params = params
        self.order = condition_order(params)

    def __call__(self, trial) -> None:
        """Draw the active parameters into `trial` (Ray reads them off the trial)."""
        self.suggest(trial)

    def suggest(self, trial) -> dict[str, Any]:
        """Draw the active parameters into `trial` and return them by dotted key."""
        values: dict[str, Any] = {}
        for key in self.order:
            if is_active(self.params[key], values):
                values[key] = self.params[key].suggest(trial, key)
        return values


def is_active(param: Param, values: dict[str, Any]) -> bool:
    """Whether `param`'s conditions hold for the parameters drawn so far (`values`)."""
    return all(parent in values and values[parent] in allowed for parent, allowed in param.when)


def condition_order(params: dict[str, Param]) -> list[str]:
    """The keys with every parent before its children (file order otherwise).

    Raises:
        ValueError: The conditions form a cycle (its keys, joined by ' -> ').
    """
    order: list[str] = []
    visiting: list[str] = []

    def visit(key: str) -> None:
        if key in order:
            return
        if key in visiting:
            raise ValueError(" -> ".join([*visiting[visiting.index(key) :], key]))
        visiting.append(key)
        for parent, _ in params[key].when:
            visit(parent)
        visiting.pop()
        order.append(key)

    for key in params:
        visit(key)
    return order
