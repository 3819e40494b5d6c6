"""The peer: Hugging Face `Trainer.hyperparameter_search(backend="optuna")` on a sentune space.

Its standard recipe (`model_init`, truncation to max_length, `DataCollatorWithPadding`,
evaluation each epoch, Optuna's defaults: TPE sampler, median pruner), stopped by the same
wall-clock budget as the other methods. The searched keys it can express are drawn with
`space.Param.suggest`, the one mapping of a parameter onto Optuna.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pandas as pd

from sentune import config
from sentune.bench.memory import peak_rss_mb
from sentune.bench.methods import PEER, REPORT_COLUMNS, UNLIMITED_TRIALS, MethodRun
from sentune.bench.trainer import (
    MODEL_KEYS,
    TRAINING_KEYS,
    build_trainer,
    model_builder,
    setup_process,
    training_fields,
)
from sentune.config import HeadConfig, TrainConfig
from sentune.data import PreparedData
from sentune.space import SearchSpec


def peer_unmapped(spec: SearchSpec) -> list[str]:
    """Searched keys the peer cannot vary per trial (it uses their fixed or default value)."""
    mapped = set(TRAINING_KEYS) | set(MODEL_KEYS)
    return sorted(key for key in spec.params if key not in mapped)


def peer_values(spec: SearchSpec, trial=None) -> dict[str, Any]:
    """A peer trial's tunable values by dotted key: defaults, the space's fixed values, and
    (with a trial) the searched values it can express. Optuna returns the same value when a
    parameter is suggested twice in one trial, so `model_init` and `hp_space` agree.

    Args:
        spec: The space.
        trial: An Optuna trial, or None for the configuration without searched values.

    Returns:
        Every `head.*` and `train.*` value by dotted key.
    """
    values = {**config.to_dotted(HeadConfig(), "head"), **config.to_dotted(TrainConfig(), "train")}
    values.update(spec.fixed)
    if trial is not None:
        unmapped = peer_unmapped(spec)
        for key, param in spec.params.items():
            if key not in unmapped:
                values[key] = param.suggest(trial, key)
    return values


def run_peer(
    spec: SearchSpec,
    data: PreparedData,
    model_path: str,
    *,
    seed: int,
    budget_s: float,
    precision: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    n_trials: int = UNLIMITED_TRIALS,
    niceness: int = 0,
) -> MethodRun:
    """`Trainer.hyperparameter_search(backend="optuna")` on the space, for `budget_s` seconds.

    Trials run one after another (Optuna's default); a callback stops the running trial when
    the budget is spent and Optuna's `timeout` starts no new one. Evaluations after the budget
    are not recorded.

    Args:
        spec: The space (its searched keys are mapped where the Trainer can express them).
        data: Prepared data (the peer re-tokenizes its texts with truncation, as usual).
        model_path: The resolved encoder.
        seed: Seed of Optuna's TPE sampler.
        budget_s: Wall-clock seconds.
        precision: `auto`, `fp32`, `bf16` or `fp16`.
        device: `auto`, `cpu` or `cuda`.
        threads: torch threads (None: torch's default).
        n_trials: Most trials (the budget normally ends the search first).
        niceness: Lower this process's CPU priority to this nice value (`RAY_WORKER_NICENESS`:
            Ray runs its trials' workers at it), so that on a host other work shares, the peer
            and the Ray trials lose the same share of the CPUs; 0 leaves it.

    Returns:
        The evaluations, with the peak resident memory of this process.
    """
    import optuna
    from transformers import TrainerCallback

    from sentune.train.device import resolve_device, resolve_precision

    setup_process(threads)
    if niceness > os.nice(0):
        os.nice(niceness - os.nice(0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    build = model_builder(model_path, data)
    clock = _PeerClock(budget_s)

    def model_init(trial=None):
        values = peer_values(spec, trial)
        clock.trial_started(trial)
        return build(values)

    class BudgetCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if clock.spent():
                control.should_training_stop = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            clock.evaluated(metrics["eval_" + config.VAL_MACRO_F1])

    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(
            data,
            model_path,
            peer_values(spec),
            output_dir=out,
            epochs=spec.budget.max_epochs,
            precision=precision,
            device=device,
            evaluate_each_epoch=True,
            model_init=model_init,
            callbacks=[BudgetCallback()],
        )
        clock.start()
        trainer.hyperparameter_search(
            hp_space=lambda trial: training_fields(peer_values(spec, trial)),
            compute_objective=lambda metrics: metrics["eval_" + config.VAL_MACRO_F1],
            n_trials=n_trials,
            direction="maximize",
            backend="optuna",
            sampler=optuna.samplers.TPESampler(seed=seed),
            timeout=budget_s,
        )
    return MethodRun(
        method=PEER,
        seed=seed,
        reports=clock.reports(),
        started=clock.started,
        trials=clock.trials,
        peak_rss_mb=peak_rss_mb(),
    )


class _PeerClock:
    """The budget of a peer search and the times of its trials and evaluations."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.started = time.time()
        self.trials = 0
        self._trial_start = self.started
        self._trial_id = ""
        self._rows: list[dict[str, Any]] = []

    def start(self) -> None:
        self.started = time.time()

    def spent(self) -> bool:
        return time.time() - self.started >= self.budget_s

    def trial_started(self, trial) -> None:
        # The Trainer also calls model_init once without a trial, before the search.
        if trial is not None:
            self.trials += 1
            self._trial_id = f"peer_{trial.number:05d}"
            self._trial_start = time.time()

    def evaluated(self, value: float) -> None:
        now = time.time()
        if self._trial_id and now - self.started <= self.budget_s:
            self._rows.append(
                {
                    "trial_id": self._trial_id,
                    "timestamp": now,
                    "time_total_s": now - self._trial_start,
                    config.VAL_MACRO_F1: float(value),
                }
            )

    def reports(self) -> pd.DataFrame:
        # The Trainer reports no training-only time: the peer's reports have no `train_s`.
        return pd.DataFrame(self._rows, columns=REPORT_COLUMNS[:4])
