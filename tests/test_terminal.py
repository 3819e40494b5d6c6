"""What a user sees in the terminal during a whole `sentune search` (a real tiny search, in its
own file so that the suite's workers share the slow searches evenly)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


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
    started = [line for line in lines if " started: " in line and line.startswith("trial ")]
    assert len(started) == 4, done.stderr[-3000:]
    assert any("trials done" in line and "left]" in line for line in lines)
    assert sum("Trial status" in line for line in lines) == 0
    # Tune's experiment box and TensorBoard hint (printed whatever `verbose` says by its new
    # output engine) are not shown either.
    assert not any("Configuration for experiment" in line for line in lines)
    assert not any("tensorboard" in line.lower() for line in lines)
    assert not any("snapshotting" in line for line in lines)
    assert len(lines) <= 80, "\n".join(lines)
