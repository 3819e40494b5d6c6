"""The Tune callbacks of a search: the terminal lines (`progress.SearchProgress`, with where long
epochs stand) and the trial ledger (each trial's results and outcome stored in the run at once).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sentune import config, runs
from sentune.runs import storage

if TYPE_CHECKING:
    from sentune.space import StartPoint


log = logging.getLogger(__name__)


def progress_callback(
    *,
    total: int,
    max_epochs: int,
    rungs: list[float],
    shown: set[str],
    run_dir: Path,
    first_step: bool = True,
    time_budget_s: float | None = None,
    then_trials: int = 0,
    starts: list[StartPoint] = (),
):
    """The Tune callback that prints the terminal lines (`progress.SearchProgress`): `total`
    trials (or `time_budget_s`), the config keys in `shown` printed when a trial starts (a
    trial whose configuration is one of the study's `starts` is said to be that start point),
    (`first_step`) when training first began, where long epochs stand (the trials' files in
    `runs.progress_dir(run_dir)`), and an estimate that counts the `then_trials` full trials
    that follow (the confirmation over seeds)."""
    from ray.tune import Callback

    from sentune.search.progress import SearchProgress
    from sentune.train.progress import read_progress

    progress = SearchProgress(
        total=total,
        max_epochs=max_epochs,
        rungs=rungs,
        time_budget_s=time_budget_s,
        then_trials=then_trials,
    )
    say_first_step = first_step
    start_of: dict[str, str | None] = {}
    folder = runs.progress_dir(run_dir).resolve()
    read_at = [0.0]

    class ProgressReporter(Callback):
        def __init__(self):
            self.progress = progress

        def on_step_begin(self, iteration, trials, **info):
            # Tune calls this many times a second; the trials write every few seconds.
            now = time.monotonic()
            if now - read_at[0] < config.PROGRESS_WRITE_EVERY_S:
                return
            read_at[0] = now
            running = {t.trial_id for t in trials if t.status == "RUNNING"}
            for trial_id, record in read_progress(folder).items():
                if trial_id in running:
                    if say_first_step and record.first_step_s is not None:
                        progress.on_first_step(record.first_step_s)
                    progress.on_progress(trial_id, record)

        def on_trial_start(self, iteration, trials, trial, **info):
            params = {k: v for k, v in trial.config.items() if k in shown}
            if trial.trial_id not in start_of:
                # The searcher hands the start points out first, each once.
                free = [p for p in starts if p.label not in start_of.values()]
                start_of[trial.trial_id] = next(
                    (p.label for p in free if p.matches(trial.config)), None
                )
            progress.on_start(trial.trial_id, params, start=start_of[trial.trial_id])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if config.VAL_MACRO_F1 in result and config.EPOCH in result:
                p95 = result.get(config.LATENCY_P95_MS)
                first_step = result.get(config.FIRST_STEP_S) if say_first_step else None
                progress.on_result(
                    trial.trial_id,
                    float(result[config.EPOCH]),
                    float(result[config.VAL_MACRO_F1]),
                    p95_ms=float(p95) if p95 is not None else None,
                    first_step_s=float(first_step) if first_step is not None else None,
                )

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.on_complete(trial.trial_id)

        def on_trial_recover(self, iteration, trials, trial, **info):
            progress.on_retry(trial.trial_id, runs.last_error_line(trial.error_file))

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.on_error(trial.trial_id, runs.last_error_line(trial.error_file))

    return ProgressReporter()


def trial_ledger(folder: Path, run_dir: Path, store: storage.Storage, *, hook=None):
    """A Tune callback that keeps the run's own record of each trial in its folder in `folder`
    (the experiment's: the run's, or its confirmation's): its results as soon as Tune logs them,
    and its outcome (`TRIAL_STATUS`) when it ends.

    Ray Tune writes a trial's results into its local staging and copies them into the run every
    few seconds, with its own state; a killed search loses what came in between. The ledger
    stores each result at once (Ray's JSON logger must come before it in the callbacks), so
    that when the searcher tells the journal that a trial ended, the trial's history is already
    in the run; then the ledger writes the status. Ray leaves `error.txt` behind for a failure
    even when the retry succeeds; the status says whether the trial completed, is being
    retried, or errored for good (with the reason). Before a resume, `finished_trials` reads
    these records, and the first step of a resumed experiment writes the status of a trial
    that Tune saved as finished when a kill lost it.

    `hook` (tests: kill the driver at a chosen point) is called with `("before-status", trial)`
    when the journal holds the trial's end and its status is not yet written, and with
    `("after-status", trial)` once the status is stored. The class is defined on first use so
    that importing this module (as `analysis` and the CLI do) does not import Ray Tune.
    """
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    journal = runs.optuna_journal(run_dir)

    def copy_files(source: Path, target: Path, names: tuple[str, ...]) -> list[Path]:
        """Copy the files `names` that exist in `source` into `target`, each whole."""
        if source == target:
            return []
        target.mkdir(parents=True, exist_ok=True)
        return [
            runs.write_bytes(target / name, (source / name).read_bytes())
            for name in names
            if (source / name).is_file()
        ]

    def store_files(trial, names: tuple[str, ...]) -> None:
        """Copy files of the trial's staging into its folder in the run (uploaded for a run
        in object storage, where `folder` is the mirror)."""
        copied = copy_files(Path(trial.local_path), _stored(trial), names)
        storage.push(store, run_dir.name, copied)

    def _stored(trial) -> Path:
        """The trial's folder in the run: where Tune keeps it (a moved run's too), or its
        place in the mirror of a run in object storage."""
        return folder / Path(trial.path).name if store.remote else Path(trial.path)

    def record(trial, status: str) -> None:
        if not Path(trial.local_path).is_dir():
            return  # the trial never wrote its folder
        if store.remote and journal.is_file():
            storage.push(store, run_dir.name, [journal])
        if hook is not None:
            hook("before-status", trial)
        error = "" if status == runs.COMPLETED else runs.last_error_line(trial.error_file)
        failures = trial.run_metadata.num_failures
        # In Tune's staging too: Tune copies it into the run with the trial's other files.
        runs.write_trial_status(trial.local_path, status, failures=failures, error=error)
        store_files(trial, (runs.TRIAL_STATUS,))
        if hook is not None:
            hook("after-status", trial)

    class TrialLedger(Callback):
        def setup(self, **info):
            self.restored_unchecked = True  # each `fit`, a resumed one too

        def on_step_begin(self, iteration, trials, **info):
            # Once per `fit`, at its first step: a trial that Tune restored as finished whose
            # status a kill lost gets it, or it would read as unfinished on every resume.
            if not getattr(self, "restored_unchecked", False):
                return
            self.restored_unchecked = False
            for trial in trials:
                stored = _stored(trial)
                if trial.status == Trial.TERMINATED and not runs.read_trial_status(stored):
                    failures = trial.run_metadata.num_failures
                    if stored.is_dir():
                        runs.write_trial_status(stored, runs.COMPLETED, failures=failures)
                        storage.push(store, run_dir.name, [stored / runs.TRIAL_STATUS])

        def on_trial_start(self, iteration, trials, trial, **info):
            # A trial that ended before a kill which Tune's older state missed: Tune restarts it
            # (its trainable ends at once) with a staging that may lack its results, and would
            # copy that staging over the run's record. The staging gets the run's record first.
            stored = _stored(trial)
            if runs.read_trial_status(stored).get("status") == runs.COMPLETED:
                names = (runs.PARAMS_FILE, runs.RESULTS_FILE)
                copy_files(stored, Path(trial.local_path), names)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # The journal (told first, by the searcher) before the results: a trial whose
            # results are stored is in the journal, and counts in the trial budget.
            if store.remote and journal.is_file():
                storage.push(store, run_dir.name, [journal])
            store_files(trial, (runs.PARAMS_FILE, runs.RESULTS_FILE))

        def on_trial_recover(self, iteration, trials, trial, **info):
            record(trial, runs.RETRYING)

        def on_trial_complete(self, iteration, trials, trial, **info):
            record(trial, runs.COMPLETED)

        def on_trial_error(self, iteration, trials, trial, **info):
            record(trial, runs.ERROR)

    return TrialLedger()
