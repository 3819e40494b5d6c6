"""The terminal progress of a search: event lines and the estimate, with a fake clock."""

from __future__ import annotations

import pytest

from sentune.progress import SearchProgress, format_duration


def _progress(total=4, max_epochs=3):
    lines, now = [], [0.0]
    progress = SearchProgress(
        total=total, max_epochs=max_epochs, rungs=[1, 2, 3], write=lines.append,
        clock=lambda: now[0],
    )  # fmt: skip
    return progress, lines, now


def test_events_are_one_line_each_with_scores_and_rungs():
    progress, lines, now = _progress()
    progress.on_start("a", {"head.dropout": 0.123456, "head.pooling": "cls"})
    now[0] = 60.0
    progress.on_result("a", 1, 0.61)
    now[0] = 120.0
    progress.on_result("a", 2, 0.65, p95_ms=7.254)
    progress.on_complete("a")
    progress.on_start("b", {})
    progress.on_error("b", "RuntimeError: boom")
    assert len(lines) == 6
    assert lines[0].startswith("trial a started: head.dropout=0.123, head.pooling=cls")
    assert "epoch 1/3: val_macro_f1 0.6100" in lines[1] and "rung" not in lines[1]
    assert "epoch 2/3: val_macro_f1 0.6500, latency_p95_ms 7.25 (passed the epoch-1" in lines[2]
    assert "trial a stopped after 2 epoch(s), best val_macro_f1 0.6500" in lines[3]
    assert "trial b failed: RuntimeError: boom" in lines[5]
    assert "2/4 trials done" in lines[5]


def test_the_estimate_follows_seconds_per_epoch_and_expected_epochs():
    progress, lines, now = _progress(total=4, max_epochs=3)
    assert progress.seconds_left(0.0) is None
    progress.on_start("a", {})
    now[0] = 100.0
    progress.on_result("a", 1, 0.5)
    # Nothing finished yet: every trial is expected to take the full 3 epochs.
    # 100 s per epoch; a needs 2 more, 3 trials to come need 9: 1100 s.
    assert progress.seconds_left(100.0) == pytest.approx(1100.0)
    progress.on_complete("a")  # stopped after 1 epoch: trials now expected to take 1 epoch
    assert progress.seconds_left(100.0) == pytest.approx(300.0)
    assert "~5m00s left" in lines[-1]


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 252, 3780)] == ["4s", "4m12s", "1h03m"]


def test_the_first_training_step_is_said_once():
    progress, lines, _ = _progress()
    progress.on_start("a", {})
    progress.on_result("a", 1, 0.6, first_step_s=12.34)
    progress.on_result("a", 2, 0.7, first_step_s=12.34)
    progress.on_result("b", 1, 0.5, first_step_s=30.0)
    said = [line for line in lines if line.startswith("first training step")]
    assert said == ["first training step 12.3s after the command"]


def test_a_time_budget_bounds_the_estimate_and_the_trial_count_is_not_a_goal():
    """A search with `budget.time_budget_s` ends when the time is spent: its trial budget is
    only a cap (the bench passes 100000), so no "3/100000" and no estimate of 1000 hours."""
    lines, now = [], [0.0]
    progress = SearchProgress(
        total=100_000, max_epochs=3, time_budget_s=210, write=lines.append, clock=lambda: now[0]
    )
    progress.on_start("a", {})
    now[0] = 60.0
    progress.on_result("a", 1, 0.5)
    assert progress.seconds_left(60.0) == pytest.approx(150.0)
    assert "0 trials done, 1 epochs, 1m00s of 3m30s elapsed, ~2m30s left" in lines[-1]
    assert "100000" not in lines[-1]
    # The epochs still expected can end it sooner than the budget.
    short = SearchProgress(total=1, max_epochs=2, time_budget_s=3600, write=lines.append)
    short.on_start("a", {})
    short.on_result("a", 1, 0.5)
    assert short.seconds_left(60.0) == pytest.approx(60.0)
