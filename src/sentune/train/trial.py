"""One trial: fine-tune the sentiment model on prepared data and report each evaluation.

Runs without Ray: `run_trial(config, data, report, settings=…)` takes a `report(metrics,
checkpoint_dir)` callback, so a test, a benchmark or a GPU host can call it directly; `search.py`
passes a callback that forwards to `ray.tune.report`.

The recipe: AdamW with biases and LayerNorm weights excluded from weight decay, linear warmup over
a share of all optimizer steps then linear decay, gradient accumulation toward an effective batch
size, mixed precision through accelerate, class-weighted loss or class-balanced oversampling,
length-grouped training batches and length-sorted evaluation batches with dynamic padding.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentune import config
from sentune.config import HeadConfig, TrainConfig, TrialSettings
from sentune.data import PreparedData
from sentune.errors import ResourceError, SentuneError
from sentune.runs import STATE_FILE, TRAINING_STATE_FILE
from sentune.train import scratch
from sentune.train.batches import collate, training_batches
from sentune.train.device import (
    compile_mode,
    compile_model,
    mixed_precision,
    reset_accelerate,
    resolve_device,
    resolve_precision,
    synchronize,
)
from sentune.train.evaluate import compute_metrics, predict_logits, save_predictions
from sentune.train.optim import linear_warmup_decay, parameter_groups
from sentune.train.progress import EpochProgress, StepLog

log = logging.getLogger(__name__)

#: `report(metrics, checkpoint_dir)`: checkpoint_dir is set when this evaluation is the best so far
#: (and, when `TrialSettings.resumable`, at every evaluation before the last epoch's end).
Report = Callable[[dict[str, Any], "Path | None"], None]
#: `on_step(progress)`: after each optimizer step, where the epoch stands (no device sync).
OnStep = Callable[[EpochProgress], None]


class TrialOutOfMemory(ResourceError):
    """The trial ran out of (GPU) memory."""


@dataclass
class TrialResult:
    """What a finished (or stopped) trial leaves behind."""

    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_dir: Path | None = None
    train_s: float = 0.0


def run_trial(
    trial_config: dict[str, Any],
    data: PreparedData,
    report: Report,
    *,
    settings: TrialSettings,
    resume_from: Path | None = None,
    on_step: OnStep | None = None,
) -> TrialResult:
    """Fine-tune one configuration and report validation metrics at each evaluation.

    Args:
        trial_config: Tunable values by dotted key (`head.*`, `train.*`); missing keys take the
            defaults of `config.py`.
        data: Prepared, tokenized splits (only train and validation are used).
        report: Called after each evaluation with the metrics and, when this evaluation is the
            best so far, a folder holding the model checkpoint (valid until the next call).
        settings: Runtime settings (model, epochs, precision, device, threads).
        resume_from: A checkpoint of a resumable run of this same trial (it holds
            `TRAINING_STATE_FILE`): training continues from there, as if never interrupted.
            The last epoch's checkpoint has no training state (nothing is left to train): the
            trial then ends at once, reporting nothing.
        on_step: Called after each optimizer step with where the epoch stands (a search shows
            it in the terminal during long epochs: `progress.ProgressFile`).

    Returns:
        The best evaluation, the full history and where the best checkpoint was left.

    Raises:
        TrialOutOfMemory: The device ran out of memory; the message says what to shrink (the
            packing first, when trials share a GPU).
    """
    train = config.build_section("train", trial_config)
    try:
        return _run_trial(
            trial_config, data, report, settings=settings, resume_from=resume_from, on_step=on_step
        )
    except torch.OutOfMemoryError as err:
        # Only the message is kept: the error's traceback holds the trial's frames, and with
        # them the model and optimizer that `release_memory` must free for the next trial.
        message = out_of_memory_message(str(err), train, settings)
    finally:
        release_memory()
    raise TrialOutOfMemory(message)


def out_of_memory_message(error: str, train: TrainConfig, settings: TrialSettings) -> str:
    """What to shrink after an out-of-memory error: the packing when trials share a GPU
    (other trials' memory is the likely cause), else the batch or the length."""
    first_line = (error.strip().splitlines() or ["out of memory"])[0][:200]
    shape = f"train.batch_size {train.batch_size} and train.max_length {train.max_length}"
    if 0 < settings.gpus_per_trial < 1:
        share = round(1 / settings.gpus_per_trial)
        return (
            f"out of GPU memory with {share} trials sharing a GPU "
            f"(budget.gpus_per_trial {settings.gpus_per_trial:g}), {shape} ({first_line}); "
            "lower the packing: --gpus-per-trial 1 (or a larger fraction such as 0.5), or "
            "budget.gpus_per_trial in the space file"
        )
    return (
        f"out of memory with {shape} ({first_line}); lower train.batch_size and keep "
        "train.effective_batch_size (gradient accumulation makes up the difference), or "
        "lower train.max_length"
    )


def release_memory() -> None:
    """Free what a finished trial left: its tensors (collected now, not whenever Python gets to
    it) and, on CUDA, the cached blocks, so that trials sharing the GPU (or the next trial of a
    reused worker) can have them."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _run_trial(
    trial_config: dict[str, Any],
    data: PreparedData,
    report: Report,
    *,
    settings: TrialSettings,
    resume_from: Path | None,
    on_step: OnStep | None,
) -> TrialResult:
    started = time.time()
    head = config.build_section("head", trial_config)
    train = config.build_section("train", trial_config)
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    reset_accelerate()
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision(precision))
    set_seed(train.seed)

    model = _build_model(settings.model, head, train, data, trial_config)
    if resume_from is not None:
        # Before `prepare`, which may wrap the model or move it to the device.
        _load_weights(model, resume_from)
    # Fused AdamW: one kernel for all parameters and, under fp16, the grad scaler's inf check
    # done on the GPU (the unfused path reads it back to the host at every step).
    optimizer = torch.optim.AdamW(
        parameter_groups(model, train.weight_decay),
        lr=train.learning_rate,
        fused=device == "cuda",
    )
    accumulation = max(1, math.ceil(train.effective_batch_size / train.batch_size))
    steps_per_epoch = math.ceil(math.ceil(len(data.train) / train.batch_size) / accumulation)
    total_steps = steps_per_epoch * settings.max_epochs
    scheduler = linear_warmup_decay(optimizer, train.warmup_ratio, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    loop = _Loop(
        accelerator=accelerator,
        model=model,
        forward=compile_model(model, compile_mode(train.compile_mode, device))
        if train.compile
        else model,
        optimizer=optimizer,
        scheduler=scheduler,
        train=train,
        data=data,
        settings=settings,
        accumulation=accumulation,
        steps_per_epoch=steps_per_epoch,
        report=report,
        precision=precision,
        started=started,
        int8=config.build_section("serve", trial_config).int8,
        on_step=on_step,
    )
    if resume_from is not None:
        loop.restore(resume_from)
    try:
        return loop.run()
    finally:
        # accelerate keeps the prepared model and optimizer in lists of its own.
        accelerator.free_memory()


def evaluation_marks(batches: int, evals_per_epoch: int) -> dict[float, int]:
    """Where an epoch of `batches` batches is evaluated before its end: for each nominal part of
    the epoch (1/4, 2/4, 3/4 at 4 evaluations an epoch), the batch count that completes it
    (rounded up; parts that fall on the same batch, in a very short epoch, keep the last)."""
    marks: dict[float, int] = {}
    for k in range(1, max(1, evals_per_epoch)):
        mark = math.ceil(batches * k / evals_per_epoch)
        if 0 < mark < batches:
            marks = {part: m for part, m in marks.items() if m != mark}
            marks[k / evals_per_epoch] = mark
    return marks


def _load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"))
    model.load_state_dict(state, strict=True)


def _build_model(
    name: str, head: HeadConfig, train: TrainConfig, data: PreparedData, trial_config: dict
):
    from sentune.train.model import build_model, class_weights

    counts = np.bincount(data.train.labels, minlength=len(data.label_names))
    return build_model(
        name,
        head,
        label_names=list(data.label_names),
        class_weights=class_weights(counts.tolist(), train.imbalance),
        encoder_layers=config.build_section("model", trial_config).encoder_layers,
    )


class _Loop:
    """The epoch loop of one trial; state that the steps share lives here."""

    def __init__(
        self,
        *,
        accelerator,
        model,
        forward,
        optimizer,
        scheduler,
        train: TrainConfig,
        data: PreparedData,
        settings: TrialSettings,
        accumulation: int,
        steps_per_epoch: int,
        report: Report,
        precision: str,
        started: float,
        int8: bool = False,
        on_step: OnStep | None = None,
    ):
        self.accelerator = accelerator
        self.model = model
        #: What runs the batches: the model, or its compiled version (`train.compile`).
        self.forward = forward
        self.static_max_length = train.max_length if train.compile else None
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train = train
        self.data = data
        self.settings = settings
        self.accumulation = accumulation
        self.steps_per_epoch = steps_per_epoch
        self.report = report
        self.on_step = on_step
        self.precision = precision
        self.pad_id = data.pad_id
        self.train_ids = data.train.truncated(train.max_length, train.truncation)
        self.val_ids = data.validation.truncated(train.max_length, train.truncation)
        self.rng = np.random.default_rng(train.seed)
        self.step = 0
        # Where training stands: the epoch in progress, the next batch group in it, and the
        # batch RNG's state before that epoch's batches were drawn (to draw them again on resume).
        self.epoch = 0
        self.position = 0
        self.epoch_rng_state = self.rng.bit_generator.state
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.workdir = Path(settings.checkpoint_dir or scratch.make())
        self.train_s = 0.0
        self._samples_since_eval = 0
        self._train_s_since_eval = 0.0
        # The training loss summed on the device and read once per report: reading it at
        # every step would make the host wait for the GPU each time.
        self._loss_since_eval = torch.zeros((), device=accelerator.device)
        self._batches_since_eval = 0
        self.step_log = StepLog()  # each step's loss and learning rate, for per-step curves
        self._segment_started: float | None = None
        self._started = started
        self.first_step_at: float | None = None
        self._tokenizer = None
        #: The last evaluation's validation predictions, saved with its checkpoint.
        self._predictions: np.ndarray | None = None
        self.int8 = int8
        #: The model's inference cost (`config.INFERENCE_METRICS`), measured once.
        self.latency: dict[str, float] = {}

    def run(self) -> TrialResult:
        eval_every = self.train.eval_every_steps
        while self.epoch < self.settings.max_epochs:
            self.model.train()
            self.rng.bit_generator.state = self.epoch_rng_state
            batches = training_batches(self.data.train, self.train, rng=self.rng)
            marks = evaluation_marks(len(batches), self.settings.evals_per_epoch)
            for start in range(self.position, len(batches), self.accumulation):
                self._optimizer_step(batches[start : start + self.accumulation])
                done = min(start + self.accumulation, len(batches))
                at_epoch_end = done >= len(batches)
                if self.on_step is not None:
                    self.on_step(EpochProgress(self.epoch + 1, done, len(batches)))
                # The last part of the epoch this step completed (sub-epoch evaluations).
                part = max((k for k, mark in marks.items() if start < mark <= done), default=None)
                epoch = self.epoch
                if at_epoch_end:
                    self.epoch, self.position = self.epoch + 1, 0
                    self.epoch_rng_state = self.rng.bit_generator.state
                else:
                    self.position = start + self.accumulation
                if at_epoch_end:
                    self._evaluate_and_report(epoch_end=self.epoch)
                elif part is not None:
                    self._evaluate_and_report(epoch_end=None, at=round(epoch + part, 4))
                elif eval_every and self.step % eval_every == 0:
                    self._evaluate_and_report(epoch_end=None)
        best = self.workdir / "best"
        return TrialResult(
            best=self.best,
            history=self.history,
            checkpoint_dir=best if best.is_dir() else None,
            train_s=self.train_s,
        )

    def restore(self, checkpoint: Path) -> None:
        """Continue from a resumable checkpoint (the model's weights are already loaded), or
        end at once from the last epoch's (`_evaluate_and_report`)."""
        path = checkpoint / TRAINING_STATE_FILE
        if not path.is_file():
            if self._restore_finished(checkpoint):
                return
            raise SentuneError(
                f"{checkpoint}: no {TRAINING_STATE_FILE}, so the trial cannot continue from it; "
                "it was written by a run without resumable checkpoints"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.epoch_rng_state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best, self.history = state["best"], state["history"]
        self.train_s = state["train_s"]
        last = self.history[-1] if self.history else {}
        self.latency = {k: last[k] for k in config.INFERENCE_METRICS if k in last}
        log.info("resumed at epoch %s, step %d", self.epoch, self.step)

    def _restore_finished(self, checkpoint: Path) -> bool:
        """Take the state of a checkpoint written at the end of the last epoch, if it is one:
        the trial is over (a retry or a resumed search that lost Tune's record of its end)."""
        try:
            state = json.loads((checkpoint / STATE_FILE).read_text())
        except (OSError, ValueError):
            return False
        if not state.get("final"):
            return False
        self.epoch, self.position, self.step = self.settings.max_epochs, 0, state["step"]
        self.best, self.history = dict(state["metrics"]), [state["metrics"]]
        log.info("resumed after the last epoch (step %d): nothing left to train", self.step)
        return True

    def _optimizer_step(self, group: list[list[int]]) -> None:
        if self._segment_started is None:
            self._segment_started = time.perf_counter()
        n_examples = sum(len(b) for b in group)
        if self.static_max_length is not None:
            # A new step for CUDA graphs (`compile_mode`): the previous step's outputs (its
            # gradients too, set to None) are consumed, so its graphs may be replayed over them.
            # Once per optimizer step, not per micro-batch: an accumulated gradient may live in
            # a graph's output memory, and CUDA graphs keep such memory while it is alive.
            torch.compiler.cudagraph_mark_step_begin()
        for indices in group:
            batch = collate(
                [self.train_ids[i] for i in indices],
                self.data.train.labels[indices],
                pad_id=self.pad_id,
                static_max_length=self.static_max_length,
                rows=self.train.batch_size,
            ).to(self.accelerator.device)
            with self.accelerator.autocast():
                out = self.forward(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    labels=batch.labels,
                )
            # Weight each micro-batch by its share of the examples so that the accumulated
            # gradient equals that of one big batch.
            loss = out.loss * (len(indices) / n_examples)
            self.accelerator.backward(loss)
            self.step_log.add(self.step + 1, loss.detach(), self.optimizer.param_groups[0]["lr"])
            self._loss_since_eval += out.loss.detach()
            self._batches_since_eval += 1
        if self.train.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.train.max_grad_norm)
        self.optimizer.step()
        # Only a grad scaler (fp16) skips steps; its flag is a host-side bool (with the fused
        # optimizer the scaler never skips on the host, so the schedule always moves on).
        if self.accelerator.scaler is None or not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._samples_since_eval += n_examples
        if self.first_step_at is None:
            synchronize(self.accelerator.device)  # once: the step has really run
            self.first_step_at = time.time()

    def _end_segment(self) -> None:
        """Count the training time since the last evaluation; the device's queue is drained
        first, so that the time is that of the work, not of queueing it."""
        if self._segment_started is None:
            return
        synchronize(self.accelerator.device)
        elapsed = time.perf_counter() - self._segment_started
        self._segment_started = None
        self._train_s_since_eval += elapsed
        self.train_s += elapsed

    def _evaluate(self) -> dict[str, float]:
        split = self.data.validation
        self.model.eval()
        logits = predict_logits(
            self.forward,
            split,
            ids=self.val_ids,
            pad_id=self.pad_id,
            batch_size=self.train.batch_size * 2,
            device=self.accelerator.device,
            autocast=self.accelerator.autocast,
            static_max_length=self.static_max_length,
        )
        self.model.train()
        self._predictions = logits.argmax(-1).numpy()
        metrics = compute_metrics(split.labels, self._predictions, list(self.data.label_names))
        # Unweighted, so that val_loss compares across imbalance settings.
        metrics[config.VAL_LOSS] = float(
            torch.nn.functional.cross_entropy(logits, torch.from_numpy(split.labels.copy()))
        )
        return metrics

    def _measure_latency(self) -> dict[str, float]:
        """The model's inference cost, measured at the first evaluation only: it depends on the
        architecture (layers, max_length, head, int8), not on the weights."""
        if self.latency or not self.settings.measure_latency:
            return self.latency
        import copy

        from sentune.serve.engines import measure_latency

        started = time.perf_counter()
        # A copy: export tracing and a move to eval mode must not touch the model in training.
        model = copy.deepcopy(self.accelerator.unwrap_model(self.model)).float()
        latency = measure_latency(
            model,
            self.val_ids,
            self.pad_id,
            int8=self.int8,
            device=self.accelerator.device.type,
            threads=torch.get_num_threads(),
        )
        self.latency = latency.metrics()
        log.info(
            "inference (%s, %d threads): p95 %.2f ms, %.0f texts/s at batch 32, %.1f MB; "
            "measured in %.1f s",
            latency.engine,
            latency.threads,
            latency.p95_ms,
            latency.throughput_b32,
            latency.model_mb,
            time.perf_counter() - started,
        )
        return self.latency

    def _evaluate_and_report(self, *, epoch_end: int | None, at: float | None = None) -> None:
        """Evaluate and report: at the end of epoch `epoch_end`, at the nominal fraction of an
        epoch `at` (`TrialSettings.evals_per_epoch`: 0.25, 0.5, … for every trial alike, so
        ASHA's rungs and the leaderboard compare equal training), or where `eval_every_steps`
        falls (the exact fraction of its steps)."""
        self._end_segment()
        metrics = self._evaluate()
        metrics.update(self._measure_latency())
        if epoch_end is not None:
            epoch = epoch_end
        else:
            epoch = at if at is not None else round(self.step / self.steps_per_epoch, 4)
        metrics.update(
            {
                config.EPOCH: epoch,
                config.STEP: self.step,
                config.TRAIN_SAMPLES_PER_S: self._samples_since_eval
                / max(self._train_s_since_eval, 1e-9),
                config.TRAIN_LOSS: float(self._loss_since_eval) / max(1, self._batches_since_eval),
                "train_s": self.train_s,
                "precision": self.precision,
                **self._start_times(),
            }
        )
        self._samples_since_eval = 0
        self._train_s_since_eval = 0.0
        self._loss_since_eval.zero_()
        self._batches_since_eval = 0
        self.history.append(metrics)
        checkpoint = None
        improved = not self.best or metrics[config.VAL_MACRO_F1] > self.best[config.VAL_MACRO_F1]
        if improved:
            self.best = dict(metrics)
        # After the last epoch nothing continues: no training state (for BERT-base, 0.9 GB of
        # AdamW moments written and copied into the run per trial), and no checkpoint at all
        # unless it is the best.
        final = epoch_end is not None and epoch_end >= self.settings.max_epochs
        if improved or (self.settings.resumable and not final):
            checkpoint = self._save_checkpoint(metrics, best=improved, final=final)
        log.info("epoch %s: %s %.4f", epoch, config.VAL_MACRO_F1, metrics[config.VAL_MACRO_F1])
        self.report({**metrics, config.STEP_LOG: self.step_log.rows()}, checkpoint)

    def _start_times(self) -> dict[str, float]:
        """When this run of the trial finished its first optimizer step: `config.TRIAL_SETUP_S`
        after `run_trial` was called (model load, and the first compile with `train.compile`)
        and `config.FIRST_STEP_S` after the command started (`TrialSettings.started_at`)."""
        if self.first_step_at is None:
            return {}  # resumed at an evaluation, before any step of this run
        times = {config.TRIAL_SETUP_S: self.first_step_at - self._started}
        if self.settings.started_at is not None:
            times[config.FIRST_STEP_S] = self.first_step_at - self.settings.started_at
        return times

    def _save_checkpoint(self, metrics: dict[str, Any], *, best: bool, final: bool) -> Path:
        """Write the model to `<workdir>/best` (or `latest` when it is not the best so far),
        replacing the previous one in one rename; resumable trials add the training state,
        except at the end of the last epoch (`final`, said in `STATE_FILE`)."""
        staging = self.workdir / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(staging)
        # Export and serving need the tokenizer beside the weights.
        if self._tokenizer is None:
            from sentune.train.encoders import load_tokenizer

            self._tokenizer = load_tokenizer(self.data.tokenizer)
        self._tokenizer.save_pretrained(staging)
        (staging / STATE_FILE).write_text(
            json.dumps(
                {"metrics": metrics, "step": self.step, "best": best, "final": final}, indent=1
            )
        )
        if self._predictions is not None:
            save_predictions(staging, self.data.validation.labels, self._predictions)
        if self.settings.resumable and not final:
            torch.save(self._training_state(), staging / TRAINING_STATE_FILE)
        target = self.workdir / ("best" if best else "latest")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target

    def _training_state(self) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "numpy_rng": self.epoch_rng_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best": self.best,
            "history": self.history,
            "train_s": self.train_s,
        }
