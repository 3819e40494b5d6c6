"""Growing a search that ended (`sentune search --resume RUN --trials N`): its Optuna study goes
on to N trials in all, in the same run folder, on the same space and data (`driver.grow`).

The added trials are a Tune experiment of their own in the run's folder, beside the earlier
trials, where the leaderboard reads them all. Ray Tune keeps each experiment's saved state in
files named by when it started and restores the newest, so a grown search that is interrupted
continues with `--resume RUN` like any other. The new experiment's searcher loads the run's
study from its journal: the sampler learns from every earlier trial, and the budget N counts
every trial the journal holds. The manifest records the new budget before the first added trial
starts; the confirmation over seeds then confirms the grown search's top configurations.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from sentune import runs
from sentune.errors import RunError, SentuneError
from sentune.space import SearchSpec

log = logging.getLogger(__name__)


def check_growth(run_dir: Path, manifest: runs.Manifest, trials: int, *, resume_hint: str) -> int:
    """How many trials the run's search ran, once growing it to `trials` is checked: it searched
    some parameter, every trial of it and of its confirmation ended, and `trials` is more.

    Args:
        run_dir: The run folder (its mirror for object storage).
        manifest: Its manifest.
        trials: The budget to grow to (`--trials`, a total).
        resume_hint: The command that continues the run, for a run still to be finished.

    Raises:
        RunError: Any of those does not hold (one line that says what to do).
    """
    name = manifest.run
    folders = runs.trial_dirs(run_dir)
    if not manifest.optuna_study or not runs.optuna_journal(run_dir).is_file():
        raise RunError(
            f"--trials {trials}: {name} searched no parameter (or predates the Optuna journal), "
            "so more trials would train the same configuration again; start a new search"
        )
    if trials <= len(folders):
        raise RunError(
            f"--trials {trials}: {name} already ran {len(folders)} trials, and --trials with "
            f"--resume is the total to grow to; pass more than {len(folders)}"
        )
    confirm_dir = runs.confirm_dir(run_dir)
    confirming = runs.trial_dirs(confirm_dir) if confirm_dir.is_dir() else []
    unfinished = [
        d.name
        for d in folders + confirming
        if runs.read_trial_status(d).get("status") not in (runs.COMPLETED, runs.ERROR)
    ]
    if unfinished:
        raise RunError(
            f"--trials {trials}: {name} has unfinished trials ({', '.join(unfinished[:3])}"
            f"{', …' if len(unfinished) > 3 else ''}); finish it first with `{resume_hint}`, "
            "then grow it"
        )
    return len(folders)


def grown_spec(manifest: runs.Manifest, trials: int) -> SearchSpec:
    """The run's search as it ran, with a budget of `trials`: its space file (the manifest's
    copy) with the settings the run fixed (the file's and the command line's, `train.max_length`
    as resolved), the run's model, data, objective and budget.

    Raises:
        RunError: The space no longer loads, or no longer searches what the run searched.
    """
    from sentune import space

    name = manifest.run
    with tempfile.TemporaryDirectory(prefix="sentune-space-") as folder:
        path = Path(folder) / f"{manifest.space.name}.yaml"
        path.write_text(manifest.space.text)
        try:
            loaded = space.load(path, overrides=dict(manifest.space.fixed))
        except SentuneError as exc:
            raise RunError(
                f"{name}: its space no longer loads ({exc}); start a new search with "
                f"--warm-start {name}"
            ) from None
    params = {key: loaded.params[key] for key in manifest.space.searched if key in loaded.params}
    key = space.MAX_LENGTH_KEY
    if key in params and params[key].kind == "quantiles":
        # Resolved from the data when the search started; the data is the same.
        values = tuple((manifest.max_length or {}).get("values", ()))
        params[key] = replace(params[key], kind="choice", args=values)
    if sorted(params) != sorted(manifest.space.searched):
        raise RunError(
            f"{name}: its space file now searches {sorted(loaded.params)}, the run searched "
            f"{sorted(manifest.space.searched)}; start a new search with --warm-start {name}"
        )
    return replace(
        loaded,
        name=manifest.space.name,
        path=Path(manifest.space.path),
        model=manifest.model,
        data=manifest.data.config,
        budget=replace(manifest.budget, trials=trials),
        fixed=dict(manifest.space.fixed),
        params=params,
        objective=manifest.objective,
    )


def sampler_spec(spec: SearchSpec, ran: int) -> SearchSpec:
    """`spec` with its sampler seeded `ran` past the run's seed. A sampler built afresh from the
    run's own seed would draw its first random proposals again: the random sampler's trials,
    and those TPE draws at random before it has enough trials."""
    return replace(spec, budget=replace(spec.budget, seed=spec.budget.seed + ran))


def record_growth(run_dir: Path, manifest: runs.Manifest, *, ran: int, trials: int) -> None:
    """Write the grown budget into the manifest (`budget.trials`), and the growth into its
    `grown` list: the trials the run had, the new budget, the sampler's seed, when."""
    growth = {
        "from": ran,
        "to": trials,
        "sampler_seed": manifest.budget.seed + ran,
        "at": dt.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_manifest(
        run_dir,
        replace(
            manifest,
            budget=replace(manifest.budget, trials=trials),
            grown=[*manifest.grown, growth],
        ),
    )
