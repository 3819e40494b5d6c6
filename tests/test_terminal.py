"""What a user sees in the terminal: the leaderboard and the summary of a run in 120 columns
(synthetic runs), and a whole `sentune search` (a real tiny search, in its own file so that the
suite's workers share the slow searches evenly)."""

from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest
from test_analysis import _floor, write_manifest, write_trial

from sentune import analysis, report
from sentune.cli import results
from sentune.report import terminal
from sentune.report.sentences import counted

HEADS = ["head.activation", "head.dropout", "head.layers", "head.pooling", "head.width"]
HEADS_SPACE = json.dumps(
    {
        "search": {
            "head.pooling": {"choice": ["cls", "mean"]},
            "head.layers": {"choice": [0, 1, 2]},
            "head.width": {"choice": [128, 384], "when": {"head.layers": [1, 2]}},
            "head.activation": {
                "choice": ["gelu", "relu", "tanh"],
                "when": {"head.layers": [1, 2]},
            },
            "head.dropout": {"uniform": [0.1, 0.5]},
        }
    }
)


def _heads_run(tmp_path, trials: int = 8):
    """A run like `heads`: conditional parameters (blank where inactive), trials that ASHA
    stopped after 1 or 2 of 3 epochs, one that trained all 3 and one that failed."""
    run_dir = tmp_path / "trials" / "heads-20261207-153700"
    write_manifest(run_dir, searched=HEADS, space_text=HEADS_SPACE)
    for i in range(trials):
        layers = i % 3
        params = {"head.pooling": ("cls", "mean")[i % 2], "head.layers": layers}
        params["head.dropout"] = 0.1 + 0.0471234 * i
        if layers:
            params |= {"head.width": (128, 384)[i % 2], "head.activation": "relu"}
        scores = [0.6 + 0.0123456 * i, 0.65 + 0.0101 * i, 0.7][: 1 + i % 3]
        error = "RuntimeError: CUDA out of memory " * 8 if i == trials - 1 else None
        write_trial(run_dir, f"{i:08x}", params, scores, error=error, done=error is None)
    return run_dir


def _wide(lines: list[str]) -> list[str]:
    """Lines over the width, but a file's path alone on its line: a path cannot be wrapped, and
    pytest's temporary folders (pytest-of-USER/pytest-N/popen-gwK/…) make it long."""
    return [line for line in lines if len(line) > terminal.WIDTH and " " in line.strip()]


def test_the_leaderboard_fits_the_terminal_with_blank_cells(tmp_path, capsys):
    run_dir = _heads_run(tmp_path)
    results.show_leaderboard(run_dir, tmp_path / "analysis")
    lines = capsys.readouterr().out.splitlines()
    assert not _wide(lines), "\n".join(_wide(lines))
    text = "\n".join(lines)
    assert "NaN" not in text and "nan" not in text and "None" not in text
    header = next(line for line in lines if line.startswith("#  trial_id"))
    assert header.split() == [
        "#", "trial_id", "val_macro_f1", "rank_score", "epochs", "status", "train_s",
        "activation", "dropout", "layers", "pooling", "width",
    ]  # fmt: skip
    first = lines[lines.index(header) + 1].split()
    assert first == ["1", "00000005", "0.7005", "0.7005", "3", "completed", "30.0"] + [
        "relu", "0.336", "2", "mean", "384",
    ]  # fmt: skip
    # A row without a hidden layer leaves width and activation blank.
    last = lines[lines.index(header) + 8]
    assert last.split() == ["8", "00000000", "0.6000", "0.6000", "1", "stopped", "10.0"] + [
        "0.100", "0", "cls",
    ]  # fmt: skip
    assert last[header.index("activation")] == " " and len(last) < header.index("width")
    assert "rank_score: what the order compares" in text
    # The failure's error in one line.
    assert "  00000007 failed: RuntimeError: CUDA out of memory" in text
    assert "8 trials, 5 stopped early by ASHA, 1 failed" in text
    csv = tmp_path / "analysis" / run_dir.name / analysis.LEADERBOARD_FILE
    assert f"every column (each epoch's score, accuracy, loss, checkpoint): {csv}" in " ".join(
        text.split()
    )
    assert csv.is_file()


def test_a_leaderboard_too_wide_for_the_terminal_leaves_out_the_last_parameters():
    table = pd.DataFrame(
        {"trial_id": ["a", "b"], "val_macro_f1": [0.7, float("nan")], "status": ["x", "error"]}
    )
    searched = [f"group{i}.a_rather_long_parameter_name_{i}" for i in range(8)]
    for key in searched:
        table[key] = ["a long categorical value", None]
    lines = terminal.leaderboard_lines(table, searched)
    assert not _wide(lines)
    assert any(line.startswith("not shown here: group2") for line in lines)
    assert "a long catego…" in lines[1]


