"""A search's progress in the terminal: one line per trial event, each with an estimate.

Ray-free: the search feeds it from a Ray Tune callback, a test feeds it directly. The estimate
needs no model of ASHA: wall seconds per trained epoch so far (concurrency included) times the
epochs still expected, where a trial still to come is expected to train as many epochs as the
finished ones did on average (the full budget until one has finished), and a confirmation
over seeds that follows the search as its full-budget trials. Where a long epoch stands
comes from the trials' files (`train/progress.py`).
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sentune import config
from sentune.report.sentences import counted
from sentune.report.terminal import WIDTH, clip, short_names
from sentune.train.progress import EpochProgressRecord

#: An error's line is cut to this many characters (the whole error is in the trial's folder).
ERROR_CHARS = 160


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
    """Turns trial events into terminal lines of at most `WIDTH` columns: the event, then the
    search's state in brackets (`status`) when it fits on the event's last line.

    Args:
        total: The trial budget.
        max_epochs: Epochs of a trial that is never stopped.
        rungs: Epochs at which ASHA compares trials (`analysis.asha_rungs`), to name the
            evaluation that ASHA judges and the rung a trial was stopped at.
        time_budget_s: The search's wall-clock budget (`budget.time_budget_s`), if it has one:
            the search ends when it is spent, whatever the trial budget says.
        then_trials: Full-budget trials that follow the search (its confirmation over seeds):
            counted in the estimate, and said once.
        write: Where lines go (stderr by default).
        clock: Seconds, monotonic (a test passes a fake one).
    """

    total: int
    max_epochs: int
    rungs: list[float] = field(default_factory=list)
    time_budget_s: float | None = None
    then_trials: int = 0
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
    #: The rung at which ASHA judged each trial's latest evaluation (absent: not at a rung).
    judged_at: dict[str, float] = field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:
        # Tune pickles this object with the search's callbacks; a search that an earlier sentune
        # started and this one resumes lacks the fields added since: they start empty.
        fresh = SearchProgress(total=state["total"], max_epochs=state["max_epochs"])
        self.__dict__.update({**fresh.__dict__, **state})

    # --- events ----------------------------------------------------------------------------

    def on_start(self, trial_id: str, params: dict, *, start: str | None = None) -> None:
        """A trial started (or restarted after a failure) with these searched values; `start`
        names the start point it is (`recipe`, `start 1`), if it is one."""
        if self.started_at is None:
            self.started_at = self.clock()
            if self.then_trials:
                self.write(
                    "the confirmation over seeds follows the search: "
                    f"{counted(self.then_trials, 'more full trial')}, counted in the estimates"
                )
        self.epochs.setdefault(trial_id, 0.0)
        names = short_names(params)
        shown = ", ".join(f"{names[k]}={_short(v)}" for k, v in sorted(params.items()))
        point = f" (start point: {start})" if start else ""
        self._emit(f"trial {trial_id} started{point}: {shown or 'defaults'}", trial_id)

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
        # ASHA judges a trial at its first evaluation at or past a rung (Tune's `time_attr` is
        # the epoch); whether it keeps the trial, the trial's next line or its end says.
        judged = [r for r in self.rungs if previous < r <= epoch and r < self.max_epochs]
        if judged:
            self.judged_at[trial_id] = judged[-1]
        else:
            self.judged_at.pop(trial_id, None)
        rung = " (ASHA rung)" if judged else ""
        latency = f", p95 {p95_ms:.2f} ms" if p95_ms is not None else ""
        self._emit(
            f"trial {trial_id} epoch {epoch:g}/{self.max_epochs}{rung}: "
            f"{config.VAL_MACRO_F1} {score:.4f}{latency}",
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
            f"({record.batches_done / record.batches:.0%}), ends in ~{format_duration(left_s)}",
            trial_id,
        )

    def on_complete(self, trial_id: str) -> None:
        """A trial ended without error: completed (full budget) or stopped by the scheduler."""
        epochs = self.epochs.get(trial_id, 0.0)
        status = "completed" if epochs >= self.max_epochs else "stopped"
        self.finished[trial_id] = status
        self.partial.pop(trial_id, None)
        rung = self.judged_at.get(trial_id)
        if status == "completed":
            what = f"completed {counted(epochs, 'epoch')}"
        elif rung is not None:
            what = f"stopped at the epoch-{rung:g} rung"
        else:  # the time budget ran out, or the search was stopped
            what = f"stopped after {counted(epochs, 'epoch')}"
        best = self.best.get(trial_id)
        score = f", best {config.VAL_MACRO_F1} {best:.4f}" if best is not None else ""
        self._emit(f"trial {trial_id} {what}{score}")

    def on_error(self, trial_id: str, error: str) -> None:
        """A trial failed for good."""
        self.finished[trial_id] = "error"
        self.partial.pop(trial_id, None)
        self._emit(f"trial {trial_id} failed: {clip(error, ERROR_CHARS)}")

    def on_retry(self, trial_id: str, error: str) -> None:
        """A trial failed and will continue from its latest checkpoint."""
        error = clip(error, ERROR_CHARS)
        self._emit(f"trial {trial_id} failed ({error}); retrying from its latest checkpoint")

    # --- the estimate ----------------------------------------------------------------------

    def status(self) -> str:
        """`3/10 done, best 0.7435, 4m12s, ~9m00s left` (trials done, the best score so far,
        time elapsed, the estimate); with a time budget `3 done, best 0.7435, 4m12s of 10m00s,
        ~5m48s left`."""
        elapsed = self.clock() - self.started_at if self.started_at is not None else 0.0
        done, spent = f"{len(self.finished)}/{self.total}", format_duration(elapsed)
        if self.time_budget_s is not None:  # the trial budget is only a cap
            done, spent = (
                f"{len(self.finished)}",
                f"{spent} of {format_duration(self.time_budget_s)}",
            )
        parts = [f"{done} done"]
        if self.best:
            parts.append(f"best {max(self.best.values()):.4f}")
        parts.append(spent)
        left = self.seconds_left(elapsed)
        if left is not None:
            parts.append(f"~{format_duration(left)} left")
        return ", ".join(parts)

    def seconds_left(self, elapsed: float) -> float | None:
        """Estimated wall seconds until the search and the trials that follow it (`then_trials`)
        are done (None before the first epoch); the search's part is at most what is left of
        the time budget."""
        trained = sum(self.epochs.values()) + sum(self.partial.values())
        if trained <= 0:
            return None
        per_epoch = elapsed / trained
        left = per_epoch * self._epochs_left()
        if self.time_budget_s is not None:
            left = min(left, max(0.0, self.time_budget_s - elapsed))
        return left + per_epoch * self.then_trials * self.max_epochs

    def _epochs_left(self) -> float:
        done = [self.epochs[t] for t in self.finished if t in self.epochs]
        per_trial = sum(done) / len(done) if done else float(self.max_epochs)
        running = [t for t in self.epochs if t not in self.finished]
        expected = sum(
            max(0.0, max(per_trial, self.epochs[t]) - self.epochs[t] - self.partial.get(t, 0.0))
            for t in running
        )
        return expected + max(0, self.total - len(self.epochs)) * per_trial

    def _emit(self, line: str, trial_id: str | None = None) -> None:
        """Write `line` wrapped at `WIDTH`, the status on its last line when it fits there."""
        if trial_id is not None:
            self.last_line[trial_id] = self.clock()
        lines = textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False)
        status = f"  [{self.status()}]"
        if len(lines[-1]) + len(status) <= WIDTH:
            lines[-1] += status
        self.write("\n".join(lines))


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
