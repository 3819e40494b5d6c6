"""Warm start: a new search's Optuna study seeded with the trials an earlier run's search ran on
the same data (`sentune search SPACE --warm-start RUN`), so that its sampler starts informed.

An earlier trial is added as the point of this space that it is: every key this space searches
takes the trial's value, or the earlier run's setting where the trial did not search it, and
must lie in this space's distribution; a key the trial searched that this space does not must
have this space's setting. Its score is read again at this search's `budget.max_epochs`
(`searcher.journal_outcome`, from its per-epoch intermediate values) and its constraints from
this objective's bounds. Added trials carry no Ray trial id (`runs.RAY_TRIAL_ID_ATTR`): they
spend none of the trial budget, have no trial folder, and so never reach the leaderboard;
`WARM_START_ATTR` says where each came from. The keys whose setting differs between the two
searches are said in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sentune import config, runs
from sentune.errors import RunError
from sentune.space import Param, SearchSpec, condition_order, is_active

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData


from sentune.search.recovery import load_study
from sentune.search.searcher import journal_outcome

log = logging.getLogger(__name__)

#: The Optuna user attribute of a warm-started trial: `<run>/<trial id>` of the trial it copies.
WARM_START_ATTR = "sentune_warm_start"


class Source(NamedTuple):
    """The run a search warm-starts from."""

    path: Path
    manifest: runs.Manifest


class WarmStart(NamedTuple):
    """What a warm start adds to the new study."""

    #: The earlier run's name.
    run: str
    #: The `optuna.trial.FrozenTrial`s to add, in the earlier run's order.
    trials: list[Any]
    #: The finished trials the earlier search ran (added or not).
    ran: int
    #: The settings that differ between the two searches, each with how (`differing_keys`).
    differ: list[str]

    def line(self) -> str:
        """The one line that says what the warm start added and which keys differ."""
        differ = f"keys that differ: {', '.join(self.differ)}" if self.differ else "no key differs"
        return (
            f"warm start from {self.run}: {len(self.trials)} of its {self.ran} finished trials "
            f"seed the study; {differ}"
        )

    def record(self) -> dict[str, Any]:
        """The manifest's `warm_start` entry."""
        return {
            "run": self.run,
            "trials": len(self.trials),
            "ran": self.ran,
            "differ": list(self.differ),
        }


def read_source(path: str | Path, spec: SearchSpec) -> Source:
    """The run `--warm-start` names, checked before Ray starts: a run with an Optuna study that
    optimised what `spec` optimises.

    Raises:
        RunError: Not a run, a run without a study, another objective, or nothing searched here.
    """
    path = Path(path)
    manifest = runs.read_manifest(path)
    name = manifest.run
    if not spec.params:
        raise RunError(
            f"--warm-start {name}: this search searches no parameter, so it has no study to seed; "
            "drop --warm-start"
        )
    if not manifest.optuna_study or not runs.optuna_journal(path).is_file():
        raise RunError(
            f"--warm-start {name}: that run has no Optuna study (it searched nothing, or predates "
            "the journal); warm-start from another run or drop --warm-start"
        )
    there, here = manifest.objective.metrics, spec.objective.metrics
    if there != here:
        raise RunError(
            f"--warm-start {name}: that run optimised {', '.join(there)}, this search "
            f"{', '.join(here)}; warm-start from a run with the same objective"
        )
    return Source(path, manifest)


def select(source: Source, spec: SearchSpec, data: PreparedData) -> WarmStart:
    """The earlier search's finished trials that are points of `spec`, once the data of this
    search is prepared (and before its run folder exists).

    Args:
        source: `read_source(...)`.
        spec: This search, its `train.max_length` resolved.
        data: This search's data: its fingerprint must be the earlier run's.

    Raises:
        RunError: The earlier run searched other data, or none of its trials fits this space.
    """
    from optuna.trial import TrialState

    name, manifest = source.manifest.run, source.manifest
    if data.fingerprint != manifest.data.fingerprint:
        raise RunError(
            f"--warm-start {name}: that run searched other data (fingerprint "
            f"{manifest.data.fingerprint}, this search's {data.fingerprint}), so its scores say "
            "nothing here; warm-start from a run on the same data, or drop --warm-start"
        )
    study = load_study(source.path, manifest)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    ran = [
        frozen
        for frozen in study.get_trials(deepcopy=False, states=finished)
        if runs.RAY_TRIAL_ID_ATTR in frozen.user_attrs  # run there, not warm-started there
    ]
    differ = differing_keys(ran, manifest, spec)
    trials = [t for t in (as_point(frozen, manifest, spec) for frozen in ran) if t is not None]
    if not trials:
        raise RunError(
            f"--warm-start {name}: none of its {len(ran)} finished trials is a point of this "
            f"space ({'keys that differ: ' + ', '.join(differ) if differ else 'no key differs'}); "
            "drop --warm-start"
        )
    return WarmStart(name, trials, len(ran), differ)


