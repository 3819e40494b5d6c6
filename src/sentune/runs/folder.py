"""The run folder read and kept: finding and naming runs, each trial's parameters, history and
status, its checkpoints, and the run's data rebuilt from its manifest.

`search` writes a run through this package; analysis, report, export and bench read it through
it. The names of the files are in `layout`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sentune import config
from sentune.errors import RunError
from sentune.runs.atomic import write_json
from sentune.runs.layout import (
    CHECKPOINT_GLOB,
    COMPLETED,
    CONFIRM_DIR,
    ERROR,
    ERROR_FILE,
    MANIFEST,
    MODEL_CONFIG_FILE,
    OPTUNA_JOURNAL,
    PARAMS_FILE,
    PROGRESS_DIR,
    REFIT_FILE,
    REFIT_PREFIX,
    RESULTS_FILE,
    SEED_KEY,
    STATE_FILE,
    TRACKING_FILE,
    TRAINING_STATE_FILE,
    TRIAL_STATUS,
)
from sentune.runs.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from sentune.data import PreparedData

log = logging.getLogger(__name__)

# --- runs in a folder -----------------------------------------------------------------------------


def optuna_journal(run_dir: str | Path) -> Path:
    """The run's Optuna journal file (`OPTUNA_JOURNAL`)."""
    return Path(run_dir) / OPTUNA_JOURNAL


def tracking_file(run_dir: str | Path) -> Path:
    """The run's record of where it is tracked (`TRACKING_FILE`)."""
    return Path(run_dir) / TRACKING_FILE


def is_run(folder: Path) -> bool:
    """Whether `folder` holds a run manifest."""
    return (Path(folder) / MANIFEST).is_file()


def latest_run(storage: str | Path, *, finished: bool = False) -> Path:
    """The run in `storage` whose manifest was written last.

    Args:
        storage: The runs folder (`trials/`).
        finished: Only consider finished runs (`is_finished`), so that a search still running,
            or one that was interrupted, is never picked by accident.

    Raises:
        RunError: `storage` holds no (finished) run.
    """
    storage = Path(storage)
    candidates = [p for p in storage.glob("*/") if is_run(p)] if storage.is_dir() else []
    runs = sorted(
        (p for p in candidates if not finished or is_finished(p)),
        key=lambda p: (p / MANIFEST).stat().st_mtime,
    )
    if not runs:
        if finished and candidates:
            raise RunError(
                f"no finished run in {storage}/ ({len(candidates)} unfinished); pass a run by "
                "name, or continue one with `sentune search --resume RUN`"
            )
        raise RunError(f"no runs in {storage}/; run `sentune search <space>` first or pass a run")
    return runs[-1]


def is_finished(run_dir: str | Path) -> bool:
    """Whether a run's search is over: every trial completed or errored for good, and (without
    a time budget) as many trials ran as the budget asked for.

    A search still running, or one interrupted before its last trial ended, is not finished;
    nor is a run whose confirmation trials have not all ended.
    """
    run_dir = Path(run_dir)
    try:
        manifest = read_manifest(run_dir)
    except RunError:
        return False
    folders = trial_dirs(run_dir)
    confirming = trial_dirs(confirm_dir(run_dir)) if confirm_dir(run_dir).is_dir() else []
    done = [read_trial_status(d).get("status") in (COMPLETED, ERROR) for d in folders + confirming]
    if not folders or not all(done):
        return False
    return manifest.budget.time_budget_s is not None or len(folders) >= manifest.budget.trials


