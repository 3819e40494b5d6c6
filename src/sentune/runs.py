"""The run folder: its layout, its typed manifest, trial status and best checkpoints.

`search.py` writes a run through this module; analysis, report, export and bench read it through
this module. Nobody else knows a file name inside `trials/<run>/` or a manifest key.

Layout (Ray Tune writes the per-trial files; the names are Ray's and this module's):

```
trials/<space>-<YYYYmmdd-HHMMSS>/
  sentune.json                    the manifest (`Manifest`)
  optuna.journal                  the Optuna study of the run (JournalStorage)
  <trial_id>/params.json          the trial's configuration (dotted keys)
  <trial_id>/result.json          one JSON line per evaluation
  <trial_id>/sentune_status.json  completed | retrying | error, failures, error line
  <trial_id>/error.txt            Ray's record of the latest failure
  <trial_id>/checkpoint_*/        model files, trial_state.json, val_predictions.npy
                                  [, training_state.pt]
  confirm/<trial_id>-seed<n>/     a confirmation trial: the search trial's configuration
                                  retrained to the full budget with `train.seed` n (same files)
```
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sentune import config
from sentune.config import BudgetConfig, DataConfig, Objective, TrialSettings
from sentune.errors import RunError

if TYPE_CHECKING:
    from sentune.data import PreparedData

log = logging.getLogger(__name__)

MANIFEST = "sentune.json"
#: The run's Optuna study (`optuna.storages.JournalStorage` file): one trial per Ray trial, its
#: per-epoch intermediate values, PRUNED when ASHA stopped it, COMPLETE or FAIL otherwise.
OPTUNA_JOURNAL = "optuna.journal"
#: The Optuna user attribute that names a study trial's Ray trial id (its folder in the run).
RAY_TRIAL_ID_ATTR = "ray_trial_id"
#: Per trial, written by the driver: {"status": "completed"|"error"|"retrying", "failures": n,
#: "error": one line}. A trial retried after a failure keeps Ray's `error.txt`; this says whether
#: the failure was its last word.
TRIAL_STATUS = "sentune_status.json"
PARAMS_FILE = "params.json"
RESULTS_FILE = "result.json"
ERROR_FILE = "error.txt"
CHECKPOINT_GLOB = "checkpoint_*"
#: In each checkpoint: the evaluation's metrics and whether it was the best so far (JSON).
STATE_FILE = "trial_state.json"
#: In each checkpoint of a resumable trial: what continuing needs besides the weights
#: (optimizer, scheduler, step, epoch, RNG states, best-so-far). Plain tensors, dicts and lists,
#: read back with `torch.load(weights_only=True)`.
TRAINING_STATE_FILE = "training_state.pt"
#: In each checkpoint: the validation split's labels and the predictions its score came from
#: (int32, shape 2 x n), so that the report reads the winner's errors instead of predicting again.
PREDICTIONS_FILE = "val_predictions.npy"
#: The model weights' config in a checkpoint: a checkpoint without it is incomplete.
MODEL_CONFIG_FILE = "config.json"

COMPLETED, RETRYING, ERROR = "completed", "retrying", "error"
#: The confirmation trials of a run (a Tune experiment of its own inside the run folder), kept
#: apart so that the search's leaderboard never mixes them in.
CONFIRM_DIR = "confirm"
#: Where running trials say how far into their epoch they are (`progress.ProgressFile`), for
#: the search's terminal lines; removed when the search ends.
PROGRESS_DIR = ".progress"
#: In a confirmation trial's configuration: the search trial whose configuration it retrains.
#: Not a dotted key, so the trial's sections ignore it.
CONFIRMS_KEY = "confirms"
#: The trial seed's dotted key: a confirmation trial changes it and nothing else.
SEED_KEY = "train.seed"

_VERSIONED = (
    "sentune",
    "torch",
    "transformers",
    "accelerate",
    "ray",
    "optuna",
    "datasets",
    "scikit-learn",
    "numpy",
    "pandas",
)


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpaceRecord:
    """The search space a run used: its name, file, full text and what it searched."""

    name: str
    path: str
    text: str
    description: str = ""
    searched: list[str] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataRecord:
    """The data a run saw: its config, fingerprint, label names and preparation statistics."""

    config: DataConfig
    fingerprint: str
    label_names: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """What a run is: written once when the search starts (`sentune.json`).

    Attributes:
        run: The run's folder name (`<space>-<timestamp>`).
        started: ISO time the search started.
        space: The search space (`SpaceRecord`).
        model: The model as the user named it; `model_path` is where it was loaded from.
        data: The data (`DataRecord`).
        budget: The search budget; `budget.seed` seeds the sampler.
        settings: The trials' runtime settings.
        strategy: The search strategy's name (sampler + scheduler).
        max_failures: Retries of a failed trial.
        address: The Ray cluster joined (None: local Ray).
        max_length: How `train.max_length` was chosen from the data (`space.MaxLength.record`:
            rule, values, truncated share of each), None for runs that predate it.
        git_commit, versions, host, device: Where and with what the run was made.
        optuna_study: The study's name in `OPTUNA_JOURNAL` (None: a run from before the
            journal, or nothing searched).
        sampler: The Optuna sampler's settings (name, seed, startup trials, …).
        objective: What the search optimised (`config.Objective`: metrics and bounds).
    """

    run: str
    started: str
    space: SpaceRecord
    model: str
    model_path: str
    data: DataRecord
    budget: BudgetConfig
    settings: TrialSettings
    strategy: str = "tpe-asha"
    max_failures: int = 1
    address: str | None = None
    max_length: dict[str, Any] | None = None
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    optuna_study: str | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)

    @property
    def seed(self) -> int:
        """The sampler's seed."""
        return self.budget.seed

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (as written to `sentune.json`)."""
        return {**asdict(self), "seed": self.seed}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        """Read the JSON form back; fields a newer sentune added are optional."""
        data = dict(raw["data"])
        data["config"] = _dataclass_from(DataConfig, data["config"])
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.update(
            space=_dataclass_from(SpaceRecord, raw["space"]),
            data=_dataclass_from(DataRecord, data),
            budget=_dataclass_from(BudgetConfig, raw["budget"]),
            settings=_dataclass_from(TrialSettings, raw.get("settings", {})),
            objective=_dataclass_from(Objective, raw.get("objective", {})),
        )
        return cls(**values)


def _dataclass_from(cls: type, values: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def new_manifest(
    run_dir: Path,
    *,
    spec,
    data: PreparedData,
    settings: TrialSettings,
    strategy: str,
    max_failures: int,
    address: str | None,
    max_length: dict[str, Any] | None = None,
    optuna_study: str | None = None,
    sampler: dict[str, Any] | None = None,
    objective: Objective | None = None,
) -> Manifest:
    """The manifest of a new run of `spec` (a `space.SearchSpec`) on prepared `data`."""
    return Manifest(
        run=Path(run_dir).name,
        started=dt.datetime.now().isoformat(timespec="seconds"),
        space=SpaceRecord(
            name=spec.name,
            path=str(spec.path),
            text=Path(spec.path).read_text(),
            description=spec.description,
            searched=sorted(spec.params),
            fixed=dict(spec.fixed),
        ),
        model=spec.model,
        model_path=settings.model,
        data=DataRecord(
            config=spec.data,
            fingerprint=data.fingerprint,
            label_names=list(data.label_names),
            stats=data.stats,
        ),
        budget=spec.budget,
        settings=settings,
        strategy=strategy,
        max_failures=max_failures,
        address=address,
        max_length=max_length,
        git_commit=git_commit(),
        versions=package_versions(),
        host=host_description(),
        device=device_description(),
        optuna_study=optuna_study,
        sampler=dict(sampler or {}),
        objective=objective or Objective(),
    )


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Write `sentune.json` whole or not at all."""
    write_json(Path(run_dir) / MANIFEST, manifest.to_dict())


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of a run folder.

    Raises:
        RunError: The folder is not a sentune run, or its manifest is unreadable.
    """
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunError(
            f"{run_dir}: not a sentune run (no {MANIFEST}); pass a trials/<run> folder written by "
            "`sentune search`"
        )
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path}: unreadable manifest ({err}); the run cannot be used") from None


def optuna_journal(run_dir: str | Path) -> Path:
    """The run's Optuna journal file (`OPTUNA_JOURNAL`)."""
    return Path(run_dir) / OPTUNA_JOURNAL


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


