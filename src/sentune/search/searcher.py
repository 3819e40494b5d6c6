"""The Tune searchers and schedulers: Optuna's sampler behind Ray's `OptunaSearch` with its study
in the run's journal (told what ASHA did), the confirmation's fixed list, ASHA or FIFO.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune import config, runs
from sentune.search.strategies import (
    build_sampler,
    sampler_settings,
)
from sentune.space import (
    SearchSpec,
    StartPoint,
)

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    pass


log = logging.getLogger(__name__)


def config_list(configs: list[dict[str, Any]]):
    """A Tune searcher that hands out `configs` whole, one per trial, in order.

    Ray's `BasicVariantGenerator(points_to_evaluate=…)` only fills keys that its param space
    already has, and the configurations differ in which conditional keys they hold. Its state
    (what it has handed out) is pickled with the experiment, so a resumed confirmation does not
    start a configuration twice. Defined on first use so that importing this module does not
    import Ray Tune.
    """
    import pickle

    from ray.tune.search import Searcher

    class ConfigList(Searcher):
        def __init__(self, configs: list[dict[str, Any]]):
            super().__init__(metric=config.VAL_MACRO_F1, mode=config.MODE)
            self._configs = [dict(c) for c in configs]
            self._given = 0

        def suggest(self, trial_id: str):
            if self._given >= len(self._configs):
                return Searcher.FINISHED
            self._given += 1
            return dict(self._configs[self._given - 1])

        def on_trial_complete(self, trial_id: str, result=None, error=False):
            pass  # nothing to learn: every configuration is given

        def save(self, checkpoint_path: str):
            with open(checkpoint_path, "wb") as file:
                pickle.dump(self.__dict__, file)

        def restore(self, checkpoint_path: str):
            with open(checkpoint_path, "rb") as file:
                self.__dict__.update(pickle.load(file))

    return ConfigList(configs)


def build_searcher(sampler: str, spec: SearchSpec, run_dir: Path):
    """Optuna's sampler, seeded, behind Ray's `OptunaSearch`, its study kept in the run's
    journal, the space's start points first in its queue (None when nothing is searched)."""
    if not spec.params:
        return None
    objective = spec.objective
    return _journal_searcher_class()(
        journal=runs.optuna_journal(run_dir.resolve()),
        max_epochs=spec.budget.max_epochs,
        evals_per_epoch=spec.budget.evals_per_epoch,
        trials=spec.budget.trials,
        objective=objective,
        space=spec.define_by_run(),
        metric=list(objective.metrics) if objective.multi else config.VAL_MACRO_F1,
        mode=objective.directions() if objective.multi else config.MODE,
        study_name=run_dir.name,
        sampler=build_sampler(sampler_settings(sampler, spec.budget)),
        start_points=spec.start_points(),
    )


