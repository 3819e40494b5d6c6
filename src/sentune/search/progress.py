"""A search's progress in the terminal: one line per trial event, each with an estimate.

Ray-free: the search feeds it from a Ray Tune callback, a test feeds it directly. The estimate
needs no model of ASHA: wall seconds per trained epoch so far (concurrency included) times the
epochs still expected, where a trial still to come is expected to train as many epochs as the
finished ones did on average (the full budget until one has finished). Where a long epoch stands
comes from the trials' files (`train/progress.py`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sentune import config
from sentune.train.progress import EpochProgressRecord


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """`42s`, `4m12s`, `1h03m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class SearchProgress:
    """Turns trial events into terminal lines.

    Args:
        total: The trial budget.
        max_epochs: Epochs of a trial that is never stopped.
        rungs: Epochs at which ASHA compares trials (`analysis.asha_rungs`), to say "passed".
        time_budget_s: The search's wall-clock budget (`budget.time_budget_s`), if it has one:
            the search ends when it is spent, whatever the trial budget says.
        write: Where lines go (stderr by default).
        clock: Seconds, monotonic (a test passes a fake one).
    """

    total: int
    max_epochs: int
    rungs: list[float] = field(default_factory=list)
    time_budget_s: float | None = None
    write: Callable[[str], None] = _stderr
    clock: Callable[[], float] = time.monotonic
    started_at: float | None = None
    line_every_s: float = config.PROGRESS_LINE_EVERY_S
    epochs: dict[str, float] = field(default_factory=dict)
    #: The part of its current epoch a running trial has trained (0 to 1), for the estimate.
    partial: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)
    first_step_s: float | None = None
    #: When each trial last got a line (its start, an evaluation, where it stands).
    last_line: dict[str, float] = field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:
        # Tune pickles this object with the search's callbacks; a search that an earlier sentune
        # started and this one resumes lacks the fields added since: they start empty.
        fresh = SearchProgress(total=state["total"], max_epochs=state["max_epochs"])
        self.__dict__.update({**fresh.__dict__, **state})

    # --- events ----------------------------------------------------------------------------

    def on_start(self, trial_id: str, params: dict) -> None:
        """A trial started (or restarted after a failure) with these searched values."""
        if self.started_at is None:
            self.started_at = self.clock()
        self.epochs.setdefault(trial_id, 0.0)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(params.items()))
        self._emit(f"trial {trial_id} started: {shown or 'defaults'}", trial_id)

    def on_result(
        self,
        trial_id: str,
        epoch: float,
        score: float,
        *,
        p95_ms: float | None = None,
        first_step_s: float | None = None,
    ) -> None:
        """A trial reported an evaluation (with its p95 latency when it measured one);
        `first_step_s`: seconds from the command to its first training step
        (`config.FIRST_STEP_S`), said once, for the search's first."""
        if first_step_s is not None:
            self.on_first_step(first_step_s)
        previous = self.epochs.get(trial_id, 0.0)
        self.epochs[trial_id] = max(previous, epoch)
        self.partial.pop(trial_id, None)
        self.best[trial_id] = max(self.best.get(trial_id, float("-inf")), score)
        passed = [r for r in self.rungs if previous >= r > 0 and epoch > r and r < self.max_epochs]
        note = f" (passed the epoch-{passed[-1]:g} rung)" if passed else ""
        latency = f", {config.LATENCY_P95_MS} {p95_ms:.2f}" if p95_ms is not None else ""
        self._emit(
            f"trial {trial_id} epoch {epoch:g}/{self.max_epochs}: "
            f"{config.VAL_MACRO_F1} {score:.4f}{latency}{note}",
            trial_id,
        )

    def on_first_step(self, seconds: float) -> None:
        """Training began `seconds` after the command (`config.FIRST_STEP_S`): said once, for
        the search's first trial to get there."""
        if self.first_step_s is None:
            self.first_step_s = seconds
            self.write(f"first training step {seconds:.1f}s after the command")

    def on_progress(self, trial_id: str, record: EpochProgressRecord) -> None:
        """Where a running trial stands inside its epoch (`read_progress`): counted in the
        estimate, and said when the trial has had no line for `line_every_s` and its epoch
        does not end before the next look (`config.PROGRESS_WRITE_EVERY_S`)."""
        if trial_id in self.finished or trial_id not in self.epochs or record.batches <= 0:
            return
        position = record.epoch - 1 + min(record.batches_done, record.batches) / record.batches
        if position <= self.epochs[trial_id]:
            return  # written before the trial's last evaluation
        self.partial[trial_id] = min(1.0, position - self.epochs[trial_id])
        now = self.clock()
        if now - self.last_line.get(trial_id, now) < self.line_every_s or record.batches_per_s <= 0:
            return
        left_s = (record.batches - record.batches_done) / record.batches_per_s
        if left_s < config.PROGRESS_WRITE_EVERY_S:
            return  # the epoch's evaluation line comes before the next look
        self._emit(
            f"trial {trial_id} epoch {record.epoch}/{self.max_epochs}: "
            f"{record.batches_done}/{record.batches} batches "
            f"({record.batches_done / record.batches:.0%}), "
            f"~{format_duration(left_s)} to the epoch's end",
            trial_id,
        )

    def on_complete(self, trial_id: str) -> None:
        """A trial ended without error: completed (full budget) or stopped by the scheduler."""
        epochs = self.epochs.get(trial_id, 0.0)
        status = "completed" if epochs >= self.max_epochs else "stopped"
        self.finished[trial_id] = status
        self.partial.pop(trial_id, None)
        best = self.best.get(trial_id)
        score = f", best {config.VAL_MACRO_F1} {best:.4f}" if best is not None else ""
        self._emit(f"trial {trial_id} {status} after {epochs:g} epoch(s){score}")

    def on_error(self, trial_id: str, error: str) -> None:
        """A trial failed for good."""
        self.finished[trial_id] = "error"
        self.partial.pop(trial_id, None)
        self._emit(f"trial {trial_id} failed: {error}")

    def on_retry(self, trial_id: str, error: str) -> None:
        """A trial failed and will continue from its latest checkpoint."""
        self._emit(f"trial {trial_id} failed ({error}); retrying from its latest checkpoint")

    # --- the estimate ----------------------------------------------------------------------

    def status(self) -> str:
        """`3/10 trials done, 7 epochs, 4m12s elapsed, ~9m00s left`; with a time budget
        `3 trials done, 7 epochs, 4m12s of 10m00s elapsed, ~5m48s left`."""
        elapsed = self.clock() - self.started_at if self.started_at is not None else 0.0
        done, spent = f"{len(self.finished)}/{self.total}", format_duration(elapsed)
        if self.time_budget_s is not None:  # the trial budget is only a cap
            done, spent = (
                f"{len(self.finished)}",
                f"{spent} of {format_duration(self.time_budget_s)}",
            )
        parts = [f"{done} trials done", f"{sum(self.epochs.values()):g} epochs", f"{spent} elapsed"]
        left = self.seconds_left(elapsed)
        if left is not None:
            parts.append(f"~{format_duration(left)} left")
        return ", ".join(parts)

    def seconds_left(self, elapsed: float) -> float | None:
        """Estimated wall seconds until the budget is spent (None before the first epoch): at
        most what is left of the time budget."""
        trained = sum(self.epochs.values()) + sum(self.partial.values())
        if trained <= 0:
            return None
        if self.time_budget_s is not None:
            left = max(0.0, self.time_budget_s - elapsed)
            return min(left, self._epochs_left_s(elapsed, trained))
        return self._epochs_left_s(elapsed, trained)

    def _epochs_left_s(self, elapsed: float, trained: float) -> float:
        done = [self.epochs[t] for t in self.finished if t in self.epochs]
        per_trial = sum(done) / len(done) if done else float(self.max_epochs)
        running = [t for t in self.epochs if t not in self.finished]
        expected = sum(
            max(0.0, max(per_trial, self.epochs[t]) - self.epochs[t] - self.partial.get(t, 0.0))
            for t in running
        )
        expected += max(0, self.total - len(self.epochs)) * per_trial
        return elapsed / trained * expected

    def _emit(self, line: str, trial_id: str | None = None) -> None:
        if trial_id is not None:
            self.last_line[trial_id] = self.clock()
        self.write(f"{line}  [{self.status()}]")


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
