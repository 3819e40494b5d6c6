"""Confirmation over seeds: the top configurations retrained, resumed after a failure, and the
best mean named the winner by the analysis, the report and the export (a real tiny search)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from sentune import analysis, config, runs, search, space

pytestmark = pytest.mark.slow


def _fail_report(counter: Path, failing: int):
    """A trial hook: the `failing`-th report of the whole run (counted in a file, trials one at
    a time) fails its trial; every other report goes on."""

    def hook(metrics, resumed):
        seen = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(seen))
        if seen == failing:
            raise RuntimeError("injected failure (confirmation)")

    return hook


def test_confirmation_retrains_the_top_configurations_and_the_best_mean_wins(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    from sentune import export, report

    spec = space.load(
        write_tiny_space(
            tmp_path, tiny_model_dir, tiny_csv,
            trials=3, max_epochs=2, confirm_top=2, confirm_seeds=2,
        )
    )  # fmt: skip
    # FIFO: the 3 search trials report 6 times, then the first confirmation trial fails after
    # its first epoch (no retries), as if the confirmation had been interrupted.
    options = search.SearchOptions(
        storage=tmp_path / "trials",
        precision="fp32",
        cache_dir=tmp_path / "cache",
        dashboard=False,
        strategy="random-fifo",
        max_failures=0,
        trial_hook=_fail_report(tmp_path / "reports", failing=7),
    )
    run_dir = search.run(spec, options=options)
    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    assert len(table) == 3  # the confirmation trials stay out of the search's leaderboard
    top = table["trial_id"].head(2).tolist()
    expected = sorted(runs.confirm_trial_name(t, 1) for t in top)
    assert sorted(run.confirmation.params) == expected
    assert sorted(run.confirmation.errors) == [runs.confirm_trial_name(top[0], 1)]

    # --resume continues the errored confirmation trial from its checkpoint.
    search.resume(run_dir, options=replace(options, trial_hook=None))
    run = runs.open_run(run_dir)
    assert not run.confirmation.errors
    retried = run.confirmation.histories[runs.confirm_trial_name(top[0], 1)]
    assert retried[config.EPOCH].tolist() == [1, 2]
    assert runs.is_finished(run_dir)

    confirmed = analysis.confirmation(run)
    rows = confirmed.table
    pairs = [[top[0], 0], [top[0], 1], [top[1], 0], [top[1], 1]]
    assert rows[["trial_id", "seed"]].values.tolist() == pairs
    # The search trials (full budget) are seed 0; the confirmation trained seed 1 only.
    assert rows["confirm_trial"].tolist() == [
        "", runs.confirm_trial_name(top[0], 1), "", runs.confirm_trial_name(top[1], 1)
    ]  # fmt: skip
    for _, seeds in rows.groupby("trial_id"):
        scores = seeds[config.VAL_MACRO_F1]
        assert seeds["mean"].iloc[0] == pytest.approx(scores.mean())
        assert seeds["std"].iloc[0] == pytest.approx(scores.std(ddof=1))
    means = rows.groupby("trial_id")[config.VAL_MACRO_F1].mean()
    assert confirmed.winner == means.idxmax()

    winner = export.select_winner(run)
    assert winner.trial_id == confirmed.winner
    assert set(winner.confirmed) == {0, 1}
    best_seed = rows[rows["trial_id"] == winner.trial_id][config.VAL_MACRO_F1].max()
    assert winner.val_macro_f1 == pytest.approx(best_seed)
    assert (winner.checkpoint / "model.safetensors").is_file()

    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    text = report.summary(result)
    mean, std = means[winner.trial_id], rows[rows["trial_id"] == winner.trial_id]["std"].iloc[0]
    assert f"winner (best mean over seeds): trial {winner.trial_id}" in text
    assert f"{mean:.4f} ± {std:.4f} over 2 seeds" in text
    written = analysis.write_tables(result, tmp_path / "analysis")
    assert len(pd.read_csv(written["confirm"])) == 4

    # The export's model card gives the mean ± std over the seeds.
    fast = {"latency_runs": 2, "throughput_batches": 1, "warmup": 0, "parity_texts": 8}
    options = export.ExportOptions(formats=("hf",), cache_dir=tmp_path / "cache", **fast)
    done = export.export_winner(run_dir, out_dir=tmp_path / "export", options=options)
    card = (done.path / "README.md").read_text()
    assert f"best mean validation macro-F1: {mean:.4f} ± {std:.4f} over 2 seeds (0, 1)" in card
    assert set(done.metrics["confirmed_val_macro_f1"]) == {0, 1}
