"""The terminal progress of a search: event lines and the estimate, with a fake clock."""

from __future__ import annotations

import time

import pytest

from sentune.search.progress import SearchProgress, format_duration
from sentune.train.progress import EpochProgress, EpochProgressRecord, ProgressFile, read_progress


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


# --- inside an epoch ---------------------------------------------------------------------------


def test_a_trial_writes_where_its_epoch_stands_at_most_every_few_seconds(tmp_path):
    now = [0.0]
    write = ProgressFile(tmp_path, "a", every_s=10, clock=lambda: now[0])
    write(EpochProgress(1, 1, 100))  # the epoch's first step: where its rate is measured from
    assert not (tmp_path / "a.json").exists()
    now[0] = 5.0
    write(EpochProgress(1, 11, 100))
    assert read_progress(tmp_path) == {}  # under 10 s since the last write
    now[0] = 20.0
    write(EpochProgress(1, 41, 100))
    assert read_progress(tmp_path) == {"a": EpochProgressRecord(1, 41, 100, 2.0)}
    now[0] = 25.0
    write(EpochProgress(2, 3, 100))  # a new epoch: a new rate, and nothing written yet
    now[0] = 35.0
    write(EpochProgress(2, 13, 100))
    assert read_progress(tmp_path)["a"] == EpochProgressRecord(2, 13, 100, 1.0)


def test_the_first_training_step_is_written_at_once(tmp_path):
    """So that the search says when training began without waiting for an evaluation."""
    now = [0.0]
    started_at = time.time() - 42.0
    write = ProgressFile(tmp_path, "a", started_at=started_at, every_s=10, clock=lambda: now[0])
    write(EpochProgress(1, 1, 100))
    record = read_progress(tmp_path)["a"]
    assert record[:4] == (1, 1, 100, 0.0)
    assert record.first_step_s == pytest.approx(42.0, abs=5.0)
    now[0] = 20.0
    write(EpochProgress(1, 41, 100))
    assert read_progress(tmp_path)["a"] == EpochProgressRecord(1, 41, 100, 2.0, record.first_step_s)


def test_a_missing_folder_is_not_made_and_a_bad_file_is_skipped(tmp_path):
    now = [0.0]
    write = ProgressFile(tmp_path / "gone", "a", every_s=0, clock=lambda: now[0])
    write(EpochProgress(1, 1, 10))
    now[0] = 1.0
    write(EpochProgress(1, 5, 10))  # on another node of a cluster: nothing, and no error
    assert not (tmp_path / "gone").exists()
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text('{"epoch": 1}')
    assert read_progress(tmp_path) == {}
    assert read_progress(tmp_path / "gone") == {}


def test_a_long_epoch_gets_a_line_and_counts_in_the_estimate():
    progress, lines, now = _progress(total=2, max_epochs=2)
    progress.on_start("a", {})
    now[0] = 30.0
    progress.on_progress("a", EpochProgressRecord(1, 50, 200, 2.0))
    assert len(lines) == 1  # 30 s since its last line: nothing said yet
    # ...but counted: a quarter epoch in 30 s; 3.75 epochs to go at 120 s each.
    assert progress.seconds_left(30.0) == pytest.approx(450.0)
    now[0] = 61.0
    progress.on_progress("a", EpochProgressRecord(1, 110, 200, 2.0))
    assert lines[-1].startswith("trial a epoch 1/2: 110/200 batches (55%), ~45s to the epoch's end")
    now[0] = 90.0
    progress.on_progress("a", EpochProgressRecord(1, 160, 200, 2.0))
    assert len(lines) == 2  # under a minute since that line
    now[0] = 125.0
    progress.on_progress("a", EpochProgressRecord(1, 185, 200, 2.0))
    assert len(lines) == 2  # its epoch ends (7.5 s) before the next look: the evaluation says it
    now[0] = 150.0
    progress.on_result("a", 1, 0.6)
    # Written before the evaluation: not news, and not counted twice.
    now[0] = 400.0
    progress.on_progress("a", EpochProgressRecord(1, 200, 200, 2.0))
    assert progress.partial == {} and len(lines) == 3
    progress.on_complete("a")
    progress.on_progress("a", EpochProgressRecord(2, 10, 200, 2.0))
    assert len(lines) == 4 and progress.partial == {}


def test_a_search_saved_by_an_earlier_version_goes_on_with_the_fields_added_since():
    """Tune pickles the progress with the search's callbacks and unpickles it on `--resume`."""
    from ray import cloudpickle  # what Ray Tune pickles its state with

    progress, lines, now = _progress()
    progress.on_start("a", {})
    progress.on_result("a", 1, 0.6)
    state = dict(progress.__dict__)
    for added in ("partial", "last_line", "line_every_s"):
        del state[added]
    old = object.__new__(SearchProgress)
    old.__dict__.update(state)
    restored = cloudpickle.loads(cloudpickle.dumps(old))
    restored.on_progress("a", EpochProgressRecord(2, 10, 100, 1.0))
    restored.on_result("a", 2, 0.7)
    assert restored.epochs == {"a": 2} and restored.best == {"a": 0.7}
