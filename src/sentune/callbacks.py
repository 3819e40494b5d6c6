"""What Tune tells a search while its trials run, as Tune callbacks: the terminal lines
(`progress_callback`, which also reads where long epochs stand) and each trial's outcome in its
folder (`trial_ledger`; `settle_statuses` for a run in object storage). The callback classes are
defined on first use, so that importing this module does not import Ray Tune.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sentune import config, runs, storage

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
):
    """The Tune callback that prints the terminal lines (`progress.SearchProgress`): `total`
    trials (or `time_budget_s`), the config keys in `shown` printed when a trial starts,
    (`first_step`) when training first began, and where long epochs stand (the trials' files
    in `runs.progress_dir(run_dir)`)."""
    from ray.tune import Callback

    from sentune.progress import SearchProgress, read_progress

    progress = SearchProgress(
        total=total, max_epochs=max_epochs, rungs=rungs, time_budget_s=time_budget_s
    )
    say_first_step = first_step
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
            progress.on_start(trial.trial_id, params)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if config.OBJECTIVE in result and config.EPOCH in result:
                p95 = result.get(config.LATENCY_P95_MS)
                first_step = result.get(config.FIRST_STEP_S) if say_first_step else None
                progress.on_result(
                    trial.trial_id,
                    float(result[config.EPOCH]),
                    float(result[config.OBJECTIVE]),
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


#: Each trial's outcome as this process's ledgers recorded it, by the trial's folder in the
#: mirror of a run in object storage: `settle_statuses` uploads what Tune's last upload of its
#: staging missed.
_RECORDED: dict[Path, tuple[str, int, str]] = {}


def remember_status(trial_dir: Path, record: tuple[str, int, str]) -> None:
    """Keep a ledger's record for `settle_statuses`. A module function, not the ledger's own
    code: a resumed search's ledger is unpickled from Tune's state, and only a function found
    by name here (not a copy pickled with it) writes to this process's `_RECORDED`."""
    _RECORDED[trial_dir.resolve()] = record


def settle_statuses(store: storage.Storage, run_dir: Path, folder: Path) -> None:
    """After a Tune experiment of a run in object storage ended, and its files were pulled into
    the mirror: write and upload each trial status (`runs.TRIAL_STATUS`) that this process
    recorded but the bucket lacks or holds older.

    The ledger writes a status into Tune's local staging, which Tune uploads with its own state;
    the status of the trial that ended last could miss that upload (seen 1 run in 4 after a
    SIGKILL and `--resume`), and the trial then read as unfinished.
    """
    if not store.remote:
        return
    settled = []
    for trial_dir in runs.trial_dirs(folder):
        recorded = _RECORDED.get(trial_dir.resolve())
        if recorded is None or runs.read_trial_status(trial_dir).get("status") == recorded[0]:
            continue
        status, failures, error = recorded
        runs.write_trial_status(trial_dir, status, failures=failures, error=error)
        settled.append(trial_dir / runs.TRIAL_STATUS)
    if settled:
        log.debug("uploaded %d trial status(es) that Tune's last upload missed", len(settled))
        storage.push(store, run_dir.name, settled)


def trial_ledger(folder: Path, run_dir: Path, store: storage.Storage):
    """A Tune callback that writes each trial's outcome (`TRIAL_STATUS`) into its folder in
    `folder` (the experiment's local folder: the run's, or its confirmation's).

    Ray leaves `error.txt` behind for a failure even when the retry succeeds; this record says
    whether the trial completed, is being retried, or errored for good (with the reason).

    For a run in object storage the status goes into the trial's folder in Ray Tune's local
    staging, which Tune uploads together with its own experiment state: after a SIGKILL the
    two agree on which trials finished. The Optuna journal (in the mirror) is pushed after
    each result. The class is defined on first use so that importing this module (as `analysis`
    and the CLI do) does not import Ray Tune.
    """
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    journal = runs.optuna_journal(run_dir)

    def record(trial, status: str) -> None:
        trial_dir = Path(trial.local_path) if store.remote else folder / Path(trial.path).name
        if not trial_dir.is_dir():
            return  # the trial never wrote its folder
        error = "" if status == runs.COMPLETED else runs.last_error_line(trial.error_file)
        failures = trial.run_metadata.num_failures
        runs.write_trial_status(trial_dir, status, failures=failures, error=error)
        if store.remote:
            remember_status(folder / Path(trial.path).name, (status, failures, error))
            if journal.is_file():
                storage.push(store, run_dir.name, [journal])

    def settle_restored(trial) -> None:
        trial_dir = folder / Path(trial.path).name
        if not trial_dir.is_dir() or runs.read_trial_status(trial_dir):
            return
        failures = trial.run_metadata.num_failures
        # Tune's staging of a restored trial may be empty: `search._finish` uploads it.
        if store.remote:
            remember_status(trial_dir, (runs.COMPLETED, failures, ""))
        else:
            runs.write_trial_status(trial_dir, runs.COMPLETED, failures=failures, error="")

    class TrialLedger(Callback):
        def setup(self, **info):
            self.restored_unchecked = True  # each `fit`, a resumed one too

        def on_step_begin(self, iteration, trials, **info):
            # Once per `fit`, at its first step: a trial that Tune had saved as finished may
            # lack its status, when the process was killed between the two; it would read as
            # unfinished on every resume, and the search would never end.
            if not getattr(self, "restored_unchecked", False):
                return
            self.restored_unchecked = False
            for trial in trials:
                if trial.status == Trial.TERMINATED:
                    settle_restored(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if store.remote and journal.is_file():
                storage.push(store, run_dir.name, [journal])

        def on_trial_recover(self, iteration, trials, trial, **info):
            record(trial, runs.RETRYING)

        def on_trial_complete(self, iteration, trials, trial, **info):
            record(trial, runs.COMPLETED)

        def on_trial_error(self, iteration, trials, trial, **info):
            record(trial, runs.ERROR)

    return TrialLedger()
