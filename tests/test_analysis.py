"""analysis/ on small synthetic Tune results written into a tmp run folder (no Ray, no model)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentune import analysis, config, runs
from sentune.analysis import importance
from sentune.config import DataConfig
from sentune.data import load_splits
from sentune.runs import MANIFEST
from sentune.space import Param
from sentune.train import evaluate

SPACE_TEXT = """\
description: synthetic
model: minilm
data: {dataset: tweets}
budget: {trials: 12, max_epochs: 3}
search:
  head.dropout: {uniform: [0.0, 0.5]}
  head.pooling: {choice: [cls, mean]}
  train.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
"""
SEARCHED = ["head.dropout", "head.pooling", "train.learning_rate"]


def write_manifest(run_dir: Path, *, searched=SEARCHED, space_text=SPACE_TEXT, **extra) -> dict:
    manifest = {
        "run": run_dir.name,
        "started": "2026-01-01T00:00:00",
        "space": {
            "name": "synthetic",
            "path": "search_spaces/synthetic.yaml",
            "text": space_text,
            "description": "synthetic",
            "searched": searched,
            "fixed": {"train.max_length": 64},
        },
        "model": "minilm",
        "model_path": "/nowhere",
        "data": {
            "config": {"dataset": "tweets"},
            "fingerprint": "0000",
            "label_names": ["negative", "neutral", "positive"],
            "stats": {
                "split_sizes": {"train": 10, "validation": 4, "test": 4},
                "class_counts": {
                    "train": {"negative": 5, "neutral": 3, "positive": 2},
                    "validation": {"negative": 2, "neutral": 1, "positive": 1},
                    "test": {"negative": 2, "neutral": 1, "positive": 1},
                },
                "dropped": {"duplicates": 3, "too_short": 1},
            },
        },
        "budget": {"trials": 12, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
        "seed": 0,
        "strategy": "tpe-asha",
        "git_commit": "abc",
        "versions": {"python": "3.11"},
        "host": {"name": "test"},
        "device": {"cpu": "x86_64"},
        **extra,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def write_trial(
    run_dir: Path,
    trial_id: str,
    params: dict,
    scores: list[float],
    *,
    done: bool = True,
    error: str | None = None,
    start: float = 0.0,
    checkpoint: bool = False,
    metrics: dict | None = None,
) -> Path:
    folder = run_dir / trial_id
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    lines = []
    for i, score in enumerate(scores):
        lines.append(
            json.dumps(
                {
                    config.VAL_MACRO_F1: score,
                    config.VAL_F1_WEIGHTED: score,
                    config.VAL_ACCURACY: score,
                    config.VAL_LOSS: 1 - score,
                    config.EPOCH: i + 1,
                    config.TRAIN_SAMPLES_PER_S: 100.0 + i,
                    "train_s": 10.0 * (i + 1),
                    "time_total_s": 10.0 * (i + 1),
                    "timestamp": start + 10.0 * (i + 1),
                    "done": done and i == len(scores) - 1,
                    "trial_id": trial_id,
                    "config": params,
                    **(metrics or {}),
                }
            )
        )
    (folder / "result.json").write_text("".join(line + "\n" for line in lines))
    if error:
        (folder / "error.txt").write_text(f"Traceback ...\n{error}\n")
    if checkpoint:
        (folder / "checkpoint_000000").mkdir()
        (folder / "checkpoint_000000" / "config.json").write_text("{}")
    return folder


def params(dropout=0.1, pooling="cls", lr=1e-4) -> dict:
    return {
        "head.dropout": dropout,
        "head.pooling": pooling,
        "train.learning_rate": lr,
        "train.max_length": 64,
    }


@pytest.fixture
def small_run(tmp_path) -> Path:
    """Five trials: completed, stopped twice by ASHA, failed, and one still running."""
    run_dir = tmp_path / "trials" / "synthetic-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "aaaa", params(0.1), [0.5, 0.8, 0.7], start=0)
    write_trial(run_dir, "bbbb", params(0.2), [0.6], start=5)
    write_trial(run_dir, "cccc", params(0.3), [0.55, 0.65], start=10)
    write_trial(run_dir, "dddd", params(0.4), [0.3], done=False, error="RuntimeError: boom")
    write_trial(run_dir, "eeee", params(0.45), [0.62, 0.9], done=False, start=20)
    return run_dir


def test_leaderboard_is_best_first_and_scores_each_trial_by_its_best_epoch(small_run):
    table = analysis.leaderboard(runs.open_run(small_run))
    # aaaa alone trained the full 3 epochs; the rest are compared at epoch 1, which all reached.
    assert table["trial_id"].tolist() == ["aaaa", "eeee", "bbbb", "cccc", "dddd"]
    best = table.set_index("trial_id")
    assert best.loc["aaaa", config.VAL_MACRO_F1] == 0.8
    assert best.loc["aaaa", "best_epoch"] == 2
    assert best.loc["aaaa", "epochs"] == 3
    assert best.loc["aaaa", config.TRAIN_SAMPLES_PER_S] == pytest.approx(101.0)
    for column in analysis.LEADERBOARD_COLUMNS + SEARCHED:
        assert column in table.columns


def _trial_order_run(tmp_path: Path) -> Path:
    """Sequential ASHA: the first trial met every rung unopposed and alone trained 3 epochs;
    at epoch 1 it ranked 4th, at epoch 2 the top three are within 0.005."""
    run_dir = tmp_path / "trials" / "order-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "first", params(0.1), [0.60, 0.700, 0.7613], start=0)
    write_trial(run_dir, "second", params(0.2), [0.66, 0.704], start=30)
    write_trial(run_dir, "third", params(0.3), [0.65, 0.702], start=50)
    write_trial(run_dir, "fourth", params(0.4), [0.64], start=70)
    write_trial(run_dir, "fifth", params(0.5), [0.55], start=80)
    return run_dir


def test_leaderboard_compares_trials_at_equal_fidelity(tmp_path):
    table = analysis.leaderboard(runs.open_run(_trial_order_run(tmp_path)))
    assert table["trial_id"].tolist() == ["first", "second", "third", "fourth", "fifth"]
    board = table.set_index("trial_id")
    # The full-budget trial is ranked on its best epoch; the others at epoch 1, not at their best.
    assert board.loc["first", "rank_epoch"] == 3
    assert board.loc["first", "rank_score"] == pytest.approx(0.7613)
    assert (board.drop(index="first")["rank_epoch"] == 1).all()
    assert board.loc["second", "rank_score"] == pytest.approx(0.66)
    assert board.loc["fourth", config.VAL_MACRO_F1] == pytest.approx(0.64)
    # Scored at epoch 1, "fourth" (0.64) beats "fifth" (0.55); "third" (0.65) beats "fourth"
    # though by best epoch "third" got 0.702 from an extra epoch "fourth" never had.
    for column, epoch in (("f1@1", 1), ("f1@2", 2), ("f1@3", 3)):
        assert column == analysis.epoch_score_column(epoch)
    assert board.loc["third", "f1@2"] == pytest.approx(0.702)
    assert math.isnan(board.loc["fourth", "f1@2"]) and math.isnan(board.loc["second", "f1@3"])
    assert board.loc["first", "f1@1"] == pytest.approx(0.60)
    cols = table.columns.tolist()
    assert cols.index("f1@3") < cols.index(SEARCHED[0])


def test_leaderboard_ranks_the_full_budget_first_even_against_better_short_trials(tmp_path):
    run_dir = tmp_path / "trials" / "short-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "long-a", params(0.1), [0.5, 0.55, 0.6])
    write_trial(run_dir, "long-b", params(0.2), [0.5, 0.6, 0.65])
    write_trial(run_dir, "short", params(0.3), [0.9, 0.95])
    write_trial(run_dir, "shorter", params(0.4), [0.92])
    table = analysis.leaderboard(runs.open_run(run_dir))
    assert table["trial_id"].tolist() == ["long-b", "long-a", "shorter", "short"]
    assert table["rank_epoch"].tolist() == [3, 3, 1, 1]


def test_the_exported_winner_follows_the_leaderboard_order(tmp_path):
    from sentune.export import select_winner

    run_dir = tmp_path / "trials" / "winner-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "long", params(0.1), [0.5, 0.55, 0.6], checkpoint=True)
    write_trial(run_dir, "short", params(0.3), [0.9], checkpoint=True)
    winner = select_winner(runs.open_run(run_dir))
    assert (winner.trial_id, winner.rank) == ("long", 1)


def test_the_ranking_rule_is_stated_as_data():
    assert "full epoch budget" in analysis.RANKING_RULE
    assert analysis.RANKING_RULE.count(".") == 1  # one sentence


def test_status_and_asha_rung_of_each_trial(small_run):
    table = analysis.leaderboard(runs.open_run(small_run)).set_index("trial_id")
    assert table["status"].to_dict() == {
        "eeee": analysis.UNFINISHED,
        "aaaa": analysis.COMPLETED,
        "cccc": analysis.STOPPED,
        "bbbb": analysis.STOPPED,
        "dddd": analysis.ERROR,
    }
    assert table["stopped_early"].to_dict() == {
        "eeee": False,
        "aaaa": False,
        "cccc": True,
        "bbbb": True,
        "dddd": False,
    }
    assert table["rung"].to_dict() == {"eeee": 2, "aaaa": 3, "cccc": 2, "bbbb": 1, "dddd": 1}
    assert table.loc["dddd", "error"] == "RuntimeError: boom"


@pytest.mark.parametrize(
    ("grace", "factor", "max_epochs", "strategy", "rungs"),
    [
        (1, 2, 3, "tpe-asha", [1, 2, 3]),
        (1, 2, 9, "tpe-asha", [1, 2, 4, 8, 9]),
        (1, 3, 9, "random-asha", [1, 3, 9]),
        (2, 2, 8, "tpe-asha", [2, 4, 8]),
        (1, 2, 3, "tpe-fifo", [3]),
    ],
)
def test_asha_rungs_follow_ray(grace, factor, max_epochs, strategy, rungs):
    budget = config.BudgetConfig(grace_period=grace, reduction_factor=factor, max_epochs=max_epochs)
    assert analysis.asha_rungs(budget, strategy) == rungs


def test_a_killed_run_keeps_what_finished(small_run):
    # The search was killed: one result.json ends mid-line, one trial has no results yet,
    # one params.json was cut short.
    path = small_run / "aaaa" / "result.json"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    write_trial(small_run, "ffff", params(0.2), [], done=False)
    broken = small_run / "gggg"
    broken.mkdir()
    (broken / "params.json").write_text('{"head.dropout": 0.')
    run = runs.open_run(small_run)
    table = analysis.leaderboard(run).set_index("trial_id")
    assert "gggg" not in table.index
    assert table.loc["aaaa", "epochs"] == 2
    assert table.loc["aaaa", "status"] == analysis.UNFINISHED
    assert table.loc["ffff", "status"] == analysis.UNFINISHED
    assert math.isnan(table.loc["ffff", config.VAL_MACRO_F1])
    curves = analysis.learning_curves(run)
    assert set(curves["trial_id"]) == {"aaaa", "bbbb", "cccc", "dddd", "eeee"}
    history = analysis.optimization_history(analysis.leaderboard(run), curves)
    assert len(history.by_trial) == 5


def test_learning_curves_are_long_with_wall_time(small_run):
    curves = analysis.learning_curves(runs.open_run(small_run))
    assert list(curves.columns[:2]) == ["trial_id", config.EPOCH]
    assert len(curves) == 3 + 1 + 2 + 1 + 2
    aaaa = curves[curves["trial_id"] == "aaaa"]
    assert aaaa[config.EPOCH].tolist() == [1, 2, 3]
    assert aaaa[config.VAL_MACRO_F1].tolist() == [0.5, 0.8, 0.7]
    assert curves["wall_s"].min() >= 0


def test_optimization_history_is_monotone_in_start_and_time_order(small_run):
    run = runs.open_run(small_run)
    table, curves = analysis.leaderboard(run), analysis.learning_curves(run)
    by_trial, by_time = analysis.optimization_history(table, curves)
    assert by_trial["trial_id"].tolist()[:2] == ["aaaa", "dddd"]  # dddd and aaaa start at 0
    assert by_trial["best_so_far"].is_monotonic_increasing
    assert by_trial["best_so_far"].iloc[-1] == 0.9
    assert by_time["wall_s"].is_monotonic_increasing
    assert by_time["best_so_far"].is_monotonic_increasing
    assert by_time["best_so_far"].max() == 0.9


def test_search_params_are_parsed_from_the_manifest(small_run):
    run = runs.open_run(small_run)
    found = analysis.search_params(run.manifest)
    assert list(found) == SEARCHED
    assert found["head.pooling"].args == ("cls", "mean")
    assert found["train.learning_rate"].kind == "loguniform"


def test_searched_quantiles_are_the_choice_the_run_resolved(tmp_path):
    text = SPACE_TEXT + "  train.max_length: {quantiles: [0.5, 0.95]}\n"
    searched = [*SEARCHED, "train.max_length"]
    manifest = write_manifest(
        tmp_path / "trials" / "q-20260101-000000",
        searched=searched,
        space_text=text,
        max_length={"rule": "quantiles [0.5, 0.95]", "values": [32, 64], "limit": 512},
    )
    found = analysis.search_params(runs.Manifest.from_dict(manifest))
    assert list(found) == searched
    assert found["train.max_length"] == Param("choice", (32, 64))


def _importance(run, **kwargs) -> pd.DataFrame:
    return importance.parameter_importance(
        run, analysis.learning_curves(run), analysis.params_or_observed(run), **kwargs
    )


def _equal_fidelity_run(tmp_path: Path, n: int = 12) -> Path:
    """At epoch 2 (reached by all) dropout decides; epoch 1, every trial's best, is decided
    by pooling; only two trials reach epoch 3."""
    run_dir = tmp_path / "trials" / "fidelity-20260101-000000"
    write_manifest(run_dir)
    rng = np.random.default_rng(0)
    for i in range(n):
        dropout, pooling = float(rng.uniform(0, 0.5)), ("cls", "mean")[i % 2]
        lr = float(10 ** rng.uniform(-5, -3))
        epoch1 = 0.9 if pooling == "cls" else 0.8
        epoch2 = 0.2 + dropout
        scores = [epoch1, epoch2] + ([0.3] if i < 2 else [])
        write_trial(run_dir, f"t{i:03d}", params(dropout, pooling, lr), scores, start=i)
    return run_dir


def test_fidelity_is_the_highest_epoch_that_enough_trials_reached(tmp_path):
    curves = analysis.learning_curves(runs.open_run(_equal_fidelity_run(tmp_path)))
    assert importance.fidelity(curves) == (2.0, 12)
    # Six trials at epoch 3 of 12 is enough (half, and at least four).
    four = curves[
        (curves[config.EPOCH] == 2) & curves["trial_id"].isin(["t002", "t003", "t004", "t005"])
    ]
    more = pd.concat([curves, four.assign(**{config.EPOCH: 3})])
    assert importance.fidelity(more) == (3.0, 6)


def test_importance_compares_trials_at_equal_fidelity(tmp_path):
    run = runs.open_run(_equal_fidelity_run(tmp_path))
    frame = _importance(run, seeds=2, bootstraps=5)
    assert list(frame.columns) == importance.IMPORTANCE_COLUMNS
    assert frame["param"].iloc[0] == "head.dropout"
    assert (frame["fidelity_epoch"] == 2).all() and (frame["n_trials"] == 12).all()
    dropout = frame.set_index("param").loc["head.dropout"]
    others = frame[frame["param"] != "head.dropout"]
    # The scores at epoch 2 depend on dropout only: its whole interval lies above the others'.
    assert dropout["low"] > others["high"].max()
    assert dropout["importance_mean"] > 0.7
    assert (frame["importance_std"] >= 0).all()
    assert (frame["low"] <= frame["importance_mean"]).all()
    assert (frame["importance_mean"] <= frame["high"]).all()


def _asha_run(tmp_path: Path, n: int = 12) -> Path:
    """Pooling decides the epoch-1 score (cls trials are the worst), so ASHA stops every cls
    trial at epoch 1; among the mean trials that reach epoch 2, dropout changes the score by
    less than the seed noise (the heads run of issue 26)."""
    run_dir = tmp_path / "trials" / "asha-20260101-000000"
    write_manifest(run_dir)
    rng = np.random.default_rng(3)
    for i in range(n):
        pooling = ("cls", "mean")[i % 3 != 0]
        dropout, lr = float(rng.uniform(0.1, 0.5)), float(10 ** rng.uniform(-5, -3))
        epoch1 = (0.60 if pooling == "cls" else 0.70) + float(rng.normal(0, 0.005))
        scores = [epoch1] if pooling == "cls" else [epoch1, 0.74 + float(rng.normal(0, 0.003))]
        write_trial(run_dir, f"t{i:03d}", params(dropout, pooling, lr), scores, start=i)
    return run_dir


def test_importance_over_every_trial_finds_what_asha_stopped_on(tmp_path):
    run = runs.open_run(_asha_run(tmp_path))
    assert importance.fidelities(analysis.learning_curves(run)) == [(1.0, 12), (2.0, 8)]
    frame = _importance(run, seeds=2, bootstraps=5, permutations=10)
    lowest = frame[frame["fidelity_epoch"] == 1].set_index("param")
    # At the lowest common rung, every trial: pooling explains the score, above the noise.
    assert lowest.index[0] == "head.pooling" and (lowest["n_trials"] == 12).all()
    assert lowest.loc["head.pooling", "importance_mean"] > 0.8
    assert not lowest.loc["head.pooling", "below_noise"]
    assert lowest.loc["head.pooling", "importance_mean"] > lowest.loc["head.pooling", "noise"]
    # At epoch 2 only ASHA's survivors: pooling is constant there; dropout is noise.
    higher = frame[frame["fidelity_epoch"] == 2].set_index("param")
    assert (higher["n_trials"] == 8).all()
    assert "constant" in higher.loc["head.pooling", "note"]
    assert higher.loc["head.dropout", "below_noise"]
    assert "below the noise" in higher.loc["head.dropout", "note"]
    # Ranked first, then below the noise, per fidelity.
    assert list(frame["fidelity_epoch"]) == sorted(frame["fidelity_epoch"])


def test_importance_says_why_when_it_cannot_be_measured(tmp_path):
    run_dir = tmp_path / "trials" / "few-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "a", params(0.1), [0.5])
    write_trial(run_dir, "b", params(0.2), [0.6])
    frame = _importance(runs.open_run(run_dir), seeds=1, bootstraps=1)
    assert frame["importance_mean"].isna().all()
    assert "only 2 trial(s)" in frame["note"].iloc[0]

    one = tmp_path / "trials" / "one-20260101-000000"
    write_manifest(
        one,
        searched=["head.dropout"],
        space_text="search:\n  head.dropout: {uniform: [0.0, 0.5]}\n",
    )
    for i in range(5):
        write_trial(one, f"t{i}", params(0.1 * i), [0.5 + 0.05 * i])
    frame = _importance(runs.open_run(one), seeds=1, bootstraps=1)
    assert frame["importance_mean"].isna().all()
    assert "only one searched parameter" in frame["note"].iloc[0]


def test_analyze_without_data_and_write_tables(small_run, tmp_path):
    result = analysis.analyze(small_run, with_data=False, seeds=1, bootstraps=2)
    assert result.floor is None and "floor" in result.notes
    assert result.data.splits["examples"].tolist() == [10, 4, 4]
    assert result.data.dropped["rows"].sum() == 4
    assert "git_commit" in result.manifest["item"].tolist()
    written = analysis.write_tables(result, tmp_path / "out")
    table = pd.read_csv(written["leaderboard"])
    assert table["trial_id"].tolist() == ["aaaa", "eeee", "bbbb", "cccc", "dddd"]
    importance = pd.read_csv(written["importance"])
    assert set(importance["param"]) == set(SEARCHED)


@pytest.fixture
def csv_manifest(tmp_path, tiny_csv, tiny_model_dir) -> runs.Manifest:
    """A manifest whose data is the tiny CSV and whose model is the tiny BERT."""
    data_cfg = DataConfig(dataset=str(tiny_csv))
    _, stats = load_splits(data_cfg)
    manifest = write_manifest(tmp_path / "trials" / "csv-20260101-000000")
    manifest["data"] = {
        "config": {"dataset": str(tiny_csv)},
        "fingerprint": stats["fingerprint"],
        "label_names": stats["label_names"],
        "stats": stats,
    }
    manifest["model_path"] = str(tiny_model_dir)
    manifest["space"]["fixed"] = {"train.max_length": 8}
    return runs.Manifest.from_dict(manifest)


def test_token_lengths_give_the_share_each_max_length_truncates(csv_manifest, tmp_path):
    data = runs.load_data(csv_manifest, cache_dir=tmp_path / "cache")
    tokens = analysis.token_lengths(data, csv_manifest)
    assert len(tokens.lengths) == len(data.train)
    assert tokens.cuts["max_length"].tolist() == [8]
    assert tokens.cuts["truncated_share"].iloc[0] == pytest.approx((tokens.lengths > 8).mean())
    assert not tokens.cuts["searched"].any()


def test_token_lengths_without_a_fixed_max_length_cut_at_the_default(csv_manifest, tmp_path):
    csv_manifest.space.fixed.clear()
    data = runs.load_data(csv_manifest, cache_dir=tmp_path / "cache")
    tokens = analysis.token_lengths(data, csv_manifest)
    assert tokens.cuts["max_length"].tolist() == [config.TrainConfig.max_length]


def test_a_trial_s_max_length_is_its_own_else_the_default(small_run):
    write_trial(small_run, "ffff", {**params(), "train.max_length": 32}, [0.5])
    write_trial(small_run, "gggg", {k: v for k, v in params().items() if "max_length" not in k}, [])
    run = runs.open_run(small_run)
    assert analysis.trial_max_length(run, "aaaa") == 64
    assert analysis.trial_max_length(run, "ffff") == 32
    assert analysis.trial_max_length(run, "gggg") == config.TrainConfig.max_length


def _floor(value: float, train_size: int = 500) -> evaluate.Floor:
    return evaluate.Floor(
        val_macro_f1=value,
        val_accuracy=value,
        train_size=train_size,
        val_size=100,
        fingerprint="0000",
        fingerprint_matches=True,
        method=evaluate.FLOOR_METHOD,
    )


def _lengths(*lengths: int) -> analysis.TokenLengths:
    return analysis.TokenLengths(np.array(lengths), pd.DataFrame())


def test_floor_verdict_names_the_likely_causes(tmp_path):
    run_dir = tmp_path / "trials" / "long-20260101-000000"
    write_manifest(run_dir)  # max_epochs 3
    write_trial(run_dir, "aaaa", params(0.1), [0.5, 0.6, 0.64])  # max_length 64, improving
    write_trial(run_dir, "bbbb", params(0.2), [0.55, 0.5])
    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    long_texts = _lengths(*[248] * 9, 40)
    verdict = analysis.floor_verdict(run, table, _floor(0.77), long_texts)
    assert (verdict.trial_id, verdict.best, verdict.floor) == ("aaaa", 0.64, 0.77)
    assert verdict.max_length == 64 and verdict.truncated_share == pytest.approx(0.9)
    assert verdict.still_improving and verdict.epochs == 3 and verdict.max_epochs == 3
    assert verdict.causes == ("truncation", "too few epochs", "too little data")
    # Short texts and plenty of data: only the epochs remain.
    verdict = analysis.floor_verdict(run, table, _floor(0.77, train_size=5000), _lengths(20, 30))
    assert verdict.causes == ("too few epochs",)
    # Without token lengths, the share the search recorded for that max_length.
    run = dataclasses.replace(
        run,
        manifest=dataclasses.replace(
            run.manifest, max_length={"values": [64], "truncated_share": {"64": 0.35}}
        ),
    )
    verdict = analysis.floor_verdict(run, table, _floor(0.77, train_size=5000))
    assert verdict.truncated_share == 0.35 and verdict.causes[0] == "truncation"
    # A best trial above the floor, or no floor: nothing to say.
    assert analysis.floor_verdict(run, table, _floor(0.6), long_texts) is None
    assert analysis.floor_verdict(run, table, None, long_texts) is None


def test_floor_verdict_of_a_trial_past_its_peak_names_no_cause(tmp_path):
    run_dir = tmp_path / "trials" / "peak-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "aaaa", params(0.1), [0.6, 0.7, 0.65])
    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    verdict = analysis.floor_verdict(run, table, _floor(0.7, train_size=5000), _lengths(20, 30))
    assert verdict.best == verdict.floor == 0.7  # a tie does not beat the floor either
    assert not verdict.still_improving and verdict.causes == ()
    # Perfect scores on easy data: a tie at 1.0 has no cause to name.
    perfect = table.assign(**{config.VAL_MACRO_F1: 1.0})
    assert analysis.floor_verdict(run, perfect, _floor(1.0, train_size=500)) is None


# --- what the report draws, as data ------------------------------------------------------

#: Flow style, as JSON: a scan of the YAML text's lines for "key: loguniform" finds nothing here.
FLOW_SPACE = json.dumps(
    {
        "search": {
            "head.dropout": {"uniform": [0.0, 0.5]},
            "head.layers": {"choice": [0, 1, 2]},
            "head.width": {"choice": [128, 384]},
            "train.learning_rate": {"loguniform": [1e-5, 1e-3]},
        }
    }
)
FLOW_SEARCHED = ["head.dropout", "head.layers", "head.width", "train.learning_rate"]


def test_axes_follow_the_space_even_in_flow_style(tmp_path):
    run_dir = tmp_path / "trials" / "flow-20260101-000000"
    write_manifest(run_dir, searched=FLOW_SEARCHED, space_text=FLOW_SPACE)
    write_trial(
        run_dir,
        "a",
        {"head.layers": 1, "head.width": 384, "head.dropout": 0.1, "train.learning_rate": 1e-4},
        [0.5],
    )
    write_trial(
        run_dir,
        "b",
        {"head.layers": 2, "head.width": 128, "head.dropout": 0.2, "train.learning_rate": 1e-5},
        [0.6],
    )
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    axes = result.axes
    assert {k: a.scale for k, a in axes.items()} == {
        "head.dropout": "linear",
        "head.layers": "category",
        "head.width": "category",
        "train.learning_rate": "log",
    }
    # Every choice of the space, in its order, even those no trial drew.
    assert axes["head.layers"].categories == ("0", "1", "2")
    assert axes["head.width"].categories == ("128", "384")
    values = result.param_values.set_index("trial_id")
    assert values.loc["b", "head.layers"] == "2" and values.loc["a", "head.width"] == "384"
    assert values.loc["a", "train.learning_rate"] == pytest.approx(1e-4)


def test_param_values_label_choices_whatever_pandas_made_of_them():
    axes = analysis.param_axes(
        {
            "head.layers": Param("choice", (0, 1, 2)),
            "flag": Param("choice", (True, False)),
            "train.learning_rate": Param("choice", (1e-5, 3e-3)),
            "head.dropout": Param("uniform", (0.0, 0.5)),
        }
    )
    # A trial without a value turns the column of ints into floats (1.0, NaN).
    table = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "head.layers": [1.0, np.nan],
            "flag": [False, True],
            "train.learning_rate": [0.003, 1e-05],
            "head.dropout": [0.25, 0.5],
        }
    )
    values = analysis.param_values(table, axes)
    assert values["head.layers"].tolist() == ["1", ""]
    assert values["flag"].tolist() == ["false", "true"]
    assert values["train.learning_rate"].tolist() == ["0.003", "1e-05"]
    assert values["head.dropout"].tolist() == [0.25, 0.5]


def test_board_ranks_the_floor_among_the_trials(small_run):
    table = analysis.leaderboard(runs.open_run(small_run))
    board = analysis.board_with_floor(table, SEARCHED, _floor(0.7))
    # Leaderboard order (equal fidelity): aaaa, eeee, bbbb, cccc, dddd; the floor goes before
    # the first trial below it.
    assert board.table["trial_id"].tolist() == [
        "aaaa",
        "eeee",
        "TF-IDF floor",
        "bbbb",
        "cccc",
        "dddd",
    ]
    assert board.floor_row == 2
    assert board.table.loc[2, config.VAL_MACRO_F1] == 0.7
    assert list(board.table.columns) == analysis.BOARD_COLUMNS + SEARCHED
    # A trial that ties with the floor does not push it down, nor does one below it.
    assert analysis.board_with_floor(table, SEARCHED, _floor(0.6)).floor_row == 4
    assert analysis.board_with_floor(table, SEARCHED, _floor(0.95)).floor_row == 0
    assert analysis.board_with_floor(table, SEARCHED, None).floor_row is None


def test_compute_time_sums_the_trials_and_spans_the_search(small_run):
    result = analysis.analyze(small_run, with_data=False, seeds=1, bootstraps=1)
    # Last time_total_s per trial: aaaa 30, bbbb 10, cccc 20, dddd 10, eeee 20.
    assert result.compute.trials_s == pytest.approx(90)
    # aaaa and dddd start at 0, eeee (start 20) reports last at 40.
    assert result.compute.wall_s == pytest.approx(40)
    assert result.whole_epochs
    curves = result.curves.assign(**{config.EPOCH: result.curves[config.EPOCH] * 0.5})
    assert not analysis.whole_epochs(curves)


def _stats_manifest(run_dir: Path, **stats) -> runs.Manifest:
    manifest = write_manifest(run_dir)
    manifest["data"]["stats"].update(stats)
    manifest["data"]["config"]["train_size"] = 10
    return runs.Manifest.from_dict(manifest)


def test_data_summary_says_how_many_training_rows_were_used(tmp_path):
    recorded = analysis.data_summary(
        _stats_manifest(tmp_path / "a", available_sizes={"train": 40, "validation": 4, "test": 4})
    )
    assert (recorded.train_used, recorded.train_available) == (10, 40)
    assert recorded.splits["available"].tolist() == [40, 4, 4]
    facts = recorded.facts.set_index("item")["value"]
    assert facts["training rows used"] == "10 of 40 (25.0%)"
    assert recorded.class_shares.loc["train", "negative"] == pytest.approx(0.5)
    # A run made before data.py recorded it: every cleaned row is in one split.
    derived = analysis.data_summary(_stats_manifest(tmp_path / "b", rows_read=30))
    assert derived.train_available == 30 - 4 - 4 - 4
    unknown = analysis.data_summary(_stats_manifest(tmp_path / "c"))
    assert unknown.train_available is None
    assert "not recorded" in unknown.facts.set_index("item")["value"]["training rows used"]


def test_manifest_summary_is_flat_plain_text(small_run):
    manifest = runs.open_run(small_run).manifest
    frame = analysis.manifest_summary(manifest, params=analysis.search_params(manifest))
    items = frame.set_index("item")["value"]
    assert items["budget.max_epochs"] == "3"
    assert items["versions.python"] == "3.11"
    assert items["host.name"] == "test" and items["device.cpu"] == "x86_64"
    assert items["space.fixed.train.max_length"] == "64"
    assert items["space.search.head.pooling"] == "choice [cls, mean]"
    assert items["data.label_names"] == "negative, neutral, positive"
    assert items["address"] == "local"
    assert frame["item"].tolist()[:2] == ["run", "started"]
    # No nested JSON, no Python reprs, and the data's statistics are the data panel's.
    assert not frame["value"].str.contains(r"[{}']|None|True|False").any()
    assert not frame["item"].str.startswith(("data.stats", "space.text")).any()


COND_SPACE = """\
search:
  head.layers: {choice: [0, 1]}
  head.width: {choice: [8, 64], when: {head.layers: [1]}}
  head.dropout: {uniform: [0.0, 0.5]}