def _journal_searcher_class():
    """Ray's `OptunaSearch` with its study in a journal file, told what ASHA did.

    Ray's own class reports every result to Optuna at step `training_iteration` and completes a
    stopped trial with its last (low-epoch) score as if it were final, so TPE would learn from
    epoch-1 scores as if they were full trainings. This subclass reports each whole epoch's
    score at step = epoch, records a trial that ended without error before `max_epochs` as
    PRUNED (Optuna keeps its last intermediate value), an errored one as FAIL, a finished one as
    COMPLETE with its best epoch's score (as the leaderboard scores it), and names the Ray trial
    in the user attribute `runs.RAY_TRIAL_ID_ATTR`.

    With a latency-aware objective (`config.Objective`) each trial's inference metrics become
    user attributes, each bound of the objective becomes an Optuna constraint
    (`Trial.set_constraint(metric, value - bound)`, which constraint-aware TPE reads; Optuna 5
    deprecates `TPESampler(constraints_func=...)` for it) before the trial is told, and a
    multi-objective study is told the trial's best macro-F1 with its inference metrics (Optuna
    has no intermediate values in multi-objective studies, so only `COMPLETE` trials carry
    values; ASHA still stops trials on macro-F1).

    Relies on the internals of Ray 2.60's `ray.tune.search.optuna.OptunaSearch`: `_ot_trials`
    (Ray trial id -> `optuna.Trial`), `_ot_study` and `_completed_trials`. Its `save`/`restore`
    pickle `__dict__`, so the journal storage and the per-trial scores below travel with the
    searcher's state and `Tuner.restore` (`search.resume`) writes to the same journal. Defined
    on first use so that importing this module does not import Ray Tune.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class JournalOptunaSearch(OptunaSearch):
        def __init__(
            self,
            *,
            journal: Path,
            max_epochs: float,
            evals_per_epoch: int = 1,
            trials: int | None = None,
            objective: config.Objective | None = None,
            start_points: list[StartPoint] | None = None,
            **kwargs,
        ):
            storage = JournalStorage(JournalFileBackend(str(journal)))
            super().__init__(storage=storage, **kwargs)
            self._enqueue(start_points or [], trials)
            self._max_epochs = float(max_epochs)
            self._evals_per_epoch = evals_per_epoch
            self._trials = trials
            self._objective = objective or config.Objective()
            #: Ray trial id -> {epoch: score} as reported to Optuna.
            self._epoch_scores: dict[str, dict[int, float]] = {}
            #: Ray trial id -> its inference metrics (the same at every report).
            self._inference: dict[str, dict[str, float]] = {}

        def _enqueue(self, points: list[StartPoint], trials: int | None) -> None:
            """Put the start points (at most `trials`) first in the study's queue, labelled
            (`runs.START_POINT_ATTR`); Optuna's `ask` hands them out before it samples. A study
            that already holds a point (a resumed or grown one, or a warm start that carried
            it) does not get it twice."""
            held = {
                frozen.user_attrs.get(runs.START_POINT_ATTR)
                for frozen in self._ot_study.get_trials(deepcopy=False)
            }
            for point in points[:trials]:
                if point.label not in held:
                    self._ot_study.enqueue_trial(
                        point.params,
                        user_attrs={runs.START_POINT_ATTR: point.label},
                        skip_if_exists=True,
                    )

        def suggest(self, trial_id: str):
            if trial_id not in self._ot_trials and self._budget_spent():
                return Searcher.FINISHED
            suggested = super().suggest(trial_id)
            if not self._epoch_scores:
                # The study's one objective by its name, for optuna-dashboard and load_study
                # (experimental in Optuna since 3.2; its warning says nothing to a user).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._ot_study.set_metric_names(list(self._objective.metrics))
            if trial_id not in self._epoch_scores:
                self._ot_trials[trial_id].set_user_attr(runs.RAY_TRIAL_ID_ATTR, trial_id)
                self._epoch_scores[trial_id] = {}
            return suggested

        def _budget_spent(self) -> bool:
            """Whether `trials` Ray trials have already run: reported an epoch or finished,
            by the journal (written at once). Tune counts suggestions in its pickled state,
            which after a SIGKILL may predate the last trial it restores (seen once in a
            resumed S3 test run): it would then ask for one trial past the budget. A trial
            suggested but never reported does not count: after a SIGKILL Tune may have lost
            it, and then the budget needs its replacement."""
            budget = getattr(self, "_trials", None)  # state pickled before it existed: None
            if budget is None:
                return False
            ran = {
                frozen.user_attrs.get(runs.RAY_TRIAL_ID_ATTR)
                for frozen in self._ot_study.get_trials(deepcopy=False)
                if frozen.state.is_finished() or frozen.intermediate_values
            }
            return len(ran - {None}) >= budget

        def on_trial_result(self, trial_id: str, result: dict):
            self._report_epoch(trial_id, result)

        def _known(self, trial_id: str) -> bool:
            """Whether the study has this Ray trial. The pickled state may predate a trial
            that the journal (written at once) has: a resumed search finds it there."""
            if trial_id in self._ot_trials:
                return True
            for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.user_attrs.get(runs.RAY_TRIAL_ID_ATTR) == trial_id:
                    self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                    self._epoch_scores[trial_id] = dict(frozen.intermediate_values)
                    return True
            return False

        def _report_epoch(self, trial_id: str, result: dict) -> None:
            if not self._known(trial_id):
                return
            scores = self._epoch_scores.get(trial_id)
            epoch = result.get(config.EPOCH)
            if scores is None or trial_id in self._completed_trials or epoch is None:
                return
            measured = {k: float(result[k]) for k in config.INFERENCE_METRICS if k in result}
            if measured:
                self._inference[trial_id] = measured
            # Optuna's step counts evaluations (`journal_step`): epochs, or parts of one with
            # budget.evals_per_epoch. Evaluations off those parts (eval_every_steps) have no
            # step of their own; a trial retried from a checkpoint reports some again (Optuna
            # keeps the first).
            step = journal_step(float(epoch), getattr(self, "_evals_per_epoch", 1))
            if step is None or step in scores:
                return
            value = float(result[config.VAL_MACRO_F1])
            scores[step] = value
            if not self._objective.multi:
                try:
                    self._ot_trials[trial_id].report(value, step)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # finished in the journal already (see `on_trial_complete`)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error=False):
            if trial_id in self._completed_trials or not self._known(trial_id):
                return
            # Ray hands the result that ends a trial (ASHA's stop, or max_t) to this call only.
            if result and not error:
                self._report_epoch(trial_id, result)
            scores = self._epoch_scores.get(trial_id, {})
            per_epoch = getattr(self, "_evals_per_epoch", 1)
            reached = float((result or {}).get(config.EPOCH) or max(scores, default=0) / per_epoch)
            inference = self._inference.get(trial_id, {})
            if error:
                state, value = TrialState.FAIL, None
            else:
                value, state = journal_outcome(scores, reached, self._max_epochs)
            if state == TrialState.COMPLETE and self._objective.multi:
                missing = [m for m in self._objective.metrics[1:] if m not in inference]
                if missing:
                    log.warning("trial %s reported no %s; told FAIL", trial_id, missing[0])
                    state, value = TrialState.FAIL, None
                else:
                    value = [value, *(inference[m] for m in self._objective.metrics[1:])]
            # A resumed search may restore a trial as running that the journal (written at
            # once, Tune's state every few seconds) already finished: the journal's word stays.
            trial = self._ot_trials[trial_id]
            if state != TrialState.FAIL:
                try:
                    self._tell_inference(trial, inference)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass
            self._ot_study.tell(trial, value, state=state, skip_if_finished=True)
            self._completed_trials.add(trial_id)

        def _tell_inference(self, ot_trial, inference: dict[str, float]) -> None:
            """The inference metrics as user attributes, and the objective's bounds as
            constraints (feasible at 0 or below), before the trial is told."""
            for metric, measured in inference.items():
                ot_trial.set_user_attr(metric, measured)
            for metric, bound in self._objective.constraints.items():
                if metric in inference:
                    ot_trial.set_constraint(metric, inference[metric] - bound)

    return JournalOptunaSearch


def build_scheduler(name: str, spec: SearchSpec):
    """ASHA on epochs (fractional when evaluating every N steps), or FIFO (no early stopping)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=config.EPOCH,
        max_t=spec.budget.max_epochs,
        grace_period=spec.budget.grace_period,
        reduction_factor=spec.budget.reduction_factor,
    )


def journal_step(epoch: float, evals_per_epoch: int) -> int | None:
    """The Optuna step of an evaluation at `epoch`: the count of evaluations a trial makes by
    then at `evals_per_epoch` a epoch (the epoch itself at 1), so that the journal's
    intermediate values are in whole steps; None for an evaluation between them."""
    step = epoch * evals_per_epoch
    return round(step) if abs(step - round(step)) < 1e-6 else None


def journal_outcome(scores: dict[int, float], reached: float, max_epochs: float):
    """How the journal records a trial that ended without error, by its score at each epoch
    and the epoch it reached: COMPLETE with its best epoch's score when it trained the budget,
    else PRUNED (ASHA stopped it). Returns `(value, state)`, as `Study.tell` takes them."""
    from optuna.trial import TrialState

    if not scores or reached < float(max_epochs):
        return None, TrialState.PRUNED
    return max(scores.values()), TrialState.COMPLETE
