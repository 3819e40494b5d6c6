"""The report: `sentune report` on the shared tiny search, a killed run, and headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis import (
    FLOW_SEARCHED,
    FLOW_SPACE,
    _confirm_run,
    _floor,
    params,
    write_manifest,
    write_trial,
)

from sentune import analysis, cli, config, report, runs
from sentune.report import browser, page
from sentune.train.evaluate import Floor

#: The panels of a run without a latency objective (a latency panel would be empty: it is left
#: out, table of contents included).
PANELS = (
    "leaderboard",
    "confirmation",
    "importance",
    "contour",
    "parallel",
    "history",
    "curves",
    "slices",
    "tokens",
    "data",
    "winner",
    "manifest",
)
#: Panels drawn as Plotly figures (the manifest is a table; the shared tiny run has confirmation
#: off, so its panel is a note).
FIGURES = {f"fig-{p}-0" for p in PANELS if p not in ("manifest", "confirmation")}


def _report(run_dir: Path, workdir: Path, *args: str) -> int:
    """`sentune report RUN --analysis <workdir>/analysis`, run from `workdir` (token cache)."""
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        return cli.main(["report", str(run_dir), "--analysis", str(workdir / "analysis"), *args])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory) -> Path:
    """The analysis folder of the shared tiny search, written by `sentune report`."""
    workdir = tmp_path_factory.mktemp("report")
    assert _report(tiny_run, workdir) == 0
    return workdir / "analysis" / tiny_run.name


def test_synthetic_report_without_data_says_what_is_missing(tmp_path):
    run_dir = tmp_path / "trials" / "synthetic-20260101-000000"
    write_manifest(run_dir)
    for i in range(6):
        write_trial(run_dir, f"t{i}", params(0.05 * i, ("cls", "mean")[i % 2]), [0.5 + 0.05 * i])
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=2)
    path = report.write_report(result, tmp_path / "out")
    text = path.read_text()
    for panel in PANELS:
        assert f'<section id="{panel}">' in text
    # No latency objective, no latency measured: no empty panel, and no entry for it.
    assert 'id="latency"' not in text and 'href="#latency"' not in text
    assert "skipped (the data was not rebuilt)" in text
    # plotly.js embedded once, nothing loaded from elsewhere (works offline).
    assert text.count("window.PlotlyConfig") == 1
    assert "<script src=" not in text
    summary = report.summary(result, report=path)
    assert "importance (fANOVA" in summary and "at epoch 1 (6 trials)" in summary
    assert f"report: {path}" in summary


def test_summary_and_headline_lead_with_the_floor_when_it_beats_the_best_trial(tmp_path):
    run_dir = tmp_path / "trials" / "synthetic-20260101-000000"
    write_manifest(run_dir)
    for i in range(3):
        scores = [0.5 + 0.02 * i, 0.55 + 0.02 * i, 0.6 + 0.02 * i]
        write_trial(run_dir, f"t{i}", params(0.1 * i), scores)
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=2)
    assert result.verdict is None  # no floor without the data
    result.floor = _floor(0.77, train_size=600)
    result.tokens = analysis.TokenLengths(np.full(50, 248), pd.DataFrame())
    result.verdict = analysis.floor_verdict(result.run, result.table, result.floor, result.tokens)
    first = report.summary(result).splitlines()[0]
    assert first.startswith("The TF-IDF floor (0.7700) beats the best trial (0.6400, trial t2)")
    assert "likely causes: truncation (max_length 64 cuts 100.0% of the training texts" in first
    assert "too few epochs (still improving at its last epoch, 3 of 3; raise budget." in first
    assert "too little data (600 training examples" in first
    assert page._headline(result).startswith(first)
    assert report.summary(result).splitlines()[1].startswith("Top trials of")

    assert "try train.max_length: auto or train.truncation: head_tail" in first
    # At the model's limit a longer max_length is no fix.
    result.verdict = result.verdict._replace(model_limit=64)
    assert "the model takes no more, so keep both ends with train.truncation: head_tail" in (
        report.summary(result)
    )

    result.floor = _floor(0.5)
    result.verdict = analysis.floor_verdict(result.run, result.table, result.floor, result.tokens)
    assert result.verdict is None
    assert report.summary(result).startswith("Top trials of")
    assert page._headline(result).startswith("3 trials")


@pytest.mark.slow
def test_report_of_a_finished_run(tiny_run, tiny_report, capfd):
    for name in (
        analysis.REPORT_FILE,
        analysis.LEADERBOARD_FILE,
        analysis.IMPORTANCE_FILE,
        analysis.FLOOR_FILE,
    ):
        assert (tiny_report / name).is_file()
    table = pd.read_csv(tiny_report / analysis.LEADERBOARD_FILE)
    assert len(table) == 6 and "rung" in table.columns
    importance = pd.read_csv(tiny_report / analysis.IMPORTANCE_FILE)
    assert set(importance["param"]) == {"head.dropout", "train.learning_rate"}
    floor = json.loads((tiny_report / analysis.FLOOR_FILE).read_text())
    assert 0 <= floor["val_macro_f1"] <= 1 and floor["fingerprint_matches"]
    text = (tiny_report / analysis.REPORT_FILE).read_text()
    assert text.count("<section id=") == len(PANELS)
    assert '<p class="note">not available' not in text  # every part was computed
    assert text.count("window.PlotlyConfig") == 1 and "<script src=" not in text


@pytest.mark.slow
def test_report_of_a_run_killed_halfway(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "trials" / tiny_run.name
    shutil.copytree(tiny_run, run_dir)
    table = analysis.leaderboard(runs.open_run(run_dir))
    completed = table[table["status"] == analysis.COMPLETED]["trial_id"].tolist()
    # Killed mid-write: one trial's last line is cut, another's results are gone altogether.
    cut = run_dir / completed[0] / "result.json"
    cut.write_text(cut.read_text()[:-30])
    (run_dir / completed[1] / "result.json").write_text("")
    assert _report(run_dir, tmp_path) == 0
    out = tmp_path / "analysis" / tiny_run.name
    assert (out / analysis.REPORT_FILE).is_file() and (out / analysis.IMPORTANCE_FILE).is_file()
    status = pd.read_csv(out / analysis.LEADERBOARD_FILE).set_index("trial_id")["status"]
    assert status[completed[0]] == status[completed[1]] == analysis.UNFINISHED
    assert "report:" in capsys.readouterr().out


@pytest.mark.slow
def test_report_renders_every_panel_in_headless_chromium(tiny_report):
    if browser.find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    check = browser.check_render(tiny_report / analysis.REPORT_FILE)
    assert check.errors == []
    assert set(check.figures) == FIGURES
    assert all(check.figures.values()), check.figures
    png = browser.screenshot(
        tiny_report / analysis.REPORT_FILE, tiny_report / analysis.SCREENSHOT_FILE
    )
    assert png.stat().st_size > 10_000


@pytest.fixture
def heads_result(tmp_path) -> analysis.RunAnalysis:
    """A synthetic run of choice parameters (flow-style space), with a floor, no data."""
    run_dir = tmp_path / "trials" / "heads-20260101-000000"
    write_manifest(run_dir, searched=FLOW_SEARCHED, space_text=FLOW_SPACE)
    for i, (layers, width) in enumerate([(0, 128), (1, 384), (2, 128), (1, 128)]):
        values = {
            "head.layers": layers,
            "head.width": width,
            "head.dropout": 0.1 * i,
            "train.learning_rate": 10 ** -(i + 2),
        }
        write_trial(run_dir, f"t{i}", values, [0.5 + 0.05 * i, 0.55 + 0.05 * i], start=i)
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    result.floor = Floor(0.6, 0.6, 10, 4, "0000", True, "tf-idf")
    return result


def _figure(panels: list[report.Panel], panel_id: str):
    return next(p for p in panels if p.id == panel_id).figures[0]


def test_choices_are_categories_in_every_panel(heads_result):
    panels = report.build_panels(heads_result)
    dims = {d.label: d for d in _figure(panels, "parallel").data[0].dimensions}
    assert dims["head.layers"].ticktext == ("0", "1", "2")
    assert dims["head.layers"].tickvals == (0, 1, 2)
    assert dims["head.width"].ticktext == ("128", "384")  # not a 128-384 range
    assert dims["head.dropout"].tickformat == ".3~g"
    assert dims["train.learning_rate (log)"].ticktext[0] == "1e-05"
    slices = _figure(panels, "slices").layout
    layers = next(a for a in (slices.xaxis, slices.xaxis2, slices.xaxis3) if a.type == "category")
    assert tuple(layers.categoryarray) == ("0", "1", "2")
    history = _figure(panels, "history").data[0]
    assert any("head.layers=1<br>" in text for _, text in history.customdata)


def test_curves_colour_each_trial_and_show_both_losses(heads_result):
    fig = _figure(report.build_panels(heads_result), "curves")
    f1 = [t for t in fig.data if t.showlegend is not False and t.legendgroup != "floor"]
    assert [t.name for t in f1] == [f"t{i} (stopped)" for i in (3, 2, 1, 0)]  # best first
    assert len({t.line.color for t in f1}) == 4
    losses = [t for t in fig.data if t.name and t.name.endswith("validation loss")]
    assert len(losses) == 4 and all(t.xaxis == "x2" for t in losses)
    assert fig.layout.xaxis.dtick == 1


def test_the_floor_is_labelled_in_the_legend_not_over_the_points(heads_result):
    for panel in ("leaderboard", "history", "curves"):
        fig = _figure(report.build_panels(heads_result), panel)
        assert not [a for a in fig.layout.annotations if "floor" in (a.text or "")], panel
        names = [t.name for t in fig.data if t.legendgroup == "floor"]
        assert names == ["TF-IDF floor 0.600"], panel


def test_the_page_has_contents_and_compute_time(heads_result, tmp_path):
    text = report.write_report(heads_result, tmp_path / "out").read_text()
    nav = text[text.index("<nav") : text.index("</nav>")]
    for panel in PANELS:
        assert f'href="#{panel}"' in nav and f'<section id="{panel}">' in text
    # 4 trials of 20 s each; t0 starts first (0 s) and t3 (starts at 3 s) reports last at 23 s.
    assert "Compute: 80 s of trial time in 23 s of wall time" in text


def test_the_latency_panel_draws_the_front_the_budget_and_the_chosen_trial(tmp_path):
    run_dir = tmp_path / "trials" / "latency-20260101-000000"
    write_manifest(run_dir, objective={"constraints": {config.LATENCY_P95_MS: 8.0}})
    for trial_id, score, p95 in (("deep", 0.74, 12.0), ("mid", 0.70, 6.0), ("bad", 0.6, 9.0)):
        latency = {
            config.LATENCY_P95_MS: p95,
            config.LATENCY_P50_MS: p95 / 2,
            config.THROUGHPUT_B32: 100.0,
            config.MODEL_MB: 20.0,
        }
        write_trial(run_dir, trial_id, params(), [score], checkpoint=True, metrics=latency)
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    panel = next(p for p in report.build_panels(result) if p.id == "latency")
    fig = panel.figures[0]
    traces = {t.name: t for t in fig.data}
    assert list(traces["on the front"].x) == [12.0, 6.0]
    assert list(traces["trial"].x) == [9.0]
    assert list(traces["chosen"].x) == [6.0] and list(traces["chosen"].y) == [0.70]
    assert [s.x0 for s in fig.layout.shapes] == [8.0]  # the budget line
    assert panel.note == ""


def test_a_latency_objective_keeps_its_panel_before_any_trial_measured(tmp_path):
    run_dir = tmp_path / "trials" / "latency-20260101-000000"
    write_manifest(run_dir, objective={"constraints": {config.LATENCY_P95_MS: 8.0}})
    write_trial(run_dir, "t0", params(), [0.6])
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    panel = next(p for p in report.build_panels(result) if p.id == "latency")
    assert panel.note == "no trial has measured its latency yet" and not panel.figures


def test_the_compute_time_counts_the_confirmation_over_seeds(tmp_path):
    run_dir = _confirm_run(tmp_path)
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    # Search: a 30 s, b 30 s, c 10 s; confirmation: a-seed1 and b-seed1, 30 s each.
    line = page._compute_line(result)
    assert line.startswith(
        "Compute: 2.2 min of trial time incl. the confirmation over seeds (70 s searching, 60 s "
        "confirming) in 30 s of wall time"
    )
    assert result.compute.confirm_s == pytest.approx(60)
    # Without confirmation trials the line is the search's alone.
    shutil.rmtree(runs.confirm_dir(run_dir))
    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    assert page._compute_line(result).startswith("Compute: 70 s of trial time in 30 s")


#: head.width and head.dropout are used only with a hidden layer (`when:`), as in heads.yaml.
CONDITIONAL_SPACE = json.dumps(
    {
        "search": {
            "head.layers": {"choice": [0, 1, 2]},
            "head.width": {"choice": [128, 384], "when": {"head.layers": [1, 2]}},
            "head.dropout": {"uniform": [0.0, 0.5], "when": {"head.layers": [1, 2]}},
            "train.learning_rate": {"loguniform": [1e-5, 1e-3]},
        }
    }
)
CONDITIONAL_SEARCHED = ["head.layers", "head.width", "head.dropout", "train.learning_rate"]


@pytest.fixture
def conditional_result(tmp_path) -> analysis.RunAnalysis:
    """Six trials; t0 and t3 have no hidden layer, so head.width and head.dropout are inactive."""
    run_dir = tmp_path / "trials" / "cond-20260101-000000"
    write_manifest(run_dir, searched=CONDITIONAL_SEARCHED, space_text=CONDITIONAL_SPACE)
    for i, layers in enumerate([0, 1, 2, 0, 1, 2]):
        values = {"head.layers": layers, "train.learning_rate": 10 ** -(i % 3 + 3)}
        if layers:
            values.update({"head.width": (128, 384)[i % 2], "head.dropout": 0.1 * i})
        write_trial(run_dir, f"t{i}", values, [0.5 + 0.04 * i], start=i)
    return analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)


def test_inactive_values_have_a_labelled_place(conditional_result):
    panels = {p.id: p for p in report.build_panels(conditional_result)}
    parallel = panels["parallel"]
    dims = {d.label: d for d in parallel.figures[0].data[0].dimensions}
    assert dims["head.width"].ticktext == ("128", "384", "inactive")
    trials = conditional_result.table["trial_id"].tolist()  # the lines' order (best first)
    width = dict(zip(trials, dims["head.width"].values, strict=True))
    assert width["t0"] == width["t3"] == 2  # the "inactive" tick
    # A numeric one: an "inactive" tick below its range.
    dropout = dims["head.dropout"]
    assert dropout.ticktext[0] == "inactive"
    inactive_at = dropout.tickvals[0]
    values = dict(zip(trials, dropout.values, strict=True))
    assert values["t0"] == values["t3"] == inactive_at < min(values["t1"], values["t2"])
    assert "head.width: 2 of 6 trials did not use it (used only when head.layers is 1 or 2)" in (
        parallel.note
    )
    slices = panels["slices"]
    layout = slices.figures[0].layout
    columns = [a.categoryarray for a in (layout.xaxis, layout.xaxis2) if a.type == "category"]
    assert ("128", "384", "inactive") in [tuple(c) for c in columns]
    assert "head.dropout: 2 of 6 trials did not use it" in slices.note
    assert "left out of the slice" in slices.note
    dropout_x = [x for t in slices.figures[0].data if t.xaxis == "x3" for x in t.x]
    assert len(dropout_x) == 4  # the trials that used it


def test_the_slices_say_what_the_colour_is(heads_result):
    fig = _figure(report.build_panels(heads_result), "slices")
    assert fig.layout.legend.title.text == "colour: trial status"
    shown = [t for t in fig.data if t.showlegend]
    assert [t.name for t in shown] == ["stopped"]  # every trial of heads_result was stopped
    assert all(t.marker.color == report.STATUS_COLORS[t.name] for t in fig.data)


def _importance(*ranked: str, epoch: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "param": list(ranked),
            "importance_mean": [0.5] * len(ranked),
            "importance_std": [0.1] * len(ranked),
            "low": [0.4] * len(ranked),
            "high": [0.6] * len(ranked),
            "noise": [0.2] * len(ranked),
            "below_noise": [False] * len(ranked),
            "fidelity_epoch": [epoch] * len(ranked),
            "n_trials": [6] * len(ranked),
            "note": [""] * len(ranked),
        }
    )


def test_the_contour_of_two_numeric_parameters(conditional_result):
    conditional_result.importance = _importance("train.learning_rate", "head.dropout")
    panel = next(p for p in report.build_panels(conditional_result) if p.id == "contour")
    fig = panel.figures[0]
    contour, dots = fig.data
    assert contour.type == "contour" and dots.type == "scatter"
    assert fig.layout.xaxis.title.text == "train.learning_rate (log)"
    assert fig.layout.yaxis.title.text == "head.dropout"
    assert fig.layout.coloraxis.colorbar.title.text == config.VAL_MACRO_F1
    # t0 and t3 had no head.dropout: left out, and said so.
    assert sorted(dots.customdata[:, 0]) == ["t1", "t2", "t4", "t5"]
    assert "head.dropout: 2 of 6 trials did not use it" in panel.note


def test_the_contour_of_two_categorical_parameters_is_a_mean_per_pair(conditional_result):
    conditional_result.importance = _importance("head.layers", "head.width")
    panel = next(p for p in report.build_panels(conditional_result) if p.id == "contour")
    heatmap = panel.figures[0].data[0]
    assert heatmap.type == "heatmap"
    assert tuple(heatmap.x) == ("0", "1", "2") and tuple(heatmap.y) == ("128", "384", "inactive")
    z = pd.DataFrame(heatmap.z, index=heatmap.y, columns=heatmap.x)
    # t0 (0.50) and t3 (0.62): no hidden layer, width inactive.
    assert z.loc["inactive", "0"] == pytest.approx(0.56)
    assert z.loc["384", "1"] == pytest.approx(0.54) and z.loc["128", "1"] == pytest.approx(0.66)
    assert np.isnan(z.loc["inactive", "1"])  # no such trial
    assert panel.note.startswith("Inactive values")


def test_the_contour_says_when_fewer_than_two_parameters_are_ranked(heads_result):
    panel = next(p for p in report.build_panels(heads_result) if p.id == "contour")
    assert panel.note.startswith("Fewer than 2 parameters are ranked")
    assert len(panel.figures) == 1  # the first two of the importance table are drawn anyway


def test_the_model_card_recipe_says_inactive_and_seed(conditional_result):
    from sentune.export.card import _recipe
    from sentune.export.common import Winner

    run = conditional_result.run
    winner = Winner("t0", 1, Path("ckpt"), run.params["t0"], 0.5, 1.0, 64)
    rows = {key: (value, origin) for key, value, origin in _recipe(run, winner)}
    assert rows["head.width"] == ("—", "inactive (head.layers 0)")
    assert rows["head.dropout"][1] == "inactive (head.layers 0)"
    assert rows["head.layers"] == (0, "searched")
    assert rows["train.seed"][1] == "the search's seed"
    confirmed = Winner(
        "t1", 1, Path("ckpt"), {**run.params["t1"], "train.seed": 1}, 0.54, 1.0, 64,
        confirmed={0: 0.54, 1: 0.55},
    )  # fmt: skip
    rows = {key: (value, origin) for key, value, origin in _recipe(run, confirmed)}
    assert rows["train.seed"] == (1, "confirmation seed")
    assert rows["head.width"] == (384, "searched")
