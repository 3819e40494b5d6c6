"""The benchmark machinery: curves from synthetic trial logs, the method registry, the peer and
the throughput measurements on the tiny model, and the GPU check's CPU smoke path."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentune import bench, config, search, space
from sentune.bench import (
    METHODS,
    PEER,
    BenchOptions,
    MethodRun,
    anytime_curve,
    compute_results,
    curve_bands,
    time_to_target,
    trial_overheads,
)
from sentune.config import DataConfig, TrainConfig
from sentune.data import prepare

F1 = config.OBJECTIVE
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
    summary = results.summary.set_index("method")
    assert summary.loc["tpe-asha", "speedup_vs_peer_trial_s"] == pytest.approx(11.0 / 10.0)
    assert summary.loc["tpe-asha", "speedup_vs_peer_wall_s"] == pytest.approx(10.0 / 6.0)
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
    text = "\n".join(bench.headlines(with_eval))
    assert "1.50x" in text and "1.10x" in text
    assert f"Ray costs about {overhead - 0.1:.1f} s" in text
    # Without the peer, and a target nobody reaches.
    alone = compute_results(runs[:1], pd.DataFrame(), target=0.9, budget_s=60.0)
    assert alone.summary.loc[0, "reached"] == 0
    assert math.isinf(alone.summary.loc[0, "ttt_trial_s_median"])


def test_registry_has_every_strategy_and_the_peer():
    assert set(METHODS) == set(search.STRATEGIES) | {PEER}
    for name, method in METHODS.items():
        assert method.strategy == (None if name == PEER else name)


def test_every_method_runs_through_the_factory(monkeypatch, tmp_path, tiny_model_dir, tiny_csv):
    calls = []

    def fake_tune(spec, strategy, *, seed, storage, options):
        calls.append((strategy, seed, spec.budget.time_budget_s, spec.budget.seed))
        return MethodRun(strategy, seed, SYNTHETIC, started=100.0)

    def fake_peer(spec, data, model_path, *, seed, budget_s, precision, threads):
        calls.append((PEER, seed, budget_s, spec.budget.seed))
        return MethodRun(PEER, seed, SYNTHETIC, started=100.0)

    monkeypatch.setattr(bench, "run_tune", fake_tune)
    monkeypatch.setattr(bench, "run_peer", fake_peer)
    options = BenchOptions(seeds=(3,), budget_s=30.0, isolate=False)
    space_file = _tiny_space(tmp_path, tiny_model_dir, tiny_csv)
    spec = bench.load_spec(space_file, None, seed=3, options=options)
    assert spec.budget.time_budget_s == 30.0 and spec.budget.trials > 1000
    for name in METHODS:
        run = bench.run_method(
            name, spec, seed=3, data=None, model_path="", storage=tmp_path, options=options
        )
        assert run.method == name
    assert calls == [(name, 3, 30.0, 3) for name in METHODS]


def test_unknown_method_is_a_user_error():
    from sentune.errors import SpaceError

    with pytest.raises(SpaceError, match="unknown bench method 'grid'"):
        bench.run_benchmark("smoke", options=BenchOptions(methods=("grid",)))


def _tiny_space(folder: Path, model_dir: Path, csv: Path) -> Path:
    text = {
        "model": str(model_dir),
        "data": {"dataset": str(csv)},
        "budget": {"max_epochs": 2, "grace_period": 1, "concurrency": 1},
        "fixed": {"train.max_length": 32, "train.effective_batch_size": 32},
        "search": {
            "train.learning_rate": {"loguniform": [1e-3, 5e-3]},
            "train.batch_size": {"choice": [16, 32]},
            "head.dropout": {"uniform": [0.0, 0.3]},
            "head.layers": {"choice": [0, 1]},
        },
    }
    path = folder / "bench-tiny.yaml"
    path.write_text(json.dumps(text))
    return path


@pytest.fixture(scope="module")
def tiny_setup(tiny_model_dir, tiny_csv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    spec = space.load(_tiny_space(folder, tiny_model_dir, tiny_csv))
    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=folder)
    return spec, data, str(tiny_model_dir)


def test_peer_maps_the_space_onto_training_arguments(tiny_setup):
    import optuna

    spec, _, _ = tiny_setup
    assert bench.peer_unmapped(spec) == []
    trial = optuna.create_study().ask()
    values = bench.peer_values(spec, trial)
    # Suggesting twice in one trial gives the same values (model_init and hp_space agree).
    assert bench.peer_values(spec, trial) == values
    args = bench.peer_training_args(values)
    assert args["learning_rate"] == values["train.learning_rate"]
    assert args["per_device_train_batch_size"] == values["train.batch_size"]
    assert args["gradient_accumulation_steps"] == 32 // values["train.batch_size"]
    assert args["warmup_steps"] == pytest.approx(TrainConfig().warmup_ratio)
    searched_max_length = space.load("data")
    assert bench.peer_unmapped(searched_max_length) == ["train.max_length", "train.truncation"]


def test_peer_runs_on_the_tiny_model(tiny_setup):
    spec, data, model_path = tiny_setup
    run = bench.run_peer(
        spec, data, model_path, seed=0, budget_s=120.0, precision="fp32", threads=1, n_trials=2
    )
    assert run.method == PEER and run.trials == 2
    reports = run.reports
    # Two epochs each, unless the median pruner stops the second trial after one.
    assert 3 <= len(reports) <= 4
    assert set(reports["trial_id"]) == {"peer_00000", "peer_00001"}
    assert reports[F1].between(0, 1).all()
    assert (reports["timestamp"] >= run.started).all()
    assert run.peak_rss_mb > 0
    curve = anytime_curve(reports, started=run.started)
    assert curve["trial_s"].is_monotonic_increasing


def test_peer_stops_at_the_budget(tiny_setup):
    spec, data, model_path = tiny_setup
    run = bench.run_peer(spec, data, model_path, seed=1, budget_s=1.0, precision="fp32", threads=1)
    assert run.trials == 1
    assert (run.reports["timestamp"] - run.started <= 1.0).all()


def test_throughput_measurements_on_the_tiny_model(tiny_setup, tmp_path):
    spec, data, model_path = tiny_setup
    options = BenchOptions(precision="fp32", isolate=False)
    table = bench.measure_throughput(spec, data, model_path, options=options)
    assert table["loop"].tolist() == ["HF Trainer", "sentune trial"]
    assert (table["samples_per_s"] > 0).all() and (table["eval_s"] > 0).all()
    trial = table.set_index("loop").loc["sentune trial"]
    assert trial["overhead_s"] == pytest.approx(
        trial["wall_s"] - trial["train_s"] - trial["evaluations"] * trial["eval_s"]
    )
    assert trial["threads"] == 1


@pytest.mark.slow
def test_benchmark_end_to_end_writes_its_files(ray_session, tiny_setup, tmp_path):
    spec, _, _ = tiny_setup
    options = BenchOptions(
        methods=("tpe-asha", PEER),
        seeds=(0,),
        budget_s=15.0,
        out_root=tmp_path / "analysis",
        storage=tmp_path / "trials",
        precision="fp32",
        cache_dir=tmp_path / "cache",
        throughput=False,
        isolate=False,
    )
    out = bench.run_benchmark(spec.path, options=options)
    for name in (
        "results.csv",
        "curves.csv",
        "bands.csv",
        "summary.md",
        "bench.html",
        "bench.json",
    ):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv")
    assert results["method"].tolist() == ["tpe-asha", PEER]
    assert (results["trials"] >= 1).all()
    # How many evaluations fit in the budget depends on the machine's load; the curves hold
    # exactly the evaluations the runs report.
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == results["evaluations"].sum()
    assert Path(results.loc[0, "run_dir"]).is_dir()
    manifest = json.loads((out / "bench.json").read_text())
    assert manifest["versions"]["ray"] and manifest["options"]["seeds"] == [0]
    assert manifest["peer_unmapped"] == []
    assert "Cumulative trial-seconds" in (out / "summary.md").read_text()


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_cpu_smoke(tmp_path, capsys):
    gpu_check = _load_gpu_check()
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--cpu-smoke", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["runs"]
    assert [r["precision"] for r in rows] == ["fp32"]
    assert rows[0]["samples_per_s"] > 0 and rows[0]["mfu"] is None
    assert "unknown" in capsys.readouterr().out


def test_gpu_check_needs_cuda_without_cpu_smoke(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    assert _load_gpu_check().main([]) == 2
    assert "no CUDA" in capsys.readouterr().err


def test_gpu_check_peak_flops_by_device_name():
    gpu_check = _load_gpu_check()
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert gpu_check.peak_tflops("NVIDIA H200") == 989
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert gpu_check.peak_tflops("Tesla T4") is None
