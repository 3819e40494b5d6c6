"""What a killed search leaves, settled: which trials ended by the run's own records (the trial
statuses and the Optuna journal, made to agree before Tune restores its older saved state), and
the trials or checkpoints that Tune's saved state never held.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune import runs
from sentune.runs import storage

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    pass


from sentune.search.searcher import journal_outcome

log = logging.getLogger(__name__)


def settle_unknown_trials(folder: Path, run_dir: Path, grid, store: storage.Storage) -> None:
    """What a killed search left in `folder` that the experiment's saved state never held:
    a trial with results is recorded as lost (`runs.LOST_ERROR`: it counts as finished, keeps
    its best checkpoint without the training state, and is said once); a checkpoint without
    results is deleted (`runs.orphan_trial_dirs`); here and in object storage."""
    known = {Path(result.path).name for result in grid}
    lost = runs.lost_trial_dirs(folder, known)
    for trial_dir in lost:
        runs.write_trial_status(trial_dir, runs.ERROR, failures=0, error=runs.LOST_ERROR)
        storage.push(store, run_dir.name, [trial_dir / runs.TRIAL_STATUS])
        storage.delete(store, run_dir.name, runs.keep_best_checkpoint(trial_dir))
    if lost:
        log.warning(
            "%d trial(s) were lost when the search was killed (%s): Ray Tune had not saved "
            "them; their results are kept, --resume cannot continue them",
            len(lost),
            ", ".join(d.name for d in lost),
        )
    orphans = runs.orphan_trial_dirs(folder, known)
    if orphans:
        log.info(
            "removing the checkpoints of %d trial(s) that a killed search started but never "
            "recorded: %s",
            len(orphans),
            ", ".join(d.name for d in orphans),
        )
        storage.delete(store, run_dir.name, orphans)
        for orphan in orphans:
            shutil.rmtree(orphan, ignore_errors=True)


def finished_trials(
    folder: Path,
    run_dir: Path,
    store: storage.Storage,
    *,
    study=None,
    max_epochs: float = 0,
    evals_per_epoch: int = 1,
) -> frozenset[str]:
    """Before Tune restores an experiment (a search, or its confirmation, whose trial folders
    are in `folder`): the trials that ended, by the run's own records, made to agree.

    When a trial ends (ASHA stops it, or it trained its budget), in one step of Tune's loop:
    the searcher tells the Optuna journal (written at once), the ledger writes and stores the
    trial's status (`trial_ledger`), and Tune marks the trial TERMINATED in memory, to save its
    state at the end of a step, every few seconds. A kill in between leaves the journal ahead
    of the status and both ahead of Tune's saved state, which still holds the trial as running:
    Tune restores it, and would train a finished trial further and change its history and
    score. A trial that the journal or its status holds as ended did end: its status is written
    where missing and the journal told where it is not, and the trainable ends such a trial at
    once when Tune restarts it (`_trainable`'s `finished`), so that Tune's searcher, scheduler
    and callbacks see it end as they would have.

    Args:
        folder: The experiment's trial folders (the run's or its confirmation's; for a run in
            object storage, the mirror, pulled).
        run_dir: The run folder (its mirror for object storage).
        store: Where the run is kept: what changes in the mirror is uploaded.
        study: The run's Optuna study (None for the confirmation, which has none).
        max_epochs: The budget: a trial that reached fewer epochs was stopped early (PRUNED).
        evals_per_epoch: The journal's steps per epoch (`searcher.journal_step`).

    Returns:
        The names of the trial folders that ended.
    """
    statuses = {d.name: runs.read_trial_status(d).get("status") for d in runs.trial_dirs(folder)}
    journal = _journal_trials(study)
    finished = {
        name
        for name, status in statuses.items()
        if status == runs.COMPLETED
        or (name in journal and journal[name].state.name in ("COMPLETE", "PRUNED"))
    }
    settled, told = [], []
    for name in sorted(finished):
        if statuses[name] != runs.COMPLETED:
            runs.write_trial_status(folder / name, runs.COMPLETED, failures=0)
            settled.append(folder / name / runs.TRIAL_STATUS)
        if name in journal and not journal[name].state.is_finished():
            scores = journal[name].intermediate_values
            reached = max(scores, default=0) / evals_per_epoch
            value, outcome = journal_outcome(scores, reached, max_epochs)
            study.tell(journal[name].number, value, state=outcome)
            told = [runs.optuna_journal(run_dir)]
    storage.push(store, run_dir.name, [*settled, *told])
    _release_from_limiter(folder, run_dir, store, finished)
    return frozenset(finished)


#: Ray Tune's saved state of its search generator (a pickle, despite the name), and the key of
#: the concurrency limiter's state in it.
_SEARCH_GEN_STATE = "search_gen_state-*.json"
_LIMITER_KEY = "name:ConcurrencyLimiter"


def _release_from_limiter(
    folder: Path, run_dir: Path, store: storage.Storage, finished: set[str]
) -> None:
    """Drop the trials that ended from the concurrency limiter's live trials in Tune's saved
    search state. Tune saves that state apart from its trial list, and a run in object storage
    uploads the two at different times: after a SIGKILL the limiter may still count as live a
    trial that the restored list holds as ended (seen in CI: `live_trials` {the first trial}
    beside two TERMINATED trials). Tune never ends that trial again, so the limiter never frees
    its slot, and with one trial at a time the resumed search waits forever."""
    import pickle

    saved = sorted(Path(folder).glob(_SEARCH_GEN_STATE))
    if not saved:
        return
    path = saved[-1]
    try:
        state = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - an unreadable state is Tune's to report on restore
        return
    limiter = state.get(_LIMITER_KEY) if isinstance(state, dict) else None
    if not isinstance(limiter, dict) or not isinstance(limiter.get("live_trials"), set):
        return
    ended = {t for t in limiter["live_trials"] if t in finished}
    if not ended:
        return
    limiter["live_trials"] = limiter["live_trials"] - ended
    if "num_unfinished_live_trials" in limiter:
        limiter["num_unfinished_live_trials"] = len(limiter["live_trials"])
    runs.write_bytes(path, pickle.dumps(state))
    storage.push(store, run_dir.name, [path])
    log.info(
        "Tune's saved search state counted %s as running; released (they ended before the kill)",
        ", ".join(sorted(ended)),
    )


def _journal_trials(study) -> dict[str, Any]:
    """The study's trials by the Ray trial each one is ({} without a study)."""
    if study is None:
        return {}
    return {
        t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t
        for t in study.get_trials(deepcopy=False)
        if runs.RAY_TRIAL_ID_ATTR in t.user_attrs
    }


def load_study(run_dir: Path, manifest: runs.Manifest):
    """The run's Optuna study, from its journal (None when the run searched nothing)."""
    journal = runs.optuna_journal(run_dir)
    if not manifest.optuna_study or not journal.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage_ = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=manifest.optuna_study, storage=storage_)
