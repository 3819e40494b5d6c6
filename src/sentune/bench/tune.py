"""A Ray Tune method: one search of `search.run` with a strategy of `strategies.STRATEGIES`, read
back from its run folder as the evaluations it reported. Ray itself stays inside `search.py`."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from sentune import config, runs, search
from sentune.bench.methods import REPORT_COLUMNS, BenchOptions, MethodRun
from sentune.space import SearchSpec


def run_tune(
    spec: SearchSpec, strategy: str, *, seed: int, storage: Path, options: BenchOptions
) -> MethodRun:
    """One Ray Tune search with `strategy`, read back as its evaluations.

    Args:
        spec: The space with the bench's budget and this seed.
        strategy: A name of `strategies.STRATEGIES`.
        seed: The seed (recorded with the run).
        storage: The folder that gets the run folder.
        options: Precision, device, CPUs and cache of the benchmark.

    Returns:
        The run's evaluations, trials and failed trials.
    """
    search_options = search.SearchOptions(
        storage=storage,
        precision=options.precision,
        device=options.device,
        dashboard=False,
        num_cpus=options.num_cpus,
        cache_dir=options.cache_dir,
        strategy=strategy,
    )
    started = time.time()
    run_dir = search.run(spec, options=search_options)
    run = runs.open_run(run_dir)
    return MethodRun(
        method=strategy,
        seed=seed,
        reports=tune_reports(run.histories),
        started=started,
        run_dir=str(run_dir),
        trials=len(run.params),
        errors=dict(run.errors),
    )


def tune_reports(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All trials' evaluations in one table (`REPORT_COLUMNS`).

    Args:
        histories: Each trial's per-epoch results by trial id (`runs.Run.histories`).

    Returns:
        One row per evaluation of every trial that reported the objective.
    """
    frames = []
    for trial_id, history in histories.items():
        if config.VAL_MACRO_F1 not in history:
            continue
        frame = history[[c for c in REPORT_COLUMNS if c in history]].copy()
        frame["trial_id"] = trial_id
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    return pd.concat(frames, ignore_index=True)
