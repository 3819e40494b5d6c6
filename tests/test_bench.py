"""The benchmark machinery: the method registry and the runner, the peer and the throughput
measurements on the tiny model, the whole benchmark under Ray, and the GPU check's CPU smoke
path (the numbers from synthetic logs are in test_bench_curves.py)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from sentune import bench, config, space
from sentune.bench import METHODS, PEER, BenchOptions, MethodRun, anytime_curve, runner
from sentune.bench.methods import REPORT_COLUMNS
from sentune.bench.throughput import Measurement
from sentune.config import DataConfig, HeadConfig, TrainConfig
from sentune.data import prepare
from sentune.errors import ResourceError
from sentune.search import strategies

F1 = config.VAL_MACRO_F1
ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")


def test_registry_has_every_strategy_and_the_peer():
    assert set(METHODS) == set(strategies.STRATEGIES) | {PEER}
    for name, method in METHODS.items():
        assert method.strategy == (None if name == PEER else name)


def test_every_method_runs_through_the_factory(monkeypatch, tmp_path, tiny_model_dir, tiny_csv):
    calls = []
    empty = pd.DataFrame(columns=REPORT_COLUMNS)

    def fake_tune(spec, strategy, *, seed, storage, options):
        calls.append((strategy, seed, spec.budget.time_budget_s, spec.budget.seed, options.device))
        return MethodRun(strategy, seed, empty, started=100.0)

    def fake_peer(spec, data, model_path, *, seed, budget_s, precision, device, threads):
        calls.append((PEER, seed, budget_s, spec.budget.seed, device))
        return MethodRun(PEER, seed, empty, started=100.0)

    monkeypatch.setattr(runner, "run_tune", fake_tune)
    monkeypatch.setattr(runner, "run_peer", fake_peer)
    options = BenchOptions(seeds=(3,), budget_s=30.0, device="cpu", isolate=False)
    space_file = _tiny_space(tmp_path, tiny_model_dir, tiny_csv)
    spec = bench.load_spec(space_file, None, seed=3, options=options)
    assert spec.budget.time_budget_s == 30.0 and spec.budget.trials > 1000
    assert spec.budget.confirm_seeds == 0  # no retraining outside the time budget
    for name in METHODS:
        run = bench.run_method(
            name, spec, seed=3, data=None, model_path="", storage=tmp_path, options=options
        )
        assert run.method == name
    # The device reaches every method, the peer included.
    assert calls == [(name, 3, 30.0, 3, "cpu") for name in METHODS]


def test_unknown_method_is_a_user_error():
    from sentune.errors import SpaceError

    with pytest.raises(SpaceError, match="unknown bench method 'grid'"):
        bench.run_benchmark("smoke", options=BenchOptions(methods=("grid",)))


@no_cuda
def test_a_device_this_host_lacks_fails_before_any_search(tmp_path):
    options = BenchOptions(device="cuda", out_root=tmp_path / "out", storage=tmp_path / "trials")
    with pytest.raises(ResourceError, match="--device cuda"):
        bench.run_benchmark("smoke", options=options)
    assert not (tmp_path / "out").exists() and not (tmp_path / "trials").exists()


def test_only_search_imports_ray():
    for path in sorted((ROOT / "src/sentune/bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "ray" or n.startswith("ray.") for n in names), path.name


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
    args = bench.training_fields(values)
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


@no_cuda
def test_the_peer_and_the_throughput_run_on_the_device_asked_for(tiny_setup):
    # Before any training: a device the host lacks is refused, not silently replaced by the CPU.
    spec, data, model_path = tiny_setup
    with pytest.raises(ResourceError, match="--device cuda"):
        bench.run_peer(spec, data, model_path, seed=0, budget_s=5.0, device="cuda", n_trials=1)
    options = BenchOptions(precision="fp32", device="cuda", isolate=False)
    with pytest.raises(ResourceError, match="--device cuda"):
        bench.measure_throughput(spec, data, model_path, options=options)
    measurement = Measurement(
        train=TrainConfig(max_length=32),
        head=HeadConfig(),
        epochs=1,
        precision="fp32",
        device="cuda",
        threads=1,
    )
    for measure in (bench.measure_trainer, bench.measure_trial_loop):
        with pytest.raises(ResourceError, match="--device cuda"):
            measure(data, model_path, measurement)


def test_the_trainer_setup_follows_the_configuration_and_the_device(tiny_setup, tmp_path):
    spec, data, model_path = tiny_setup
    values = {**bench.peer_values(spec), "train.batch_size": 16, "head.layers": 1}
    trainer = bench.build_trainer(
        data,
        model_path,
        values,
        output_dir=str(tmp_path),
        epochs=2,
        precision="fp32",
        device="cpu",
    )
    assert trainer.args.use_cpu and trainer.args.device.type == "cpu"
    assert trainer.args.per_device_train_batch_size == 16
    assert trainer.args.per_device_eval_batch_size == 32
    assert trainer.args.gradient_accumulation_steps == 2
    assert trainer.args.num_train_epochs == 2
    assert len(trainer.train_dataset) == len(data.train)
    assert len(trainer.eval_dataset) == len(data.validation)
    assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) <= 32
    assert trainer.model.config.head_layers == 1


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
    # `budget.cpus_per_trial: auto`: a trial on this host's CPUs trains on all of them.
    assert trial["threads"] == (os.cpu_count() or 1)


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


def test_gpu_check_tiny_on_the_cpu_writes_every_figure(tmp_path, capsys):
    """Both parts of `make gpu-check` on a tiny model: the JSON a GPU session will fill."""
    gpu_check = _load_gpu_check()
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    trials = {(r["precision"], r["batch_size"], r["mode"]): r for r in payload["trial"]}
    assert set(trials) == {("fp32", 16, m) for m in ("eager", "compiled", "cudagraphs")}
    assert "minutes" in trials["fp32", 16, "compiled"]["skipped"]
    assert "minutes" in trials["fp32", 16, "cudagraphs"]["skipped"]
    eager = trials["fp32", 16, "eager"]
    for key in ("samples_per_s", "tokens_per_s", "model_tflops", "wall_s", "val_macro_f1"):
        assert isinstance(eager[key], float) and eager[key] >= 0, key
    assert eager["mfu"] is None  # no peak throughput known for a CPU
    packed = payload["search"]["packed"]
    assert packed["trials"] == 2 and packed["concurrency"] == 2
    for key in ("wall_s", "first_step_s", "training_window_s", "samples_per_s_total"):
        assert isinstance(packed[key], float) and packed[key] > 0, key
    assert packed["first_step_s"] < packed["wall_s"]
    # Where the time before the first step went, from the command's timed output.
    assert 0 < packed["data_ready_s"] < packed["first_trial_started_s"]
    assert packed["first_trial_started_s"] < packed["first_step_seen_s"]
    assert packed["first_trial_started_s"] < packed["first_step_s"]
    assert packed["trial_start_to_first_step_s"] > 0
    assert packed["gpu_util_mean"] is None and packed["gpu_util_samples"] == 0
    assert "unknown" in capsys.readouterr().out


def test_gpu_check_needs_cuda_unless_told_cpu(capsys):
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
