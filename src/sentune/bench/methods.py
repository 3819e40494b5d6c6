"""What a benchmark compares and how it runs: the method registry, the options, and the record
(`MethodRun`) that every method's search returns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sentune import config
from sentune.search import strategies

PEER = "peer"


@dataclass(frozen=True)
class Method:
    """A way to search: a Ray Tune strategy (of `strategies.STRATEGIES`) or the peer (None)."""

    name: str
    description: str
    strategy: str | None = None


#: Methods by name: every Ray Tune strategy, plus the Hugging Face Trainer's own search.
METHODS: dict[str, Method] = {
    **{
        name: Method(name, f"Ray Tune: Optuna {s.sampler} sampler, {s.scheduler} scheduler", name)
        for name, s in strategies.STRATEGIES.items()
    },
    PEER: Method(PEER, "Trainer.hyperparameter_search (Optuna TPE sampler, median pruner)"),
}
DEFAULT_METHODS = ("tpe-asha", "random-asha", "tpe-fifo", PEER)

#: CPU-sized data and input length (used unless the bench runs on GPUs or sizes are given).
CPU_SIZES: dict[str, Any] = {"data.train_size": 1000, "data.val_size": 600, "train.max_length": 48}
#: The nice value at which Ray runs its worker processes (its `worker_niceness` setting,
#: `RAY_worker_niceness`): the Ray methods' trials run at it, so the peer's process does too.
RAY_WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", 15))
#: A search stops on its time budget, never on its trial count.
UNLIMITED_TRIALS = 100_000
#: The columns of `MethodRun.reports`; `train_s` only where the method reports it (Ray trials).
REPORT_COLUMNS = ["trial_id", "timestamp", "time_total_s", config.VAL_MACRO_F1, "train_s"]


@dataclass(frozen=True)
class BenchOptions:
    """How a benchmark runs.

    Attributes:
        methods: Names of `METHODS` to compare.
        seeds: One search per method and seed (the sampler's seed).
        budget_s: Wall-clock seconds each search may run.
        target: Validation macro-F1 to reach (None: the peer's median final best, or without the
            peer the lowest median final best of the methods).
        out_root: Results go to `<out_root>/<timestamp>/`.
        storage: Ray Tune runs go to `<storage>/bench-<timestamp>/`.
        precision: `auto`, `fp32`, `bf16` or `fp16` for every method.
        device: `auto`, `cpu` or `cuda` for every method, the throughput and the evaluation.
        cache_dir: Tokenized data cache.
        num_cpus: CPUs local Ray may use (None: all).
        peer_threads: torch threads of the peer's (sequential) trials (None: all CPUs).
        throughput: Also measure throughput, evaluation time and memory on one configuration.
        isolate: Run the peer and the throughput measurements in fresh processes (clean peak
            memory readings); False runs them in this process (tests).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1)
    budget_s: float = 240.0
    target: float | None = None
    out_root: Path = Path("analysis/bench")
    storage: Path = Path(config.STORAGE_DIR)
    precision: str = config.TrialSettings.precision
    device: str = config.TrialSettings.device
    cache_dir: Path = Path(config.CACHE_DIR)
    num_cpus: int | None = None
    peer_threads: int | None = None
    throughput: bool = True
    isolate: bool = True


@dataclass
class MethodRun:
    """One search of one method and seed, as the evaluations it reported.

    Attributes:
        reports: One row per evaluation (`REPORT_COLUMNS`): `trial_id`, `timestamp` (unix
            seconds), `time_total_s` (seconds since the trial started), `val_macro_f1`, and
            `train_s` where known.
        started: Unix time the search was started.
        run_dir: The Ray Tune run folder (None for the peer).
        trials: Trials started.
        peak_rss_mb: Peak resident memory of the searching process (the peer); None where it
            is not measured (Ray trials run in Ray's worker processes).
        errors: Trials that failed, by id.
    """

    method: str
    seed: int
    reports: pd.DataFrame
    started: float
    run_dir: str | None = None
    trials: int = 0
    peak_rss_mb: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