"""


def test_conditional_parameters_are_blank_where_inactive_and_measured_where_active(tmp_path):
    """Among the trials with a hidden layer, width decides the score; without one, width is
    not drawn. Dropout does nothing."""
    run_dir = tmp_path / "trials" / "cond-20260101-000000"
    searched = ["head.dropout", "head.layers", "head.width"]
    write_manifest(run_dir, searched=searched, space_text=COND_SPACE)
    rng = np.random.default_rng(0)
    for i in range(24):
        layers, width = i % 2, (8, 64)[(i // 2) % 2]
        trial = {"head.layers": layers, "head.dropout": float(rng.uniform(0, 0.5))}
        if layers:
            trial["head.width"] = width
        score = 0.6 + (0.2 if layers and width == 64 else 0.0) + float(rng.normal(0, 0.005))
        write_trial(run_dir, f"t{i:03d}", trial, [score, score + 0.01])
    run = runs.open_run(run_dir)
    board = analysis.leaderboard(run).set_index("trial_id")
    assert board.loc["t000", "head.width"] != board.loc["t000", "head.width"]  # NaN
    assert board.loc["t001", "head.width"] == 8 and board.loc["t003", "head.width"] == 64
    frame = _importance(run, seeds=2, bootstraps=4).set_index("param")
    assert frame.loc["head.width", "n_trials"] == 12
    assert frame.loc["head.layers", "n_trials"] == 24
    assert frame.loc["head.dropout", "n_trials"] == 24
    # Among the trials with a layer, width explains the score; dropout nothing anywhere.
    assert frame.loc["head.width", "importance_mean"] > 0.7
    assert frame.loc["head.width", "low"] > frame.loc["head.dropout", "high"]
    assert not frame.loc["head.width", "below_noise"] and frame.loc["head.width", "note"] == ""
    # Layers alone and dropout do nothing: the permutation baseline says so.
    assert frame.loc["head.dropout", "below_noise"]


# --- confirmation over seeds -------------------------------------------------------------------


def _confirm_run(tmp_path: Path, **budget) -> Path:
    """Search trials a (0.80) and b (0.78) trained the full 3 epochs, c (0.79 at epoch 1) was
    stopped; the confirmation retrains a and b with seed 1 (a drops to 0.70, b holds 0.79)."""
    run_dir = tmp_path / "trials" / "confirm-20260101-000000"
    full = {"trials": 12, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2}
    write_manifest(run_dir, budget={**full, "confirm_top": 2, "confirm_seeds": 2, **budget})
    write_trial(run_dir, "a", params(0.1), [0.6, 0.8, 0.75], checkpoint=True)
    write_trial(run_dir, "b", params(0.2), [0.6, 0.7, 0.78], checkpoint=True)
    write_trial(run_dir, "c", params(0.3), [0.79], checkpoint=True)
    confirm = runs.confirm_dir(run_dir)
    for source, scores in (("a", [0.6, 0.7, 0.65]), ("b", [0.7, 0.79, 0.7])):
        trial = {**params(0.1 if source == "a" else 0.2), "train.seed": 1, "confirms": source}
        name = runs.confirm_trial_name(source, 1)
        write_trial(confirm, name, trial, scores, checkpoint=True)
    return run_dir


def test_the_confirmation_plan_takes_the_first_k_and_retrains_only_missing_seeds(tmp_path):
    run = runs.open_run(_confirm_run(tmp_path, confirm_top=3, confirm_seeds=3))
    plan = analysis.confirmation_plan(run)
    assert [(i.rank, i.trial_id) for i in plan] == [(1, "a"), (2, "b"), (3, "c")]
    assert plan[0].seeds == (0, 1, 2) and plan[0].missing == (1, 2)
    # A trial ASHA stopped did not train the full budget: every seed is retrained.
    assert plan[2].searched_seed is None and plan[2].missing == (0, 1, 2)
    off = runs.open_run(_confirm_run(tmp_path / "off", confirm_seeds=0))
    assert analysis.confirmation_plan(off) == []


def test_the_confirmation_scores_each_seed_and_the_best_mean_wins(tmp_path):
    run = runs.open_run(_confirm_run(tmp_path))
    # The confirmation trials stay out of the search's leaderboard.
    assert analysis.leaderboard(run)["trial_id"].tolist() == ["a", "b", "c"]
    confirmed = analysis.confirmation(run)
    table = confirmed.table
    assert table.columns.tolist()[:6] == [
        "rank", "trial_id", "seed", config.VAL_MACRO_F1, "mean", "std"
    ]  # fmt: skip
    assert table[["trial_id", "seed"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0], ["b", 1]]
    assert table[config.VAL_MACRO_F1].tolist() == pytest.approx([0.8, 0.7, 0.78, 0.79])
    assert table["confirm_trial"].tolist() == ["", "a-seed1", "", "b-seed1"]
    means = table.groupby("trial_id")["mean"].first()
    assert means.to_dict() == pytest.approx({"a": 0.75, "b": 0.785})
    assert table.loc[0, "std"] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    # The leaderboard's first trial loses on the mean over seeds.
    assert confirmed.winner == "b"
    assert confirmed.configs["trial_id"].tolist() == ["b", "a"]
    assert confirmed.winner_seed()["seed"] == 1  # b's better seed is the one exported
    assert Path(confirmed.winner_seed()["checkpoint"]).parent.name == "b-seed1"


def test_an_unfinished_confirmation_trial_does_not_count(tmp_path):
    run_dir = _confirm_run(tmp_path)
    write_trial(
        runs.confirm_dir(run_dir),
        runs.confirm_trial_name("a", 2),
        {**params(0.1), "train.seed": 2, "confirms": "a"},
        [0.9],
        done=False,
    )
    confirmed = analysis.confirmation(runs.open_run(run_dir))
    assert (confirmed.table["seed"] == 2).sum() == 0
    assert not runs.is_finished(run_dir)  # no status yet: the confirmation is still going


def test_without_confirmation_trials_there_is_no_confirmation(tmp_path):
    run_dir = _confirm_run(tmp_path)
    import shutil

    shutil.rmtree(runs.confirm_dir(run_dir))
    assert analysis.confirmation(runs.open_run(run_dir)) is None


def test_confirm_csv_is_written_with_the_tables(tmp_path):
    result = analysis.analyze(_confirm_run(tmp_path), with_data=False, seeds=1, bootstraps=1)
    written = analysis.write_tables(result, tmp_path / "out")
    csv = pd.read_csv(written["confirm"])
    assert len(csv) == 4 and set(csv["trial_id"]) == {"a", "b"}


# --- accuracy against latency ----------------------------------------------------------------


def test_pareto_front_keeps_the_points_nothing_dominates():
    scores = [0.70, 0.65, 0.60, 0.72, 0.60, np.nan, 0.72]
    costs = [10.0, 4.0, 5.0, 20.0, 4.0, 1.0, 20.0]
    front = analysis.pareto_front(scores, costs)
    # 0.65@4 beats 0.60@5 and 0.60@4; 0.72@20 is on it twice (equal points); NaN never.
    assert front.tolist() == [True, True, False, True, False, False, True]
    assert analysis.pareto_front([], []).tolist() == []


def _latency(p95: float) -> dict:
    return {
        config.LATENCY_P95_MS: p95,
        config.LATENCY_P50_MS: p95 / 2,
        config.THROUGHPUT_B32: 1000 / p95,
        config.MODEL_MB: p95 * 3,
    }


@pytest.fixture
def latency_run(tmp_path) -> Path:
    run_dir = tmp_path / "trials" / "latency-20260101-000000"
    write_manifest(
        run_dir,
        objective={"metrics": [config.VAL_MACRO_F1, config.LATENCY_P95_MS], "constraints": {}},
    )
    trials = [
        ("deep", [0.60, 0.70, 0.74], 12.0),
        ("mid", [0.62, 0.68, 0.70], 6.0),
        ("slow-worse", [0.55, 0.60, 0.65], 14.0),
        ("shallow", [0.58], 3.0),  # stopped by ASHA after one epoch: still on the front
    ]
    for trial_id, scores, p95 in trials:
        write_trial(run_dir, trial_id, params(), scores, checkpoint=True, metrics=_latency(p95))
    write_trial(run_dir, "no-latency", params(), [0.9])
    return run_dir


def test_pareto_table_marks_the_front_and_the_budget(latency_run):
    front = analysis.pareto(runs.open_run(latency_run), budget_ms=8.0)
    table = front.table.set_index("trial_id")
    assert list(front.table.columns[: len(analysis.PARETO_COLUMNS)]) == analysis.PARETO_COLUMNS
    assert "no-latency" not in table.index
    assert table["on_front"].to_dict() == {
        "deep": True,
        "mid": True,
        "shallow": True,
        "slow-worse": False,
    }
    assert table.loc["deep", config.VAL_MACRO_F1] == pytest.approx(0.74)  # the leaderboard's score
    assert table.loc["mid", config.LATENCY_P50_MS] == 3.0
    assert not table.loc["deep", "meets_budget"] and table.loc["mid", "meets_budget"]
    assert front.chosen == "mid"  # best F1 on the front within 8 ms
    assert analysis.pareto(runs.open_run(latency_run), budget_ms=2.0).chosen is None
    # Without a budget (the manifest has none): the best trial on the front.
    assert analysis.pareto(runs.open_run(latency_run)).chosen == "deep"


def test_pareto_is_none_when_no_trial_measured_latency(small_run):
    assert analysis.pareto(runs.open_run(small_run)) is None


def test_write_tables_writes_pareto_csv(latency_run, tmp_path):
    result = analysis.analyze(latency_run, with_data=False, seeds=1, bootstraps=1)
    written = analysis.write_tables(result, tmp_path / "out")
    table = pd.read_csv(written["pareto"])
    assert set(table["trial_id"]) == {"deep", "mid", "shallow", "slow-worse"}
    assert table["on_front"].sum() == 3
