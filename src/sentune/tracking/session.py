"""The trackers of one command: opened and checked when a search (or an export) starts, told of
each trial by the search's Tune callback (`Tracker`), told how the search ended, then given the
analysis and the exported model.

Never break a search: a tracker whose library is missing, whose server is down or refuses
writes gives one warning line when the command starts and is left out; one that fails later
gives one more and is left out for the rest of the command (the run's tracking record says so,
and the next command, a resume, tries it again). TensorBoard's per-step curves are always drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentune import config, runs
from sentune.runs import storage
from sentune.tracking.events import (
    FAILED,
    TrackerLog,
    new_since,
    one_line,
    search_outcome,
    split_result,
    trial_outcome,
)
from sentune.tracking.state import TrackingState

log = logging.getLogger(__name__)

#: The names a tracker goes by in messages.
TITLES = {"mlflow": "MLflow", "wandb": "W&B", "tensorboard": "TensorBoard"}
TENSORBOARD = "tensorboard"
#: In a trial's configuration and tags: what marks a confirmation trial.
CONFIRMATION_TAG, CONFIRMS_TAG, SEED_TAG = (
    "sentune.confirmation",
    "sentune.confirms",
    "sentune.seed",
)


@dataclass(frozen=True)
class TrackingOptions:
    """Where a command logs (`--log-to`, `--tracking-uri`, `--experiment`).

    Attributes:
        log_to: Trackers of `config.TRACKERS`; empty: those the run recorded (none for a new
            run). A resumed search logs where it logged unless told otherwise.
        tracking_uri: MLflow's tracking URI; None: the run's, else MLFLOW_TRACKING_URI, else
            `mlruns/mlflow.db` (SQLite) in the current directory.
        experiment: MLflow's experiment and W&B's project; None: the run's, else the space's name.
    """

    log_to: tuple[str, ...] = ()
    tracking_uri: str | None = None
    experiment: str | None = None


# --- a command's start and end ------------------------------------------------------------------


@contextmanager
def logged(run_dir: Path, store: storage.Storage, options: TrackingOptions) -> Iterator[None]:
    """For a search's body (its fits and confirmation): the trackers opened and checked before
    (`start`), told how the search ended after (`finish`), interrupted or not."""
    start(run_dir, store, options)
    try:
        yield
    except BaseException as exc:
        try:
            finish(run_dir, store, interrupted=exc)
        except Exception:  # noqa: BLE001 - the error that stopped the search is the one to raise
            log.debug("the trackers were not told how %s ended", run_dir.name, exc_info=True)
        raise
    finish(run_dir, store)


def start(
    run_dir: Path, store: storage.Storage, options: TrackingOptions, *, reopen: bool = True
) -> list[TrackerLog]:
    """Open the run's trackers for this command, check each (one warning for one that is
    missing, down or read-only) and make or continue what holds the search (MLflow's parent run;
    `reopen`: marked running again). Their settings and ids go to the run's tracking record,
    which the Tune callbacks read (`Tracker.open`).

    Returns:
        The trackers that answered.
    """
    state = TrackingState.load(run_dir, store)
    log_to = list(options.log_to) or state.log_to
    if not log_to:
        return []
    state.compact()
    if log_to != state.log_to:
        state.choose(log_to)
    manifest = runs.read_manifest(run_dir)
    opened = []
    for name in log_to:
        recorded = state.tracker(name)
        settings = _settings(name, recorded, options, manifest)
        if any(recorded.get(k) not in (None, v) for k, v in settings.items()):
            state.forget(name)  # another server or experiment: new runs there
        tracker = _make(name, {**state.tracker(name), **settings})
        if tracker is None:
            state.update([(name, None, {**settings, "unavailable": "not installed"})])
            continue
        try:
            fields = tracker.open(run_name=run_dir.name, manifest=manifest, reopen=reopen)
        except Exception as err:  # noqa: BLE001 - a tracker never stops the search
            why = one_line(err)
            log.warning(
                "%s (%s) is unavailable: %s; going on without it",
                TITLES[name],
                _where(settings),
                why,
            )
            state.update([(name, None, {**settings, "unavailable": why})])
            continue
        state.update([(name, None, {**settings, **fields, "unavailable": ""})])
        log.info("%s: logging %s to %s", TITLES[name], run_dir.name, _where(settings))
        opened.append(tracker)
    return opened


def finish(
    run_dir: Path, store: storage.Storage, *, interrupted: BaseException | None = None
) -> None:
    """Tell the run's trackers how the search ended (its trials' statuses, or the error that
    stopped it)."""
    state = TrackingState.load(run_dir, store)
    trackers = _available(state)
    if not trackers:
        return
    statuses = [runs.read_trial_status(d).get("status") for d in runs.trial_dirs(run_dir)]
    outcome = search_outcome(statuses, interrupted=interrupted)
    for tracker in trackers:
        _guarded(state, tracker, lambda t: t.finish(outcome))


def log_search_outputs(run_dir: Path, store: storage.Storage, analysis_dir: Path) -> None:
    """Give the run's trackers the search's analysis (the files in `analysis_dir`: leaderboard,
    report, `best.yaml`, …) and its winner (trial, score, searched values, its tracked run)."""
    state = TrackingState.load(run_dir, store)
    trackers = _available(state)
    if not trackers:
        return
    folder = Path(analysis_dir)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    winner = _winner(run_dir)
    for tracker in trackers:
        run_id = state.trial(tracker.name, winner.get("winner", "")).get("run_id")
        mine = {**winner, "winner_run_id": run_id} if run_id else winner
        _guarded(state, tracker, lambda t, w=mine: t.log_outputs(files, winner=w))


def log_export(
    run_dir: Path,
    store: storage.Storage,
    folder: Path,
    *,
    metrics: dict[str, Any],
    options: TrackingOptions,
    register: str | None = None,
) -> None:
    """Give the run's trackers (or those of `options`) the exported model: the export folder, its
    test scores (`metrics`: the export's `metrics.json`) and, with `register`, a new version of
    that registered model (MLflow)."""
    trackers = start(run_dir, store, options, reopen=False)
    if register and "mlflow" not in [t.name for t in trackers]:
        log.warning("--register %s: the registry is MLflow's; pass --log-to mlflow", register)
    scores = _scores(metrics)
    state = TrackingState.load(run_dir, store)
    for tracker in trackers:
        _guarded(state, tracker, lambda t: t.log_export(folder, metrics=scores, register=register))


def _winner(run_dir: Path) -> dict[str, Any]:
    """The search's winner as the analysis picks it (the best mean over seeds where confirmed);
    {} when there is none, or it cannot be told (the files are logged regardless)."""
    try:
        return _pick_winner(run_dir)
    except Exception as err:  # noqa: BLE001 - the search is done; its outputs still get logged
        log.debug("no winner for the trackers: %s", err, exc_info=True)
        return {}


def _pick_winner(run_dir: Path) -> dict[str, Any]:
    from sentune import analysis
    from sentune.analysis.winner import searched_values, winner_id

    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    confirmed = analysis.confirmation(run, table)
    trial = winner_id(table, confirmed)
    if trial is None:
        return {}
    row = table[table["trial_id"] == trial]
    winner: dict[str, Any] = {"winner": trial, "values": searched_values(run, trial)}
    if not row.empty:
        winner["score"] = float(row.iloc[0][config.VAL_MACRO_F1])
    return winner


def _scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The shipped model's test scores (the PyTorch model's, as the export prints them) and the
    floor's macro-F1, from the export's metrics."""
    test = metrics.get("formats", {}).get("pytorch", {}).get("test", {})
    scores = {k: float(v) for k, v in test.items() if isinstance(v, int | float)}
    key = config.metric_name(config.TEST, config.MACRO_F1)
    floor = metrics.get("floor", {}).get(key)
    if isinstance(floor, int | float):
        scores[f"floor_{key}"] = float(floor)
    return scores


# --- a search's trials ---------------------------------------------------------------------------


class Tracker:
    """What a search's Tune callback tells the trackers about the trials of one experiment (the
    search's, its confirmation's, a refit's), from the search's process.

    Each tracker gets the steps after the last one it logged of that trial (kept in the run's
    tracking record), so that a retried or resumed trial, which reports again the steps it
    trains again, is logged once. A tracker that fails is left out with one warning.
    """

    def __init__(
        self,
        state: TrackingState,
        trackers: list[TrackerLog],
        *,
        prefix: str = "",
        max_epochs: float = float("inf"),
        scheduler: str = "",
    ):
        self.state = state
        self.trackers = trackers
        self.prefix = prefix
        self.max_epochs = max_epochs
        self.scheduler = scheduler

    @classmethod
    def open(
        cls, run_dir: Path | None, store: storage.Storage | None = None, *, prefix: str = ""
    ) -> Tracker:
        """The trackers of the run in `run_dir` as its tracking record has them (`start` opened
        and checked them), with TensorBoard; for `run_dir` None, TensorBoard alone and nothing
        recorded. `prefix`: the experiment's folder in the run (`runs.CONFIRM_DIR`), "" for the
        search's."""
        if run_dir is None:
            return cls(TrackingState(), _tensorboard())
        state = TrackingState.load(run_dir, store)
        manifest = runs.read_manifest(run_dir)
        return cls(
            state,
            _tensorboard() + _available(state),
            prefix=prefix,
            max_epochs=manifest.budget.max_epochs,
            scheduler=manifest.strategy.rpartition("-")[2],
        )

    def trial_started(self, name: str, *, folder: Path | None, trial_config: dict) -> None:
        """Trial `name` (its folder's name) starts, or starts again (a retry, a resume)."""
        key = self._key(name)
        params = {k: v for k, v in trial_config.items() if k != runs.CONFIRMS_KEY}
        tags = {"sentune.trial": name}
        if runs.CONFIRMS_KEY in trial_config:
            tags.update(
                {
                    CONFIRMATION_TAG: "true",
                    CONFIRMS_TAG: str(trial_config[runs.CONFIRMS_KEY]),
                    SEED_TAG: str(runs.trial_seed(trial_config)),
                }
            )
        changes = []
        for tracker in self._live(key, restarting=True):
            entry = self.state.trial(tracker.name, key)
            fields = self._call(
                tracker,
                lambda t, e=entry: t.start_trial(key, e, params=params, tags=tags, folder=folder),
            )
            if fields is _FAILED:
                continue
            if entry.get("ended"):
                fields = {**(fields or {}), "ended": ""}  # a failed trial that a resume retries
            if fields:
                changes.append((tracker.name, key, fields))
        self._record(changes)

    def trial_result(self, name: str, result: dict[str, Any]) -> None:
        """Trial `name` reported an evaluation (`train.trial`'s metrics with its step rows)."""
        key = self._key(name)
        evaluation, rows = split_result(result)
        changes = []
        for tracker in self._live(key):
            entry = self.state.trial(tracker.name, key)
            last = int(entry.get("last_step", 0))
            fresh_eval, fresh_rows = new_since(last, evaluation, rows)
            if fresh_eval is None and not fresh_rows:
                continue
            done = self._call(
                tracker,
                lambda t, e=entry, ev=fresh_eval, rs=fresh_rows: t.log(key, e, ev, rs),
            )
            if done is not _FAILED:
                steps = [r.step for r in fresh_rows] + ([fresh_eval.step] if fresh_eval else [])
                changes.append((tracker.name, key, {"last_step": max([last, *steps])}))
        self._record(changes)

    def trial_retrying(self, name: str, reason: str) -> None:
        """Trial `name` failed and will continue from its latest checkpoint."""
        key = self._key(name)
        for tracker in self._live(key):
            entry = self.state.trial(tracker.name, key)
            self._call(tracker, lambda t, e=entry: t.retrying(key, e, reason))

    def trial_ended(self, name: str, *, epoch: float | None, error: str | None = None) -> None:
        """Trial `name` ended: at its last evaluation's `epoch`, or failed for good (`error`)."""
        key = self._key(name)
        outcome = trial_outcome(
            error=error, epoch=epoch, max_epochs=self.max_epochs, scheduler=self.scheduler
        )
        changes = []
        for tracker in self._live(key):
            entry = self.state.trial(tracker.name, key)
            if self._call(tracker, lambda t, e=entry: t.end_trial(key, e, outcome)) is not _FAILED:
                changes.append((tracker.name, key, {"ended": outcome.status}))
        self._record(changes)

    def close(self) -> None:
        """The experiment ended (or stopped): release the trackers' writers and open runs."""
        for tracker in list(self.trackers):
            self._call(tracker, lambda t: t.close())

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _live(self, key: str, *, restarting: bool = False) -> list[TrackerLog]:
        """The trackers still logging, less those for which trial `key` already ended: a trial
        that ended before a kill, which a resumed search starts and ends again at once (one that
        failed, `restarting`, is retried by a resume and logs again)."""
        again = (FAILED,) if restarting else ()
        return [
            t
            for t in self.trackers
            if self.state.trial(t.name, key).get("ended") in ("", None, *again)
        ]

    def _call(self, tracker: TrackerLog, call) -> Any:
        if tracker not in self.trackers:
            return _FAILED
        try:
            return call(tracker)
        except Exception as err:  # noqa: BLE001 - a tracker never stops the search
            self.trackers.remove(tracker)
            _lost(self.state, tracker, err)
            return _FAILED

    def _record(self, changes: list[tuple[str, str | None, dict[str, Any]]]) -> None:
        if changes:
            self.state.update(changes)


#: What `Tracker._call` returns for a call that failed (its tracker is left out).
_FAILED = object()


# --- helpers -------------------------------------------------------------------------------------


def _settings(
    name: str, recorded: dict[str, Any], options: TrackingOptions, manifest: runs.Manifest
) -> dict[str, Any]:
    """A tracker's settings: the command's options over the run's record over the defaults."""
    if name == "mlflow":
        from sentune.tracking.mlflow_log import resolve

        return resolve(
            recorded,
            uri=options.tracking_uri,
            experiment=options.experiment,
            space=manifest.space.name,
        )
    from sentune.tracking.wandb_log import resolve

    return resolve(
        recorded, experiment=options.experiment, space=manifest.space.name, run=manifest.run
    )


def _make(name: str, record: dict[str, Any]) -> TrackerLog | None:
    """The tracker `name` on its record; None (and one warning) when its library is missing."""
    try:
        if name == "mlflow":
            from sentune.tracking.mlflow_log import MlflowLog

            return MlflowLog(record)
        from sentune.tracking.wandb_log import WandbLog

        return WandbLog(record)
    except ImportError as err:
        log.warning(
            "--log-to %s: %s is not installed (%s); install it with pip install 'sentune[%s]'; "
            "going on without it",
            name,
            TITLES[name],
            err.name or err,
            name,
        )
        return None


def _available(state: TrackingState) -> list[TrackerLog]:
    """The run's trackers that answered when this command started and have not failed since."""
    trackers = []
    for name in state.log_to:
        record = state.tracker(name)
        if record and not record.get("unavailable"):
            tracker = _make(name, record)
            if tracker is not None:
                trackers.append(tracker)
    return trackers


def _tensorboard() -> list[TrackerLog]:
    try:
        from sentune.tracking.tensorboard_log import TensorBoardLog

        return [TensorBoardLog()]
    except ImportError:
        return []  # tensorboardX is a dependency; a trimmed install draws no curves


def _guarded(state: TrackingState, tracker: TrackerLog, call) -> None:
    """`call(tracker)`, its recorded fields kept; a failure is one warning."""
    try:
        fields = call(tracker)
    except Exception as err:  # noqa: BLE001 - a tracker never stops the search
        _lost(state, tracker, err)
        return
    if fields:
        state.update([(tracker.name, None, fields)])


def _lost(state: TrackingState, tracker: TrackerLog, err: BaseException) -> None:
    """One warning, and the tracker marked unavailable for the rest of the command."""
    why = one_line(err)
    log.warning("%s stopped answering: %s; going on without it", TITLES[tracker.name], why)
    if tracker.name != TENSORBOARD:
        state.update([(tracker.name, None, {"unavailable": why})])


def _where(settings: dict[str, Any]) -> str:
    if "tracking_uri" in settings:
        return f"{settings['tracking_uri']}, experiment {settings['experiment']!r}"
    return f"project {settings['project']!r}, group {settings['group']!r}"
