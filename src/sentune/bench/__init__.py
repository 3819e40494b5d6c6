"""Benchmark search strategies against each other and against the usual peer, on one budget.

Every method searches the same space on the same data and model for the same wall-clock budget,
once per seed:

- the Ray Tune strategies of `search.STRATEGIES` (Optuna TPE or random sampling, ASHA or FIFO);
- the peer: Hugging Face `Trainer.hyperparameter_search(backend="optuna")` with its standard recipe
  (`model_init`, truncation to max_length, `DataCollatorWithPadding`, evaluation each epoch,
  Optuna's defaults: TPE sampler, median pruner), stopped by the same wall-clock budget.

From each method's evaluations it computes the anytime curve (best validation macro-F1 so far
against cumulative trial-seconds, and against wall-clock seconds), the time to reach a target
macro-F1 and the final best; and, on one fixed configuration, the trial loop's throughput against
the plain `Trainer`, the evaluation time, Ray's overhead per trial and peak memory. Results go to
`analysis/bench/<timestamp>/`: `results.csv`, `curves.csv`, `bands.csv`, `throughput.csv`,
`summary.md`, `bench.html` and `bench.json` (machine, versions, seeds, settings). The terms are
defined in `curves.DEFINITIONS`.

Modules, one job each: `methods` (the registry, options, a search's record), `runner` (the whole
benchmark), `tune` (a Ray Tune method), `peer` (the Trainer's search), `trainer` (the Trainer
set-up the peer and the throughput share), `throughput` (trial loop vs Trainer, evaluation time,
memory), `curves` (the numbers), `render` (files and the printed table).
"""

from sentune.bench.curves import (
    DEFINITIONS,
    BenchResults,
    anytime_curve,
    compute_results,
    curve_bands,
    step_values,
    summarise,
    time_to_target,
    trial_overheads,
)
from sentune.bench.methods import (
    CPU_SIZES,
    DEFAULT_METHODS,
    METHODS,
    PEER,
    BenchOptions,
    Method,
    MethodRun,
)
from sentune.bench.peer import peer_unmapped, peer_values, run_peer
from sentune.bench.render import headlines, write_results
from sentune.bench.runner import load_spec, run_benchmark, run_method
from sentune.bench.throughput import (
    Measurement,
    measure_throughput,
    measure_trainer,
    measure_trial_loop,
    run_isolated,
)
from sentune.bench.trainer import build_trainer, training_fields
from sentune.bench.tune import run_tune

__all__ = [
    "CPU_SIZES",
    "DEFAULT_METHODS",
    "DEFINITIONS",
    "METHODS",
    "PEER",
    "BenchOptions",
    "BenchResults",
    "Measurement",
    "Method",
    "MethodRun",
    "anytime_curve",
    "build_trainer",
    "compute_results",
    "curve_bands",
    "headlines",
    "load_spec",
    "measure_throughput",
    "measure_trainer",
    "measure_trial_loop",
    "peer_unmapped",
    "peer_values",
    "run_benchmark",
    "run_isolated",
    "run_method",
    "run_peer",
    "run_tune",
    "step_values",
    "summarise",
    "time_to_target",
    "trial_overheads",
    "training_fields",
    "write_results",
]
