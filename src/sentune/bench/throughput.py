"""Throughput on one configuration: sentune's trial loop (run directly, no Ray) against the
plain Hugging Face `Trainer`, the time of one evaluation, and peak memory.

Each measurement can run in a fresh process (`memory.run_isolated`) so that its peak resident
memory is its own.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sentune import config
from sentune.bench.memory import peak_rss_mb, run_isolated
from sentune.bench.methods import BenchOptions
from sentune.bench.trainer import build_trainer, setup_process
from sentune.config import HeadConfig, TrainConfig, TrialSettings
from sentune.data import PreparedData
from sentune.space import SearchSpec

TRIAL_LOOP = "sentune trial"
TRAINER_LOOP = "HF Trainer"


@dataclass(frozen=True)
class Measurement:
    """One configuration that both loops train, and where they train it.

    Attributes:
        train: The training section (batch size, max_length, learning rate, …).
        head: The head section.
        epochs: Training epochs.
        precision: A resolved precision: `fp32`, `bf16` or `fp16`.
        device: `auto`, `cpu` or `cuda`.
        threads: torch threads (None: torch's default).
    """

    train: TrainConfig
    head: HeadConfig
    epochs: int
    precision: str
    device: str
    threads: int | None

    def values(self) -> dict[str, Any]:
        """The configuration as dotted `train.*` and `head.*` values."""
        return {**config.to_dotted(self.train, "train"), **config.to_dotted(self.head, "head")}


def measure_throughput(
    spec: SearchSpec, data: PreparedData, model_path: str, *, options: BenchOptions
) -> pd.DataFrame:
    """The trial loop (run directly, no Ray) and the plain Trainer on one configuration: the
    space's fixed values, defaults for the searched keys, one epoch, the threads of one trial,
    on `options.device`.

    Args:
        spec: The space.
        data: Prepared data.
        model_path: The resolved encoder.
        options: The benchmark's precision, device and isolation.

    Returns:
        One row per loop (`measure_trainer` first): `loop`, `samples_per_s`, `train_s`,
        `wall_s`, `eval_s`, `evaluations`, `overhead_s` (trial loop: wall - train - eval),
        `val_macro_f1`, `peak_rss_mb`, `threads`.
    """
    from sentune.bench.peer import peer_values
    from sentune.train.device import resolve_device, resolve_precision

    values = peer_values(spec)
    device = resolve_device(options.device)
    measurement = Measurement(
        train=config.build_section("train", values),
        head=config.build_section("head", values),
        epochs=1,
        precision=resolve_precision(options.precision, device),
        device=device,
        threads=_threads(spec.budget.cpus_per_trial, options.num_cpus),
    )
    call = run_isolated if options.isolate else (lambda fn, *a: fn(*a))
    rows = [
        call(measure_trainer, data, model_path, measurement),
        call(measure_trial_loop, data, model_path, measurement),
    ]
    return pd.DataFrame(rows)


def measure_trial_loop(
    data: PreparedData, model_path: str, measurement: Measurement
) -> dict[str, Any]:
    """`trial.run_trial` called directly: throughput, one evaluation's time, memory.

    Args:
        data: Prepared data.
        model_path: The resolved encoder.
        measurement: The configuration, epochs, precision, device and threads.

    Returns:
        `loop`, `samples_per_s` (training only), `train_s`, `wall_s`, `eval_s` (one validation
        pass of the trained model), `evaluations`, `overhead_s` (wall - train - evaluations *
        eval_s), `val_macro_f1`, `peak_rss_mb`, `threads`.
    """
    import torch

    from sentune.train.device import resolve_device
    from sentune.train.model import load_model
    from sentune.train.trial import run_trial

    setup_process(measurement.threads)
    device = resolve_device(measurement.device)
    train = measurement.train
    history: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        result = run_trial(
            measurement.values(),
            data,
            lambda metrics, _checkpoint: history.append(metrics),
            settings=TrialSettings(
                model=model_path,
                max_epochs=measurement.epochs,
                precision=measurement.precision,
                device=device,
                num_threads=measurement.threads,
                checkpoint_dir=workdir,
            ),
        )
        wall = time.perf_counter() - started
        model = load_model(result.checkpoint_dir)
        eval_s = measure_evaluation(
            model, data, train, precision=measurement.precision, device=device
        )
    return {
        "loop": TRIAL_LOOP,
        "samples_per_s": len(data.train) * measurement.epochs / result.train_s,
        "train_s": result.train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "evaluations": len(history),
        "overhead_s": wall - result.train_s - len(history) * eval_s,
        "val_macro_f1": history[-1][config.VAL_MACRO_F1],
        "peak_rss_mb": peak_rss_mb(),
        "threads": measurement.threads or torch.get_num_threads(),
    }


def measure_evaluation(
    model, data: PreparedData, train: TrainConfig, *, precision: str, device: str
) -> float:
    """Seconds of one validation pass as the trial loop makes it (length-sorted batches of twice
    the training batch size, dynamic padding, autocast).

    Args:
        model: A trained sentune model.
        data: Prepared data (its validation split is scored).
        train: The training section (max_length and batch size).
        precision: A resolved precision: `fp32`, `bf16` or `fp16`.
        device: A resolved device: `cpu` or `cuda`.

    Returns:
        Wall seconds of the pass (the model is moved to `device` before the clock starts).
    """
    import torch

    from sentune.train.evaluate import predict_logits

    model = model.to(device).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    split = data.validation
    ids = split.truncated(train.max_length)
    started = time.perf_counter()
    predict_logits(
        model,
        split,
        ids=ids,
        pad_id=data.pad_id,
        batch_size=train.batch_size * 2,
        device=device,
        autocast=lambda: torch.autocast(device, dtype=dtype, enabled=dtype is not None),
    )
    return time.perf_counter() - started


def measure_trainer(
    data: PreparedData, model_path: str, measurement: Measurement
) -> dict[str, Any]:
    """The plain Hugging Face `Trainer` on the same configuration (the shared set-up of
    `bench.trainer`: truncation, `DataCollatorWithPadding`, random batches).

    Args:
        data: Prepared data.
        model_path: The resolved encoder.
        measurement: The configuration, epochs, precision, device and threads.

    Returns:
        The keys of `measure_trial_loop` (`overhead_s` is NaN: the Trainer times no steps of
        its own to subtract).
    """
    import torch

    from sentune.train.device import resolve_device

    setup_process(measurement.threads)
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(
            data,
            model_path,
            measurement.values(),
            output_dir=out,
            epochs=measurement.epochs,
            precision=measurement.precision,
            device=resolve_device(measurement.device),
        )
        started = time.perf_counter()
        train_metrics = trainer.train().metrics
        train_s = time.perf_counter() - started
        eval_started = time.perf_counter()
        prediction = trainer.predict(trainer.eval_dataset)
        eval_s = time.perf_counter() - eval_started
        wall = time.perf_counter() - started
    return {
        "loop": TRAINER_LOOP,
        "samples_per_s": train_metrics["train_samples_per_second"],
        "train_s": train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "evaluations": 1,
        "overhead_s": math.nan,
        "val_macro_f1": prediction.metrics["test_" + config.VAL_MACRO_F1],
        "peak_rss_mb": peak_rss_mb(),
        "threads": measurement.threads or torch.get_num_threads(),
    }


def _threads(cpus_per_trial: float | str, num_cpus: int | None) -> int:
    """A search trial's torch threads (`budget.cpus_per_trial`; `auto` is every CPU here, as
    `resources.resolve_cpus_per_trial` makes it for trials on this host's CPUs)."""
    if cpus_per_trial == config.CPUS_AUTO:
        return num_cpus or os.cpu_count() or 1
    return max(1, int(cpus_per_trial))
