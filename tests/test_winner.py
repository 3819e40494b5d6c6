"""The winner as words and as a file (`best.yaml`, a space that trains it again), and a tie
within the seed noise said as one."""

from __future__ import annotations

import pandas as pd

from sentune import analysis
from sentune.analysis.confirm import Confirmation


def _confirmation(rows: list[tuple[str, float, float, int]]) -> Confirmation:
    configs = pd.DataFrame(
        [
            {"rank": i + 1, "trial_id": t, "mean": m, "std": s, "n_seeds": n, "seeds_planned": n}
            for i, (t, m, s, n) in enumerate(rows)
        ]
    )
    return Confirmation(table=pd.DataFrame(), configs=configs, winner=rows[0][0])


def test_top_configurations_within_the_seed_noise_are_called_tied():
    line = analysis.tie_line(_confirmation([("a", 0.744, 0.010, 2), ("b", 0.739, 0.012, 2)]))
    assert line.startswith("tied: trials a and b") and "two seeds" not in line
    assert "2 seeds per configuration" in line


def test_a_clear_lead_is_not_a_tie():
    line = analysis.tie_line(_confirmation([("a", 0.80, 0.002, 3), ("b", 0.70, 0.003, 3)]))
    assert line.startswith("trial a leads trial b by 0.1000") and "seeds per" not in line


def test_no_tie_line_without_two_confirmed_configurations():
    assert analysis.tie_line(None) == ""
    assert analysis.tie_line(_confirmation([("a", 0.8, 0.01, 2)])) == ""
