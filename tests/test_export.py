"""Export the winner of the shared tiny search and check every artifact it leaves."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sentune import analysis, cli, config, export, runs
from sentune.data.batching import pad_batch
from sentune.errors import DataError, ExportError, RunError
from sentune.runs import MANIFEST
from sentune.serve import predict
from sentune.train.model import load_model

pytestmark = pytest.mark.slow

#: Small timings: the test checks the fields, not the numbers.
_FAST = dict(parity_texts=64, latency_runs=5, throughput_batches=2, warmup=1, threads=1)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> export.ExportResult:
    root = tmp_path_factory.mktemp("analysis")
    options = export.ExportOptions(
        formats=("hf", "onnx", "int8", "pt2"), cache_dir=root / "cache", **_FAST
    )
    return export.export_winner(tiny_run, analysis_root=root, options=options)


def _prepared_data(tiny_run, cache_dir: Path):
    return runs.load_data(runs.read_manifest(tiny_run), cache_dir=cache_dir)


def test_exports_the_leaderboards_best_checkpoint(tiny_run, exported):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    assert exported.winner.trial_id == table.iloc[0]["trial_id"]
    assert exported.winner.checkpoint == Path(table.iloc[0]["checkpoint"])
    assert exported.path.name == "export" and exported.path.parent.name == tiny_run.name
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "model.onnx",
        "model.int8.onnx",
        "model.pt2",
        "metrics.json",
        "benchmark.json",
        "README.md",
        "export.json",
    ):
        assert (exported.path / name).is_file(), name
    assert not [p for p in exported.path.parent.iterdir() if p.name.startswith(".")]
    recorded = json.loads((exported.path / "export.json").read_text())
    assert recorded["truncation"] == "head" == exported.winner.truncation


def test_the_winner_carries_its_truncation_into_export_json(tmp_path):
    from types import SimpleNamespace

    from test_analysis import params, write_manifest, write_trial

    run_dir = tmp_path / "trials" / "synthetic-20260101-000000"
    write_manifest(run_dir)
    trial = {**params(0.1), "train.truncation": "head_tail"}
    write_trial(run_dir, "aaaa", trial, [0.5, 0.8], checkpoint=True)
    run = runs.open_run(run_dir)
    winner = export.select_winner(run)
    assert (winner.truncation, winner.max_length) == ("head_tail", 64)
    data = SimpleNamespace(label_names=["negative", "neutral", "positive"], pad_id=0)
    recorded = export._export_manifest(run, winner, data, ("onnx",))
    assert recorded["truncation"] == "head_tail" and recorded["max_length"] == 64


def test_export_holds_no_local_path_and_no_training_state(tiny_run, exported, tmp_path):
    import tempfile

    assert not (exported.path / runs.TRAINING_STATE_FILE).exists()
    assert not (exported.path / runs.STATE_FILE).exists()
    # The tiny run's paths (model, data, run, checkpoint) all live under the temp folder.
    roots = {tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve()), "/work"}
    assert str(tiny_run).startswith(tempfile.gettempdir())
    for path in exported.path.iterdir():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # weights and ONNX graphs
        for root in roots:
            assert root not in text, (path.name, root)
    manifest = json.loads((exported.path / "export.json").read_text())
    assert manifest["checkpoint"] == exported.winner.checkpoint.relative_to(tiny_run).as_posix()
    encoder = json.loads((exported.path / "config.json").read_text())["encoder"]
    assert encoder["id2label"] == {str(i): n for i, n in enumerate(exported.metrics["labels"])}


def test_model_card_has_hub_metadata_recipe_and_intervals(tiny_run, exported):
    card = (exported.path / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    for key in ("license", "base_model", "tags", "model-index"):
        assert header[key], key
    assert header["library_name"] == "transformers"
    assert header["pipeline_tag"] == "text-classification"
    result = header["model-index"][0]["results"][0]
    f1 = result["metrics"][0]
    test = exported.metrics["formats"]["pytorch"]["test"]
    assert f1["type"] == "f1" and f1["value"] == pytest.approx(test["test_macro_f1"], abs=1e-4)
    assert result["dataset"]["split"] == "test"
    # The recipe: the searched values and the config.py defaults the trial ran with.
    assert "## Training recipe" in card
    assert "| `train.warmup_ratio` | 0.1 | default |" in card
    assert "| `train.learning_rate` |" in card and "| searched |" in card
    assert "| `train.batch_size` | `16` | fixed |" in card
    assert "| `precision` | `fp32` | search setting |" in card
    # Intervals hold their point estimate; the floor is scored on the same test split.
    metrics = exported.metrics
    for scores, intervals in (
        (test, metrics["test_intervals"]),
        (metrics["floor"], metrics["floor"]["intervals"]),
    ):
        for key in ("test_macro_f1", "test_accuracy"):
            assert intervals[key]["low"] <= scores[key] <= intervals[key]["high"], key
            assert intervals[key]["resamples"] == 1000 and intervals[key]["seed"] == 0
    assert metrics["floor"]["n"] == test["n"]
    assert "TF-IDF floor (trained on the same" in card and "[95 % CI]" in card
    bench = json.loads((exported.path / "benchmark.json").read_text())
    assert bench["cpu"] == runs.cpu_name() and bench["cpu"] in card


def test_hf_folder_round_trips_with_identical_logits(exported):
    from transformers import AutoModelForSequenceClassification

    import sentune.train.model  # noqa: F401 - registers the model type
    from sentune.export.models import AUTO_MAP

    original = sentune.train.model.load_model(exported.winner.checkpoint).eval()
    # The export's config carries the fitted temperature; the checkpoint's was 1.
    original.config.temperature = exported.metrics["calibration"]["temperature"]
    loaded = AutoModelForSequenceClassification.from_pretrained(exported.path).eval()
    assert loaded.config.id2label == original.config.id2label
    ids = torch.randint(5, 30, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.inference_mode():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=mask).logits,
            original(input_ids=ids, attention_mask=mask).logits,
        )
    config_json = json.loads((exported.path / "config.json").read_text())
    # What `trust_remote_code=True` loads where sentune is not installed.
    assert config_json["auto_map"] == AUTO_MAP


def test_onnx_parity_and_dynamic_axes(exported):
    import onnxruntime as ort

    parity = exported.metrics["parity"]
    assert 0 < parity["texts"] <= 64  # the tiny validation split has 60 texts
    assert parity["onnx"]["max_abs_diff"] <= export.PARITY_ATOL
    assert parity["onnx"]["label_agreement"] == 1.0
    assert parity["pt2"]["max_abs_diff"] <= export.PARITY_ATOL
    session = ort.InferenceSession(str(exported.path / "model.onnx"))
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert all(isinstance(d, str) for shape in shapes.values() for d in shape), shapes
    # A batch size and length the export never saw.
    ids = np.full((5, 9), 7, dtype=np.int64)
    assert session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape == (
        5,
        3,
    )


def test_metrics_score_every_format_on_the_test_split(exported):
    metrics = json.loads((exported.path / "metrics.json").read_text())
    assert set(metrics["formats"]) == {"pytorch", "onnx", "int8"}
    for name, splits in metrics["formats"].items():
        test = splits["test"]
        # One name per metric from the trial to the export: `test_macro_f1`, `val_macro_f1`.
        for key in ("test_macro_f1", "test_f1_weighted", "test_accuracy"):
            assert key in test, (name, key)
        for label in metrics["labels"]:
            assert f"test_precision/{label}" in test and f"test_recall/{label}" in test
        assert splits["validation"][config.VAL_MACRO_F1] >= 0
        matrix = np.array(test["confusion_matrix"])
        assert matrix.shape == (3, 3) and matrix.sum() == test["n"]
        gap = metrics["val_to_test_gap_macro_f1"][name]
        assert gap == pytest.approx(
            test["test_macro_f1"] - splits["validation"][config.VAL_MACRO_F1]
        )
    # ONNX predicts the same labels as PyTorch, so every score is the same.
    assert metrics["formats"]["onnx"]["test"] == metrics["formats"]["pytorch"]["test"]
    drop = metrics["int8_test_macro_f1_drop"]
    pytorch_f1 = metrics["formats"]["pytorch"]["test"]["test_macro_f1"]
    assert drop == pytest.approx(pytorch_f1 - metrics["formats"]["int8"]["test"]["test_macro_f1"])
    assert metrics["search_val_macro_f1"] == exported.winner.val_macro_f1
    card = (exported.path / "README.md").read_text()
    assert "held-out test split" in card and "from_pretrained" in card
    assert "trust_remote_code=True" in card and exported.winner.trial_id in card


def test_benchmark_has_every_format_and_its_settings(exported):
    bench = json.loads((exported.path / "benchmark.json").read_text())
    assert bench["threads"] == 1
    assert bench["tokenization"].startswith("excluded")
    assert set(bench["results"]) == {"pytorch", "onnx", "int8"}
    for row in bench["results"].values():
        for key in ("b1_p50_ms", "b1_p95_ms", "b32_texts_per_s", "b32_speedup_vs_pytorch"):
            assert row[key] > 0
        assert row["b1_p95_ms"] >= row["b1_p50_ms"]
    assert bench["results"]["pytorch"]["b32_speedup_vs_pytorch"] == 1.0
    assert "| int8 |" in export.format_benchmark(bench)


def test_predict_gives_pytorch_labels(tiny_run, exported, tmp_path, capsys):
    data = _prepared_data(tiny_run, tmp_path / "cache")
    texts = data.test.texts[:40]
    labels = exported.metrics["labels"]
    model = load_model(exported.winner.checkpoint).eval()
    ids = data.test.truncated(exported.winner.max_length)[:40]
    input_ids, mask = pad_batch(ids, pad_id=data.pad_id)
    with torch.inference_mode():
        logits = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask))
    expected = [labels[i] for i in logits.logits.argmax(-1).tolist()]

    result = predict.Predictor(exported.path).predict(texts, batch_size=8)
    assert result.labels == expected
    assert np.allclose(result.probabilities.sum(axis=1), 1.0)

    assert cli.main(["predict", str(exported.path), "--format", "table", *texts[:3]]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["text", "label", *(f"p_{n}" for n in labels)]
    assert [line.split()[-1 - len(labels)] for line in lines] == expected[:3]


def test_probabilities_are_calibrated_in_every_format(tiny_run, exported, tmp_path):
    calibration = exported.metrics["calibration"]
    temperature = calibration["temperature"]
    assert calibration["validation"]["ece_after"] <= calibration["validation"]["ece_before"]
    assert calibration["validation"]["nll_after"] <= calibration["validation"]["nll_before"]
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(calibration["test"])
    # The temperature lives in config.json and export.json records it.
    assert json.loads((exported.path / "config.json").read_text())["temperature"] == temperature
    assert json.loads((exported.path / "export.json").read_text())["temperature"] == temperature
    # `sentune predict` (ONNX and int8) returns softmax(trained logits / T).
    data = _prepared_data(tiny_run, tmp_path / "cache")
    model = load_model(exported.winner.checkpoint).eval()
    input_ids, mask = pad_batch(
        data.test.truncated(exported.winner.max_length)[:16], pad_id=data.pad_id
    )
    with torch.inference_mode():
        raw = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask))
    expected = torch.softmax(raw.logits / temperature, -1).numpy()
    for int8 in (False, True):
        probs = (
            predict.Predictor(exported.path, int8=int8).predict(data.test.texts[:16]).probabilities
        )
        assert np.abs(probs - expected).max() < (1e-4 if not int8 else 0.05)
    assert "## Calibration" in (exported.path / export.CARD_FILE).read_text()


def test_predict_cleans_text_as_training_did(tiny_run, exported, tmp_path):
    from sentune.data import splits
    from sentune.train.encoders import load_tokenizer

    raw = "great<br /><br />phone &amp; case"
    cleaned = splits._normalise_texts(pd.Series([raw])).iloc[0]  # the training path's cleaning
    assert cleaned == "great phone & case"
    tokenizer = load_tokenizer(runs.read_manifest(tiny_run).model_path)
    trained_ids = tokenizer([cleaned], add_special_tokens=True)["input_ids"][0]
    predictor = predict.Predictor(exported.path)
    assert predictor.tokenize([raw]) == [trained_ids]
    assert predictor.tokenize([raw]) != [tokenizer([raw])["input_ids"][0]]  # cleaning mattered


def test_predict_file_keeps_every_column(exported, tmp_path, capsys, monkeypatch):
    labels = exported.metrics["labels"]
    added = ["label", *(f"p_{n}" for n in labels)]
    source = tmp_path / "reviews.csv"
    source.write_text('id,body\n1,"great love, the best"\n2,awful terrible phone\n')
    assert cli.main(["predict", str(exported.path), "--file", str(source), "--column", "body"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))  # csv when piped
    assert list(rows[0]) == ["id", "body", *added]
    assert [(r["id"], r["body"]) for r in rows] == [
        ("1", "great love, the best"),
        ("2", "awful terrible phone"),
    ]
    assert all(r["label"] in labels for r in rows)
    assert sum(float(rows[0][f"p_{n}"]) for n in labels) == pytest.approx(1.0, abs=1e-5)
    assert cli.main(["predict", str(exported.path), "--int8", "--file", str(source)]) == 2
    assert "no column 'text' (columns: id, body); pass --column NAME" in capsys.readouterr().err

    tsv = tmp_path / "reviews.tsv"
    tsv.write_text("text\tstars\nlove it so much\t5\n")
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "awful day", "user": {"id": 7}}\n{"text": "best phone"}\n')
    for path, columns in ((tsv, ["text", "stars"]), (jsonl, ["text", "user"])):
        assert (
            cli.main(["predict", str(exported.path), "--file", str(path), "--format", "json"]) == 0
        )
        out = json.loads(capsys.readouterr().out)
        assert list(out[0]) == [*columns, *added], path
    assert out[0]["user"] == {"id": 7} and out[1]["user"] is None

    # stdin, sniffed as JSON Lines
    monkeypatch.setattr(sys, "stdin", io.StringIO(jsonl.read_text()))
    assert cli.main(["predict", str(exported.path), "--file", "-", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["text"] for r in rows] == ["awful day", "best phone"]


def test_predict_refuses_empty_texts_unless_asked(exported, tmp_path, capsys):
    source = tmp_path / "gaps.csv"
    source.write_text('text\ngreat phone\n""\n<br />\nawful\n')
    assert cli.main(["predict", str(exported.path), "--file", str(source)]) == 2
    err = capsys.readouterr().err
    assert "empty text in column 'text' at row 2, 3 (2 in all)" in err and "--skip-empty" in err
    assert cli.main(["predict", str(exported.path), "--file", str(source), "--skip-empty"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [bool(r["label"]) for r in rows] == [True, False, False, True]
    with pytest.raises(DataError, match="text 2 of 2 is empty"):
        predict.Predictor(exported.path).predict(["fine", "  "])
    assert cli.main(["predict", str(exported.path), "--file", str(tmp_path / "nope.csv")]) == 2
    assert f"no such file: {tmp_path / 'nope.csv'}" in capsys.readouterr().err
    (tmp_path / "a.xlsx").write_text("x")
    assert cli.main(["predict", str(exported.path), "--file", str(tmp_path / "a.xlsx")]) == 2
    assert "unsupported file type '.xlsx'" in capsys.readouterr().err


def test_predict_path_does_not_import_torch(exported):
    import subprocess

    code = (
        "import sys; from sentune import cli; "
        f"rc = cli.main(['predict', {str(exported.path)!r}, '--int8', 'love it']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_existing_export_needs_force(tiny_run, exported, capsys):
    rc = cli.main(["export", str(tiny_run), "--out", str(exported.path), "--formats", "hf"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert (exported.path / "model.onnx").is_file()  # untouched


def test_trial_option_exports_that_trial(tiny_run, tmp_path):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    second = table.iloc[1]["trial_id"]
    options = export.ExportOptions(
        trial=second, formats=("hf",), cache_dir=tmp_path / "cache", **_FAST
    )
    out = tmp_path / "second"
    result = export.export_winner(tiny_run, out_dir=out, options=options)
    assert result.winner.trial_id == second and result.winner.rank == 2
    assert set(result.metrics["formats"]) == {"pytorch"}
    assert json.loads((out / "export.json").read_text())["trial_id"] == second
    # --force replaces it whole.
    forced = export.ExportOptions(
        trial=table.iloc[0]["trial_id"],
        formats=("hf",),
        force=True,
        cache_dir=tmp_path / "cache",
        **_FAST,
    )
    export.export_winner(tiny_run, out_dir=out, options=forced)
    assert json.loads((out / "export.json").read_text())["trial_id"] == table.iloc[0]["trial_id"]
    with pytest.raises(RunError, match="no trial 'nope'"):
        export.export_winner(
            tiny_run, out_dir=tmp_path / "x", options=export.ExportOptions(trial="nope")
        )


def test_run_without_finished_trials_is_a_clear_error(tiny_run, tmp_path, capsys):
    empty = tmp_path / "trials" / "empty-run"
    empty.mkdir(parents=True)
    shutil.copy(tiny_run / MANIFEST, empty / MANIFEST)
    rc = cli.main(["export", str(empty), "--analysis", str(tmp_path / "analysis")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no trial has finished" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "analysis").exists() or not any((tmp_path / "analysis").rglob("*.json"))


def test_predict_on_a_folder_that_is_not_an_export(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), "hello there"]) == 2
    assert "not a sentune export" in capsys.readouterr().err
    with pytest.raises(ExportError, match="does not exist"):
        predict.Predictor(tmp_path / "missing")


def test_bad_formats_are_rejected_before_any_work(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="add onnx"):
        export.export_winner(tiny_run, options=export.ExportOptions(formats=("int8",)))
    with pytest.raises(ExportError, match="unknown"):
        export.export_winner(tiny_run, options=export.ExportOptions(formats=("gguf",)))


# --- export under a latency budget -------------------------------------------------------------


@pytest.fixture(scope="module")
def latency_run(ray_session, tiny_model_dir, tiny_csv, tmp_path_factory) -> Path:
    """The one real latency-aware search of the suite: two one-epoch trials of the tiny model
    that keep 1 or 2 encoder layers, a Pareto search of macro-F1 against p95 latency."""
    from sentune import search, space

    folder = tmp_path_factory.mktemp("latency-search")
    text = {
        "model": str(tiny_model_dir),
        "data": {"dataset": str(tiny_csv)},
        "budget": {"trials": 2, "max_epochs": 1, "concurrency": 1, "confirm_seeds": 0},
        "objectives": [config.VAL_MACRO_F1, config.LATENCY_P95_MS],
        "fixed": {"train.max_length": 32, "train.batch_size": 16, "train.learning_rate": 3e-3},
        "search": {"model.encoder_layers": {"choice": [1, 2]}},
    }
    path = folder / "tinylatency.yaml"
    path.write_text(json.dumps(text))
    options = search.SearchOptions(
        storage=folder / "trials", precision="fp32", cache_dir=folder / "cache", dashboard=False
    )
    return search.run(space.load(path), options=options)


def test_every_trial_reports_its_latency_and_lands_in_pareto_csv(latency_run, tmp_path):
    run = runs.open_run(latency_run)
    assert run.manifest.objective.multi and run.manifest.settings.measure_latency
    for history in run.histories.values():
        assert history[config.LATENCY_P95_MS].notna().all()
        assert (history[config.LATENCY_P95_MS] >= history[config.LATENCY_P50_MS]).all()
    result = analysis.analyze(latency_run, with_data=False, seeds=1, bootstraps=1)
    written = analysis.write_tables(result, tmp_path)
    table = pd.read_csv(written["pareto"])
    assert len(table) == 2 and table["on_front"].any()
    assert set(table["model.encoder_layers"]) <= {1, 2}


def test_export_under_a_budget_picks_the_front_and_remeasures(latency_run, tmp_path, capsys):
    budget = 1000.0  # far above the tiny model's latency: the best F1 on the front is chosen
    front = analysis.pareto(runs.open_run(latency_run), budget_ms=budget)
    options = export.ExportOptions(
        formats=("onnx",), cache_dir=tmp_path / "cache", max_latency_ms=budget, **_FAST
    )
    result = export.export_winner(latency_run, analysis_root=tmp_path, options=options)
    assert result.winner.trial_id == front.chosen
    met = result.benchmark["budget"]
    assert met["engine"] == "onnx" and 0 < met["p95_ms"] <= budget
    assert met["search_p95_ms"] > 0
    assert "within a budget of 1000 ms" in (result.path / export.CARD_FILE).read_text()


def test_export_refuses_when_no_trial_meets_the_budget(latency_run, tmp_path, capsys):
    out = tmp_path / "analysis"
    rc = cli.main(["export", str(latency_run), "--analysis", str(out), "--max-latency-ms", "1e-6"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no trial on the Pareto front" in err and "raise the budget" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*.json"))


def test_export_under_a_budget_needs_a_run_that_measured_latency(tmp_path):
    from test_analysis import params, write_manifest, write_trial

    run_dir = tmp_path / "trials" / "plain-20260101-000000"
    write_manifest(run_dir)
    write_trial(run_dir, "t0", params(), [0.6], checkpoint=True)
    options = export.ExportOptions(max_latency_ms=10.0)
    with pytest.raises(ExportError, match="measured no latency; search a space with a latency"):
        export.export_winner(run_dir, analysis_root=tmp_path, options=options)
