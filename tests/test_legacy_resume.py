"""A run made by sentune before the package split (`tests/data/legacy-run.tgz`: the tiny search
of `conftest.py`, 4 trials, SIGKILLed after two had finished, by commit dc3fbc7) resumes and
reports: Ray Tune's pickled state names the old module paths (`search.legacy`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sentune import analysis, config, runs

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "data" / "legacy-run.tgz"
#: Where the old run was made and must be resumed: its pickled ledger writes the trial statuses
#: into that folder by its absolute path (as any run resumed where it was made).
ROOT = Path("/tmp/sentune-legacy-run")


def _epochs(run_dir: Path) -> dict[str, list[float]]:
    return {
        p.parent.name: [json.loads(line)[config.EPOCH] for line in p.read_text().splitlines()]
        for p in run_dir.glob(f"*/{runs.RESULTS_FILE}")
        if p.stat().st_size
    }


def test_a_run_made_before_the_package_split_resumes_and_reports(tmp_path):
    shutil.rmtree(ROOT, ignore_errors=True)
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(ROOT.parent, filter="data")
    try:
        run_dir = ROOT / "trials" / "old-run"
        before = _epochs(run_dir)
        finished_before = {d.name for d in runs.trial_dirs(run_dir) if runs.read_trial_status(d)}
        assert len(finished_before) == 2
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        env.pop("RAY_ADDRESS", None)
        resumed = subprocess.run(
            [sys.executable, "-m", "sentune.cli", "search", "--resume", str(run_dir),
             "--no-dashboard", "--analysis", str(tmp_path / "analysis")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "interrupted" not in resumed.stderr, resumed.stderr[-3000:]
        after = _epochs(run_dir)
        assert len(after) == 4
        for trial_id in finished_before:
            assert after[trial_id] == before[trial_id]
        statuses = {runs.read_trial_status(d).get("status") for d in runs.trial_dirs(run_dir)}
        assert statuses == {runs.COMPLETED}
        board = tmp_path / "analysis" / "old-run" / analysis.LEADERBOARD_FILE
        assert len(board.read_text().splitlines()) == 1 + 4
        assert (tmp_path / "analysis" / "old-run" / analysis.REPORT_FILE).is_file()
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