def seed_study(run_dir: Path, spec: SearchSpec, warm: WarmStart) -> None:
    """Create the new run's study in its journal with the warm-start trials, and say so. Before
    the searcher is built: Ray's `OptunaSearch` then loads this study (same name, same
    directions) rather than creating an empty one."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    run_dir = Path(run_dir)
    storage = JournalStorage(JournalFileBackend(str(runs.optuna_journal(run_dir.resolve()))))
    directions = ["minimize" if d == "min" else "maximize" for d in spec.objective.directions()]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(storage=storage, study_name=run_dir.name, directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(warm.trials)
    log.info("%s", warm.line())


# --- an earlier trial as a point of this space ---------------------------------------------------


def as_point(frozen, there: runs.Manifest, spec: SearchSpec):
    """The earlier trial `frozen` as a trial of this study (`optuna.trial.FrozenTrial`), or None
    when it is no point of `spec`, cannot be scored at its budget, or lacks a metric that one of
    its bounds needs."""
    from optuna.trial import create_trial

    params = point_params(frozen.params, there.space.fixed, spec)
    if params is None:
        return None
    outcome = _outcome(frozen, there.budget.max_epochs, spec)
    constraints = _constraints(frozen.user_attrs, spec.objective)
    if outcome is None or constraints is None:
        return None
    state, values, intermediate = outcome
    user_attrs = {k: v for k, v in frozen.user_attrs.items() if k != runs.RAY_TRIAL_ID_ATTR}
    user_attrs[WARM_START_ATTR] = f"{there.run}/{frozen.user_attrs[runs.RAY_TRIAL_ID_ATTR]}"
    return create_trial(
        state=state,
        values=values,
        params=params,
        distributions={key: spec.params[key].to_optuna() for key in params},
        user_attrs=user_attrs,
        intermediate_values=intermediate,
        constraints=constraints or None,
    )


def point_params(
    values: dict[str, Any], fixed_there: dict[str, Any], spec: SearchSpec
) -> dict[str, Any] | None:
    """An earlier trial's searched values (`values`, from a search that fixed `fixed_there`) as
    the values of `spec`'s searched keys, conditions honoured; None when the trial is no point
    of `spec` (a value outside its distribution, or a setting it holds otherwise)."""
    point: dict[str, Any] = {}
    for key in condition_order(spec.params):
        param = spec.params[key]
        if not is_active(param, point):
            continue
        value = values[key] if key in values else setting(fixed_there, key)
        if not _contains(param, value):
            return None
        point[key] = value
    # A value this search does not draw must be the one its trials train with.
    if any(key not in point and value != setting(spec.fixed, key) for key, value in values.items()):
        return None
    return point


def setting(fixed: dict[str, Any], key: str) -> Any:
    """The value a search's trials train with for a key it does not draw: fixed, else the
    `config.py` default."""
    if key in fixed:
        return fixed[key]
    section, name = key.split(".", 1)
    return getattr(config.SECTIONS[section](), name)


def _contains(param: Param, value: Any) -> bool:
    """Whether `param`'s Optuna distribution holds `value`, by Optuna's own rule (private in
    Optuna 5: `BaseDistribution._contains`, which `create_trial` also applies)."""
    if value is None:
        return False
    distribution = param.to_optuna()
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _outcome(frozen, max_epochs_there: int, spec: SearchSpec):
    """`(state, values, intermediate values)` of an earlier trial at this search's budget, or
    None where that cannot be told.

    A single-objective trial is scored again from its per-epoch values as the searcher scores
    its own (its best epoch up to `budget.max_epochs`, PRUNED if it stopped before); a
    multi-objective study keeps no per-epoch values, so its trials are taken as they were when
    both searches have the same budget only."""
    max_epochs = spec.budget.max_epochs
    if spec.objective.multi:
        if max_epochs_there != max_epochs:
            return None
        return frozen.state, (list(frozen.values) if frozen.values else None), None
    scores = {e: v for e, v in frozen.intermediate_values.items() if e <= max_epochs}
    reached = max(frozen.intermediate_values, default=0)
    value, state = journal_outcome(scores, reached, max_epochs)
    return state, (None if value is None else [value]), scores


def _constraints(user_attrs: dict[str, Any], objective: config.Objective) -> dict | None:
    """Each bound of `objective` as the trial's constraint (feasible at 0 or below), from the
    metric it measured; None when it did not measure one."""
    constraints = {}
    for metric, bound in objective.constraints.items():
        if metric not in user_attrs:
            return None
        constraints[metric] = float(user_attrs[metric]) - bound
    return constraints


# --- which settings differ -----------------------------------------------------------------------


def differing_keys(trials: list, there: runs.Manifest, spec: SearchSpec) -> list[str]:
    """The settings of the earlier search (`there`, whose `trials` carry its distributions) that
    differ from `spec`'s, each with how: a key searched in one only, a changed range or set of
    choices, a fixed value, the model and the epoch budget."""
    drawn: dict[str, Any] = {}
    for frozen in trials:
        drawn.update(frozen.distributions)
    searched_there, fixed_there = set(there.space.searched), there.space.fixed
    differ = []
    for key in sorted(searched_there | set(spec.params)):
        if key not in spec.params:
            differ.append(f"{key} (searched there, {_shown(setting(spec.fixed, key))} here)")
        elif key not in searched_there:
            differ.append(f"{key} ({_shown(setting(fixed_there, key))} there, searched here)")
        elif key in drawn and drawn[key] != spec.params[key].to_optuna():
            what = "choices" if spec.params[key].kind == "choice" else "range"
            differ.append(f"{key} ({what} changed)")
    for key in sorted((set(fixed_there) | set(spec.fixed)) - searched_there - set(spec.params)):
        before, now = setting(fixed_there, key), setting(spec.fixed, key)
        if before != now:
            differ.append(f"{key} ({_shown(before)} there, {_shown(now)} here)")
    if there.model != spec.model:
        differ.append(f"model ({there.model} there, {spec.model} here)")
    if there.budget.max_epochs != spec.budget.max_epochs:
        differ.append(
            f"budget.max_epochs ({there.budget.max_epochs} there, {spec.budget.max_epochs} here)"
        )
    return differ


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
