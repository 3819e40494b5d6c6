"""The terminal progress of a search: event lines and the estimate, with a fake clock."""

from __future__ import annotations

import re
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
    assert lines[0].startswith("trial a started: dropout=0.123, pooling=cls  [0/4 done, 0s]")
    # ASHA judges an evaluation at a rung: that line says so, and the trial's end says where
    # it was stopped.
    assert "trial a epoch 1/3 (ASHA rung): val_macro_f1 0.6100  [0/4 done, best 0.6100" in lines[1]
    assert "epoch 2/3 (ASHA rung): val_macro_f1 0.6500, p95 7.25 ms  [" in lines[2]
    assert "trial a stopped at the epoch-2 rung, best val_macro_f1 0.6500" in lines[3]
    assert "trial b failed: RuntimeError: boom  [2/4 done, best 0.6500, 2m00s" in lines[5]


def test_only_an_evaluation_at_a_rung_names_it_and_counts_are_singular_or_plural():
    lines, now = [], [0.0]
    progress = SearchProgress(
        total=3, max_epochs=3, rungs=[1, 3], write=lines.append, clock=lambda: now[0]
    )
    for trial, scores in (("a", [0.5, 0.6, 0.7]), ("b", [0.4, 0.45]), ("c", [0.3])):
        progress.on_start(trial, {})
        for epoch, score in enumerate(scores, 1):
            now[0] += 10.0
            progress.on_result(trial, epoch, score)
        progress.on_complete(trial)
    rung_lines = [line for line in lines if "rung" in line]
    assert [line.split(":")[0] for line in rung_lines] == [
        "trial a epoch 1/3 (ASHA rung)",
        "trial b epoch 1/3 (ASHA rung)",
        "trial c epoch 1/3 (ASHA rung)",
        "trial c stopped at the epoch-1 rung, best val_macro_f1 0.3000  [3/3 done, best 0.7000, "
        "1m00s, ~0s left]",
    ]
    assert any(
        line.startswith("trial a completed 3 epochs, best val_macro_f1 0.7000") for line in lines
    )
    # Stopped past its last rung (a time budget, a stopped search): no rung to name.
    assert any(line.startswith("trial b stopped after 2 epochs, best") for line in lines)
    assert not [line for line in lines if re.search(r"\b1 (epoch|trial)s\b", line)]
    single = SearchProgress(total=1, max_epochs=1, write=lines.append, clock=lambda: now[0])
    single.on_start("d", {})
    single.on_result("d", 1, 0.5)
    single.on_complete("d")
    assert lines[-1].startswith("trial d completed 1 epoch, best val_macro_f1 0.5000  [1/1 done")


def test_every_line_fits_the_terminal():
    lines, now = [], [0.0]
    progress = SearchProgress(
        total=40, max_epochs=10, rungs=[1, 3, 9, 10], time_budget_s=36_000, then_trials=12,
        write=lines.append, clock=lambda: now[0],
    )  # fmt: skip
    wide = {f"section{i}.parameter_{i}": 0.000123456 * i for i in range(12)}
    progress.on_start("1cef82f4", wide)
    now[0] = 5000.0
    progress.on_result("1cef82f4", 1, 0.123456789, p95_ms=1234.5678, first_step_s=12.345)
    progress.on_progress("1cef82f4", EpochProgressRecord(2, 123456, 234567, 1.0))
    progress.on_retry("1cef82f4", "RuntimeError: " + "x" * 300)
    progress.on_error("1cef82f4", "ValueError: a long error " + "with words " * 40)
    printed = [line for text in lines for line in text.splitlines()]
    assert len(printed) > len(lines), "the wide lines are wrapped"
    assert max(map(len, printed)) <= 120, "\n".join(printed)
    assert "1234.5678" not in "\n".join(printed) and "0.123456789" not in "\n".join(printed)


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


def test_the_estimate_counts_the_confirmation_that_follows():
    """The search's last trial is not the end: the confirmation over seeds retrains the top
    configurations, each for the full budget."""
    lines, now = [], [0.0]
    progress = SearchProgress(
        total=1, max_epochs=2, then_trials=3, write=lines.append, clock=lambda: now[0]
    )
    progress.on_start("a", {})
    assert lines[0] == (
        "the confirmation over seeds follows the search: 3 more full trials, counted in the "
        "estimates"
    )
    now[0] = 60.0
    progress.on_result("a", 1, 0.5)
    # 60 s an epoch: a's last epoch, then 3 trials of 2 epochs.
    assert progress.seconds_left(60.0) == pytest.approx(60.0 + 360.0)
    now[0] = 120.0
    progress.on_result("a", 2, 0.6)
    progress.on_complete("a")
    assert lines[-1].endswith("[1/1 done, best 0.6000, 2m00s, ~6m00s left]")
    assert sum("confirmation over seeds" in line for line in lines) == 1


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
    assert lines[-1].endswith("[0 done, best 0.5000, 1m00s of 3m30s, ~2m30s left]")
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
    assert lines[-1].startswith("trial a epoch 1/2: 110/200 batches (55%), ends in ~45s  [0/2")
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
    for added in ("partial", "last_line", "line_every_s", "then_trials", "judged_at"):
        del state[added]
    old = object.__new__(SearchProgress)
    old.__dict__.update(state)
    restored = cloudpickle.loads(cloudpickle.dumps(old))
    restored.on_progress("a", EpochProgressRecord(2, 10, 100, 1.0))
    restored.on_result("a", 2, 0.7)
    assert restored.epochs == {"a": 2} and restored.best == {"a": 0.7}
    assert restored.judged_at == {"a": 2} and restored.seconds_left(10.0) is not None