#: A run name is one folder name: letters, digits, `.`, `_` and `-`, starting with a letter or
#: digit (no path separators, no `..`, nothing a shell would need quoted).
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def new_run_dir(storage: str | Path, space: str, *, name: str | None = None) -> Path:
    """The folder of a new run: `<storage>/<name>`, or `<storage>/<space>-<timestamp>`.

    Raises:
        RunError: `name` is not a safe folder name, or that run already exists.
    """
    if name is None:
        return _free(Path(storage) / f"{space}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    if not _RUN_NAME.fullmatch(name):
        raise RunError(
            f"--name {name!r}: not a safe folder name; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    run_dir = Path(storage) / name
    if run_dir.exists():
        raise RunError(
            f"--name {name!r}: {run_dir} already exists; choose another name, or continue it "
            f"with `sentune search --resume {run_dir}`"
        )
    return run_dir


def create_run_dir(run_dir: Path, *, named: bool) -> Path:
    """Create the folder `new_run_dir` chose, seconds earlier (the data was prepared since).

    Another search may have taken the name meanwhile (two started in the same second): a
    timestamp name then moves on to the next free suffix, and a `--name` is an error; the other
    search's folder is never touched.

    Returns:
        The folder created.

    Raises:
        RunError: `named` and the folder exists now.
    """
    chosen = run_dir
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            if named:
                raise RunError(
                    f"--name {run_dir.name!r}: another search created {run_dir} meanwhile; "
                    "choose another name"
                ) from None
            run_dir = _free(chosen)


def _free(run_dir: Path) -> Path:
    """`run_dir`, else the first of `run_dir-2`, `run_dir-3`, … that does not exist."""
    candidate, suffix = run_dir, 2
    while candidate.exists():
        candidate, suffix = run_dir.with_name(f"{run_dir.name}-{suffix}"), suffix + 1
    return candidate


def resolve_run(run: str | Path | None, storage: str | Path) -> tuple[Path, bool]:
    """The run folder a command was given: a path, a bare run name, or None for the latest.

    Args:
        run: `trials/<run>` (any path to a run folder), `<run>` (a folder in `storage`), or None.
        storage: The runs folder that bare names and the latest run are looked up in.

    Returns:
        The run folder, and whether it was picked as the latest finished run (None given).

    Raises:
        RunError: No such run, or no finished run in `storage`.
    """
    if run is None:
        return latest_run(storage, finished=True), True
    path = Path(run)
    if path.exists():
        return path, False
    named = Path(storage) / path
    if len(path.parts) == 1 and named.exists():
        return named, False
    known = sorted(p.name for p in Path(storage).glob("*/") if is_run(p))
    shown = ", ".join(known[-5:]) if known else "none"
    raise RunError(
        f"no run {str(run)!r}: not a folder, nor a run in {storage}/ (its latest runs: {shown}); "
        "pass trials/<run> or a run name"
    )


# --- trials ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A run folder read back: its manifest and one history DataFrame per trial.

    `confirmation` holds the confirmation trials (`CONFIRM_DIR`) read the same way, each
    trial's params naming the search trial it retrains (`CONFIRMS_KEY`); None when there are
    none.
    """

    path: Path
    manifest: Manifest
    params: dict[str, dict[str, Any]]
    histories: dict[str, pd.DataFrame]
    errors: dict[str, str]
    confirmation: Run | None = None

    def trial_dir(self, trial_id: str) -> Path:
        """The folder of one trial."""
        return self.path / trial_id


def open_run(run_dir: str | Path) -> Run:
    """Read a run folder written by `search.run` (finished, interrupted or still running).

    Args:
        run_dir: `trials/<space>-<timestamp>`.

    Returns:
        The manifest, each trial's parameters, per-evaluation history and error (if any).
        A trial whose `params.json` is not (yet) readable is left out; a `result.json` cut short
        by a crash keeps its readable lines.

    Raises:
        RunError: The folder is not a sentune run.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    folder = confirm_dir(run_dir)
    confirmation = _read_trials(folder, manifest) if folder.is_dir() else None
    return replace(_read_trials(run_dir, manifest), confirmation=confirmation)


def _read_trials(folder: Path, manifest: Manifest) -> Run:
    params, histories, errors = {}, {}, {}
    for trial_dir in trial_dirs(folder):
        trial_id = trial_dir.name
        try:
            params[trial_id] = json.loads((trial_dir / PARAMS_FILE).read_text())
        except json.JSONDecodeError:
            log.warning("%s: %s is cut short; leaving the trial out", trial_dir, PARAMS_FILE)
            continue
        histories[trial_id] = _read_results(trial_dir / RESULTS_FILE)
        error = trial_error(trial_dir)
        if error:
            errors[trial_id] = error
    return Run(folder, manifest, params, histories, errors)


def confirm_dir(run_dir: str | Path) -> Path:
    """The folder of a run's confirmation trials (`CONFIRM_DIR`)."""
    return Path(run_dir) / CONFIRM_DIR


def refit_dir(run_dir: str | Path, trial_id: str) -> Path:
    """The folder of the refit of `trial_id` (`REFIT_PREFIX`)."""
    return Path(run_dir) / f"{REFIT_PREFIX}{trial_id}"


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object written by `write_json`."""
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class Refit:
    """A finished refit (`search.refit`): where its model is and what it was trained on.

    Attributes:
        trial_id: The search trial whose configuration was retrained.
        checkpoint: The checkpoint of the refit's best evaluation.
        record: Its `REFIT_FILE`: training size, epochs, seed, fingerprint, scores, wall time.
    """

    trial_id: str
    checkpoint: Path
    record: dict[str, Any]


def finished_refit(run_dir: str | Path, trial_id: str) -> Refit | None:
    """The finished refit of `trial_id` in `run_dir` (its record complete, its trial completed,
    its best checkpoint there), or None."""
    folder = refit_dir(run_dir, trial_id)
    trial_dir = folder / trial_id
    path = folder / REFIT_FILE
    if not path.is_file() or not (trial_dir / PARAMS_FILE).is_file():
        return None
    record = read_json(path)
    if "wall_s" not in record or read_trial_status(trial_dir).get("status") != COMPLETED:
        return None
    best = best_checkpoint(trial_dir)
    return None if best is None else Refit(trial_id, best, record)


def remove_refit(folder: Path) -> None:
    """Remove a refit's folder (`refit --force`)."""
    shutil.rmtree(folder, ignore_errors=True)


def open_trials(folder: str | Path, manifest: Manifest) -> Run:
    """The trials of a Tune experiment inside a run (its confirmation, a refit), read as
    `open_run` reads the search's."""
    return _read_trials(Path(folder), manifest)


def progress_dir(run_dir: str | Path) -> Path:
    """The folder of the running trials' progress files (`PROGRESS_DIR`)."""
    return Path(run_dir) / PROGRESS_DIR


def confirm_trial_name(trial_id: str, seed: int) -> str:
    """The folder name of the confirmation trial retraining `trial_id` with seed `seed`."""
    return f"{trial_id}-seed{seed}"


def trial_seed(params: dict[str, Any]) -> int:
    """The seed a trial trained with (`SEED_KEY`, else the default)."""
    value = params.get(SEED_KEY)
    return int(config.TrainConfig.seed if value is None else value)


def trial_dirs(run_dir: Path) -> list[Path]:
    """The trial folders of a run, by name."""
    return sorted(p for p in Path(run_dir).iterdir() if (p / PARAMS_FILE).is_file())


def any_trial_reported(run_dir: Path) -> bool:
    """Whether any trial has reported an evaluation (the run holds results worth keeping)."""
    return any(p.stat().st_size > 0 for p in Path(run_dir).glob(f"*/{RESULTS_FILE}"))


def _read_results(path: Path) -> pd.DataFrame:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the readable history
            if isinstance(row, dict) and config.VAL_MACRO_F1 in row and config.EPOCH in row:
                row.pop(config.STEP_LOG, None)  # per-step rows, for the trackers only
                rows.append(row)
    return pd.DataFrame(rows)


def read_trial_status(trial_dir: Path) -> dict[str, Any]:
    """The driver's record of a trial's outcome (`TRIAL_STATUS`), or {} when there is none."""
    try:
        return json.loads((Path(trial_dir) / TRIAL_STATUS).read_text())
    except (OSError, ValueError):
        return {}


def write_trial_status(trial_dir: Path, status: str, *, failures: int, error: str = "") -> None:
    """Record a trial's outcome: `COMPLETED`, `RETRYING` or `ERROR` (with its error line)."""
    record: dict[str, Any] = {"status": status, "failures": failures}
    if status != COMPLETED:
        record["error"] = error or "failed"
    write_json(Path(trial_dir) / TRIAL_STATUS, record)


def trial_error(trial_dir: Path) -> str:
    """Why the trial failed for good, or "". Ray keeps `error.txt` after a retry that succeeded;
    the search's own record (`TRIAL_STATUS`) says which failures were final."""
    status = read_trial_status(trial_dir)
    if status:
        return (status.get("error") or "failed") if status.get("status") == ERROR else ""
    return last_error_line(Path(trial_dir) / ERROR_FILE, default="")


def last_error_line(path: Path, *, default: str = "failed") -> str:
    """The last non-blank line of an error file (the exception and its message)."""
    try:
        text = Path(path).read_text()
    except (OSError, TypeError):
        return default
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


# --- checkpoints ----------------------------------------------------------------------------------


def checkpoint_score(folder: Path) -> float:
    """The objective of the evaluation that wrote this checkpoint (-inf when unreadable)."""
    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        return float(state["metrics"][config.VAL_MACRO_F1])
    except (OSError, ValueError, KeyError, TypeError):
        return float("-inf")


def checkpoints(trial_dir: Path) -> list[Path]:
    """A trial's complete checkpoints, oldest first. An unfinished trial keeps its best and its
    latest one (to continue from); a finished one only its best."""
    return sorted(
        p for p in Path(trial_dir).glob(CHECKPOINT_GLOB) if (p / MODEL_CONFIG_FILE).is_file()
    )


def best_checkpoint(trial_dir: Path) -> Path | None:
    """The checkpoint of the trial's best evaluation (the earliest of equals), or None."""
    kept = checkpoints(trial_dir)
    return max(kept, key=checkpoint_score) if kept else None  # `max` keeps the first of equals


#: The error recorded for a trial that a killed search started and reported, but that Ray
#: Tune's saved state never held: a resumed search cannot continue it.
LOST_ERROR = (
    "lost: the search was killed before Ray Tune saved this trial; its results are kept, but "
    "--resume cannot continue it"
)


def lost_trial_dirs(folder: Path, known: set[str]) -> list[Path]:
    """Trials of `folder` with results but no status that are none of the `known` trials of its
    Tune experiment: Tune saves its state every few seconds, its trials' results reach the
    folder apart from it, and a search killed in between leaves such a trial behind."""
    if not Path(folder).is_dir():
        return []
    return [
        d
        for d in trial_dirs(folder)
        if d.name not in known and _has_results(d) and not read_trial_status(d)
    ]


def _has_results(trial_dir: Path) -> bool:
    results = Path(trial_dir) / RESULTS_FILE
    return results.is_file() and results.stat().st_size > 0


def orphan_trial_dirs(folder: Path, known: set[str]) -> list[Path]:
    """Folders of `folder` (a run's, or its confirmation's) that hold checkpoints but no
    results and are none of the `known` trials of its Tune experiment.

    A trial's worker uploads each checkpoint itself, while the search's process records the
    trial and its results: killed in between, the search leaves a checkpoint (with its training
    state) that its resumed experiment never knew, and so never keeps or cleans.
    """
    if not Path(folder).is_dir():
        return []
    return [
        d
        for d in sorted(Path(folder).iterdir())
        if d.is_dir()
        and d.name not in known
        and any(d.glob(CHECKPOINT_GLOB))
        and not _has_results(d)
    ]


def keep_best_checkpoint(trial_dir: Path) -> list[Path]:
    """Delete all but the best checkpoint of a finished trial, and its training state.

    Returns:
        What was (or, for a run mirrored from object storage, is to be) deleted: the other
        checkpoint folders and the best one's training state.
    """
    best = best_checkpoint(trial_dir)
    if best is None:
        return []
    removed = [f for f in sorted(Path(trial_dir).glob(CHECKPOINT_GLOB)) if f != best]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    (best / TRAINING_STATE_FILE).unlink(missing_ok=True)
    return [*removed, best / TRAINING_STATE_FILE]


def driver_files(run_dir: str | Path) -> list[Path]:
    """The files of a run that the search's driver writes in place (the manifest, the Optuna
    journal and the tracking record); Ray Tune writes the rest, trial status included (it is
    written into Tune's own folder of the trial)."""
    run_dir = Path(run_dir)
    names = (MANIFEST, OPTUNA_JOURNAL, TRACKING_FILE)
    return [run_dir / name for name in names if (run_dir / name).is_file()]


def is_checkpoint_body(path: str | Path) -> bool:
    """Whether a file of a run (its path inside the run) is the body of a checkpoint: weights,
    tokenizer, training state. A reader of a run mirrored from object storage fetches it for
    each trial's best checkpoint only; the metrics and model config that pick the best
    (`STATE_FILE`, `MODEL_CONFIG_FILE`) are always fetched."""
    path = Path(path)
    in_checkpoint = any(Path(part).match(CHECKPOINT_GLOB) for part in path.parts[:-1])
    return in_checkpoint and path.name not in (STATE_FILE, MODEL_CONFIG_FILE)


# --- the run's data -------------------------------------------------------------------------------


def load_data(
    manifest: Manifest,
    *,
    cache_dir: str | Path = config.CACHE_DIR,
    tokenizer: str | None = None,
    allow_changed: bool = False,
) -> PreparedData:
    """The run's splits rebuilt from its manifest, tokenized with its model's tokenizer.

    Args:
        manifest: The run's manifest.
        cache_dir: The token cache shared with `search`.
        tokenizer: Another folder holding the same tokenizer (a checkpoint), when the base
            model's folder is gone; None uses `manifest.model_path`.
        allow_changed: Warn instead of failing when the rebuilt data's fingerprint differs from
            the recorded one (the source changed since the search).

    Raises:
        RunError: The data changed since the search and `allow_changed` is False.
    """
    from sentune.data import prepare

    data = prepare(manifest.data.config, tokenizer or manifest.model_path, cache_dir=cache_dir)
    recorded = manifest.data.fingerprint
    if data.fingerprint != recorded:
        if not allow_changed:
            raise RunError(
                f"run {manifest.run}: the data changed since the search (fingerprint "
                f"{data.fingerprint}, the run recorded {recorded}); restore the dataset "
                f"{manifest.data.config.dataset!r} the search used, or start a new search"
            )
        log.warning(
            "the data rebuilt for %s has fingerprint %s, the search saw %s: the source changed "
            "since the search",
            manifest.run,
            data.fingerprint,
            recorded,
        )
    return data
