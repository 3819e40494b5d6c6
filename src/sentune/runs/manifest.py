"""A run's typed manifest (`sentune.json`): what the run is, written once when the search starts.

`new_manifest` records the space, the data, the budget and the settings, with where and with
what the run was made (`machine`); `read_manifest` reads it back, fields a newer sentune added
being optional.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune.config import BudgetConfig, DataConfig, Objective, TrialSettings
from sentune.errors import RunError
from sentune.machine import device_description, git_commit, host_description, package_versions
from sentune.runs.atomic import write_json
from sentune.runs.layout import MANIFEST

if TYPE_CHECKING:
    from sentune.data import PreparedData


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
        warm_start: The run whose trials seeded the study (`--warm-start`): its name, how many
            of its finished trials were added, and the keys whose setting differed.
        grown: Each time the finished search was grown (`--resume RUN --trials N`): the trials
            it had, the new budget (`budget.trials` holds the latest), the sampler's seed, when.
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
    warm_start: dict[str, Any] | None = None
    grown: list[dict[str, Any]] = field(default_factory=list)

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
    warm_start: dict[str, Any] | None = None,
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
        warm_start=warm_start,
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