# --- metadata: where and with what ------------------------------------------------------------


def git_commit() -> str | None:
    """The commit of the sentune checkout (with `-dirty` for uncommitted changes), if any."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=here,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    """Python's version and those of the packages that shape a result."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def host_description() -> dict[str, Any]:
    """The host's name, platform and CPU count."""
    return {"name": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()}


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo`'s "model name", e.g. "AMD EPYC 9454 48-Core
    Processor"); elsewhere what `platform` knows (which may be only the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_description() -> dict[str, Any]:
    """The CPU (and whether it has native bf16) and the CUDA GPUs, if any."""
    import torch

    from sentune.trial import cpu_has_bf16

    device: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_bf16": cpu_has_bf16(),
    }
    if torch.cuda.is_available():
        device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return device


# --- trials ----------------------------------------------------------------------------------


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
            if isinstance(row, dict) and config.OBJECTIVE in row and config.EPOCH in row:
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


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_score(folder: Path) -> float:
    """The objective of the evaluation that wrote this checkpoint (-inf when unreadable)."""
    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        return float(state["metrics"][config.OBJECTIVE])
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
    """The files of a run that the search's driver writes in place (the manifest and the Optuna
    journal); Ray Tune writes the rest, trial status included (it is written into Tune's own
    folder of the trial)."""
    run_dir = Path(run_dir)
    return [p for p in (run_dir / MANIFEST, run_dir / OPTUNA_JOURNAL) if p.is_file()]


def is_checkpoint_body(path: str | Path) -> bool:
    """Whether a file of a run (its path inside the run) is the body of a checkpoint: weights,
    tokenizer, training state. A reader of a run mirrored from object storage fetches it for
    each trial's best checkpoint only; the metrics and model config that pick the best
    (`STATE_FILE`, `MODEL_CONFIG_FILE`) are always fetched."""
    path = Path(path)
    in_checkpoint = any(Path(part).match(CHECKPOINT_GLOB) for part in path.parts[:-1])
    return in_checkpoint and path.name not in (STATE_FILE, MODEL_CONFIG_FILE)


# --- the run's data --------------------------------------------------------------------------


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


# --- writing ---------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> Path:
    """Write a file whole or not at all (a temporary file beside it, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a file's bytes whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def write_json(path: Path, value: Any) -> Path:
    """Write JSON whole or not at all."""
    return write_text(path, json.dumps(value, indent=1, default=str))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as CSV whole or not at all."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path