def test_the_summary_fits_the_terminal_and_leaves_the_table_to_the_leaderboard(tmp_path):
    run_dir = _heads_run(tmp_path)
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=2)
    result.floor = _floor(0.64)
    text = report.summary(result, report=tmp_path / "analysis" / run_dir.name / "report.html")
    lines = text.splitlines()
    assert not _wide(lines), "\n".join(_wide(lines))
    assert "NaN" not in text and not re.search(r"\b1 (epoch|trial|seed)s\b", text)
    unwrapped = " ".join(text.split())
    assert lines[0].startswith("Top trials of ")
    assert f"Top trials of {run_dir} (leaderboard order, best epoch's val_macro_f1):" in unwrapped
    # No second leaderboard: the top trials in words, with the floor's rank.
    assert not [line for line in lines if "trial_id" in line or "status" in line]
    assert "00000005 0.7005, 00000002 0.7000, 00000007 0.7207;" in unwrapped
    assert "the TF-IDF floor (0.6400) ranks after 5 of 8 trials" in unwrapped
    space = tmp_path / "analysis" / run_dir.name / analysis.BEST_SPACE_FILE
    assert f"train it again with: sentune search {space}" in unwrapped
    result.floor = _floor(0.99)
    assert "the TF-IDF floor (0.9900) ranks above every trial" in " ".join(
        report.summary(result).split()
    )


def test_counted_says_one_or_many():
    assert [counted(n, "epoch") for n in (1, 2, 0, 1.5)] == [
        "1 epoch", "2 epochs", "0 epochs", "1.5 epochs",
    ]  # fmt: skip


@pytest.mark.slow
def test_the_terminal_shows_trial_events_and_an_estimate_not_tune_tables(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """A whole `sentune search` as a user runs it: a line per trial event with progress and an
    estimate, the leaderboard and the summary; Tune's tables, boxes and warnings only with -v."""
    import subprocess
    import sys

    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=4, max_epochs=2)
    argv = [
        sys.executable, "-m", "sentune.cli", "search", str(space_file), "--no-dashboard",
        "--precision", "fp32", "--storage", str(tmp_path / "trials"),
        "--analysis", str(tmp_path / "analysis"),
    ]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    started = [
        line for line in lines if re.match(r"trial \w+ started( \(start point: .*\))?: ", line)
    ]
    assert len(started) == 4, done.stderr[-3000:]
    # The first trial is the recipe, and its line says so.
    assert "(start point: recipe)" in started[0]
    assert any(" done, best 0." in line and "left]" in line for line in lines)
    assert sum("Trial status" in line for line in lines) == 0
    # Tune's experiment box and TensorBoard hint (printed whatever `verbose` says by its new
    # output engine) are not shown either.
    assert not any("Configuration for experiment" in line for line in lines)
    assert not any("tensorboard" in line.lower() for line in lines)
    assert not any("snapshotting" in line for line in lines)
    assert len(lines) <= 80, "\n".join(lines)
    # One leaderboard, in 120 columns, blank where a value is missing; counts agree in number.
    out = done.stdout.splitlines()
    assert sum(line.startswith("#  trial_id") for line in out) == 1, done.stdout
    # The floor's verdict is one sentence, whole: the report's headline starts with it.
    wide = [line for line in _wide(out) if not line.startswith("The TF-IDF floor (")]
    assert not wide, "\n".join(wide)
    assert "NaN" not in done.stdout
    printed = done.stdout + done.stderr
    assert not re.search(r"\b1 (epoch|trial|seed)s\b", printed) and "epoch(s)" not in printed


def test_a_table_rounds_its_figures_and_leaves_missing_values_blank():
    frame = pd.DataFrame(
        {"trial_id": ["aa", "bb"], "mean": [0.745431, 0.7401], "std": [0.002213, float("nan")]}
    )
    cells = pd.DataFrame({c: terminal.column_cells(frame[c].tolist(), c) for c in frame})
    assert terminal.table_lines(cells) == [
        "trial_id    mean     std",
        "aa        0.7454  0.0022",
        "bb        0.7401",
    ]
    assert terminal.column_cells([0.1, 0.336, None, 0.43], "head.dropout") == [
        "0.100", "0.336", "", "0.430",
    ]  # fmt: skip
    assert terminal.column_cells([1e-4, 3e-5], "train.learning_rate") == ["0.0001", "3e-05"]
