"""The benchmark's numbers (`sentune.bench.curves`) and its summary (`sentune.bench.render`),
from synthetic trial logs: no model runs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentune import config
from sentune.bench import render
from sentune.bench.curves import (
    DEFINITIONS,
    anytime_curve,
    compute_results,
    curve_bands,
    time_to_target,
    trial_overheads,
)
from sentune.bench.methods import PEER, MethodRun

F1 = config.VAL_MACRO_F1
ROOT = Path(__file__).resolve().parents[1]


def _reports(rows):
    return pd.DataFrame(rows, columns=["trial_id", "timestamp", "time_total_s", F1, "train_s"])


# Two trials running side by side, then a third; timestamps in whole seconds as Tune writes them.
# Report order (by timestamp, then time_total_s):
#   a@102 (a=2)            -> trial_s 2            best 0.50
#   b@103 (a=2, b=3)       -> trial_s 5            best 0.60
#   a@104 (a=4, b=3)       -> trial_s 7            best 0.60 (a scored 0.55)
#   b@106 (a=4, b=6)       -> trial_s 10           best 0.70
#   c@107 (a=4, b=6, c=1)  -> trial_s 11           best 0.70 (c scored 0.40)
SYNTHETIC = _reports(
    [
        ("b", 106, 6.0, 0.70, 5.0),
        ("a", 102, 2.0, 0.50, 1.5),
        ("c", 107, 1.0, 0.40, 0.5),
        ("a", 104, 4.0, 0.55, 3.0),
        ("b", 103, 3.0, 0.60, 2.5),
    ]
)


def test_anytime_curve_from_synthetic_logs():
    curve = anytime_curve(SYNTHETIC, started=100.0)
    assert curve["trial_id"].tolist() == ["a", "b", "a", "b", "c"]
    assert curve["trial_s"].tolist() == [2.0, 5.0, 7.0, 10.0, 11.0]
    assert curve["wall_s"].tolist() == [2.0, 3.0, 4.0, 6.0, 7.0]
    assert curve["best"].tolist() == [0.50, 0.60, 0.60, 0.70, 0.70]


def test_anytime_curve_breaks_timestamp_ties_by_trial_time():
    reports = _reports([("x", 10, 5.0, 0.3, 4.0), ("y", 10, 1.0, 0.6, 0.5)])
    curve = anytime_curve(reports)
    assert curve["trial_id"].tolist() == ["y", "x"]
    assert curve["trial_s"].tolist() == [1.0, 6.0]
    assert curve["best"].tolist() == [0.6, 0.6]


def test_time_to_target():
    curve = anytime_curve(SYNTHETIC, started=100.0)
    assert time_to_target(curve, 0.6) == 5.0
    assert time_to_target(curve, 0.65, x="trial_s") == 10.0
    assert time_to_target(curve, 0.65, x="wall_s") == 6.0
    assert time_to_target(curve, 0.5) == 2.0
    assert math.isnan(time_to_target(curve, 0.71))


def test_curve_bands_median_and_spread_over_seeds():
    first = anytime_curve(SYNTHETIC, started=100.0).assign(method="m", seed=0)
    # A second seed: best 0.4 at trial-second 1, 0.8 at 11.
    second = anytime_curve(
        _reports([("p", 1, 1.0, 0.4, 0.5), ("q", 2, 10.0, 0.8, 9.0)]), started=0.0
    ).assign(method="m", seed=1)
    bands = curve_bands(pd.concat([first, second]), x="trial_s", points=12)
    assert bands["value"].tolist() == list(np.linspace(0.0, 11.0, 12))
    at = bands.set_index("value")
    assert math.isnan(at.loc[0.0, "median"]) and at.loc[0.0, "n"] == 0
    # At 1: only seed 1 has a value.
    assert at.loc[1.0, "median"] == pytest.approx(0.4) and at.loc[1.0, "n"] == 1
    # At 5: seed 0 best 0.6, seed 1 best 0.4.
    assert at.loc[5.0, "median"] == pytest.approx(0.5)
    assert (at.loc[5.0, "min"], at.loc[5.0, "max"]) == (pytest.approx(0.4), pytest.approx(0.6))
    # At 11: 0.7 and 0.8.
    assert at.loc[11.0, "median"] == pytest.approx(0.75)
    assert at.loc[11.0, "q25"] == pytest.approx(0.725)


def test_trial_overheads():
    table = trial_overheads(SYNTHETIC, eval_s=0.25).set_index("trial_id")
    assert table.loc["a", "wall_s"] == 4.0 and table.loc["a", "train_s"] == 3.0
    assert table.loc["a", "evaluations"] == 2
    assert table.loc["a", "nontrain_s"] == pytest.approx(1.0)
    assert table.loc["a", "overhead_s"] == pytest.approx(0.5)
    assert table.loc["c", "overhead_s"] == pytest.approx(0.25)


def test_compute_results_target_is_the_peers_median_best():
    runs = [
        MethodRun("tpe-asha", 0, SYNTHETIC, started=100.0, trials=3),
        MethodRun(
            PEER,
            0,
            _reports([("p0", 103, 3.0, 0.6, None), ("p1", 110, 8.0, 0.65, None)]),
            started=100.0,
            trials=2,
            peak_rss_mb=123.0,
        ),
    ]
    results = compute_results(runs, pd.DataFrame(), target=None, budget_s=60.0)
    assert results.target == pytest.approx(0.65)
    rows = results.results.set_index("method")
    assert rows.loc["tpe-asha", "final_best"] == pytest.approx(0.70)
    assert rows.loc["tpe-asha", "time_to_target_trial_s"] == 10.0
    assert rows.loc["tpe-asha", "time_to_target_wall_s"] == 6.0
    assert rows.loc[PEER, "time_to_target_trial_s"] == 11.0
    assert rows.loc[PEER, "peak_rss_mb"] == 123.0
    # Ray trials run in Ray's workers: their memory is not measured, and says so.
    assert math.isnan(rows.loc["tpe-asha", "peak_rss_mb"])
    summary = results.summary.set_index("method")
    assert summary.loc["tpe-asha", "speedup_vs_peer_trial_s"] == pytest.approx(11.0 / 10.0)
    assert summary.loc["tpe-asha", "speedup_vs_peer_wall_s"] == pytest.approx(10.0 / 6.0)
    # One seed: both quartiles of the wall-time ratio are its 6 s over the peer's 10 s, and its
    # final best (0.70) is above the peer's (0.65).
    assert summary.loc["tpe-asha", "wall_ratio_q25"] == pytest.approx(0.6)
    assert summary.loc["tpe-asha", "wall_ratio_q75"] == pytest.approx(0.6)
    assert summary.loc["tpe-asha", "final_best_ge_peer"] == 1
    assert math.isnan(rows.loc["tpe-asha", "overhead_s_mean"])  # no eval_s without throughput
    # With the throughput table, one evaluation's time gives Ray trials' overhead.
    throughput = pd.DataFrame(
        [
            {"loop": "HF Trainer", "samples_per_s": 10.0, "eval_s": 0.3, "overhead_s": math.nan},
            {"loop": "sentune trial", "samples_per_s": 15.0, "eval_s": 0.25, "overhead_s": 0.1},
        ]
    ).assign(threads=1, peak_rss_mb=500.0)
    with_eval = compute_results(runs, throughput, target=None, budget_s=60.0)
    overhead = with_eval.results.set_index("method").loc["tpe-asha", "overhead_s_mean"]
    assert overhead == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    text = "\n".join(render.headlines(with_eval))
    assert "1.50x" in text and "1.10x" in text
    assert f"Ray costs about {overhead - 0.1:.1f} s" in text
    # Without the peer, and a target nobody reaches.
    alone = compute_results(runs[:1], pd.DataFrame(), target=0.9, budget_s=60.0)
    assert alone.summary.loc[0, "reached"] == 0
    assert math.isinf(alone.summary.loc[0, "ttt_trial_s_median"])


def _manifest(methods=("tpe-asha", PEER)) -> dict:
    """The fields of `render.bench_manifest` that `render_summary` reads."""
    return {
        "space": {"name": "tiny", "searched": ["train.learning_rate"], "fixed": {}},
        "model": "tiny-bert",
        "data": {"dataset": "tiny.csv", "train_size": 10, "val_size": 5},
        "options": {"budget_s": 60.0, "methods": list(methods), "seeds": [0]},
        "peer_unmapped": [],
        "host": {"name": "host", "cpus": 2},
        "device": "cpu",
        "git_commit": None,
        "versions": {"pandas": pd.__version__},
    }


def test_summary_has_the_tables_and_the_definitions():
    runs = [MethodRun("tpe-asha", 0, SYNTHETIC, started=100.0, trials=3)]
    results = compute_results(runs, pd.DataFrame(), target=0.6, budget_s=60.0)
    text = render.render_summary(results, _manifest(("tpe-asha",)))
    assert "# Search strategies on `tiny`, 60 s each" in text
    assert "| tpe-asha | 1 | 0.7 |" in text
    assert text.endswith("## Definitions\n\n" + DEFINITIONS)
    assert "**Cumulative trial-seconds**" in DEFINITIONS and "**Overhead per trial**" in DEFINITIONS


def test_summary_is_written_without_docstrings():
    # `python -OO` strips docstrings: the summary's definitions must not come from one.
    script = (
        "import pandas as pd\n"
        "from sentune.bench import compute_results, render\n"
        "from sentune.bench.curves import DEFINITIONS\n"
        "from test_bench_curves import SYNTHETIC, MethodRun, _manifest\n"
        "assert render.__doc__ is None\n"
        "runs = [MethodRun('tpe-asha', 0, SYNTHETIC, started=100.0, trials=3)]\n"
        "results = compute_results(runs, pd.DataFrame(), target=0.6, budget_s=60.0)\n"
        "text = render.render_summary(results, _manifest(('tpe-asha',)))\n"
        "assert text.endswith(DEFINITIONS), text[-200:]\n"
    )
    path = f"{ROOT / 'src'}:{ROOT / 'tests'}"
    done = subprocess.run(
        [sys.executable, "-OO", "-c", script],
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
