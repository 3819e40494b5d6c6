"""`sentune search SPACE --dry-run`: the plan and an estimate, from the rules the search runs by,
with nothing left on disk; bad input fails as the search does."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from test_bad_input import CASES

from sentune import cli, config
from sentune.report.terminal import WIDTH
from sentune.search.plan import Measurement, estimate_wall, expected_epochs


@pytest.fixture
def ctx(tmp_path, write_tiny_space, tiny_model_dir, tiny_csv, monkeypatch):
    """A working folder of its own (the token cache `.cache/sentune` would go there) holding an
    earlier run in the storage, and the tiny space file outside it; no hub, no GPU."""
    import torch

    cwd = tmp_path / "cwd"
    (cwd / "trials" / "tiny-20250101-000000").mkdir(parents=True)
    (cwd / "trials" / "tiny-20250101-000000" / "keep.txt").write_text("an earlier run")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # read by the dashboard-host case only
    folder = tmp_path / "space"
    folder.mkdir()
    return {
        "space": write_tiny_space(folder, tiny_model_dir, tiny_csv),
        "tmp": tmp_path,
        "cwd": cwd,
        "storage": cwd / "trials",
    }


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _sections(lines: list[str]) -> dict[str, str]:
    """The plan's sections by label, each one text (wrapped lines joined, runs of spaces one)."""
    sections: dict[str, list[str]] = {}
    label = ""
    for line in lines[1:]:
        label = line[:12].strip() or label
        sections.setdefault(label, []).append(line[12:])
    return {k: " ".join(" ".join(v).split()) for k, v in sections.items()}


def _plan_folders() -> list[str]:
    return sorted(p.name for p in Path(tempfile.gettempdir()).glob("sentune-plan-*"))


def test_dry_run_prints_the_plan_and_leaves_nothing_on_disk(ctx, capsys):
    before, temp_before = _listing(ctx["cwd"]), _plan_folders()
    argv = ["search", str(ctx["space"]), "--storage", str(ctx["storage"]), "--dry-run"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert _listing(ctx["cwd"]) == before  # no run folder, journal, token cache or checkpoint
    assert _plan_folders() == temp_before
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    section = _sections(lines)
    # The searched parameters with their ranges, the recipe first, the fixed values.
    assert "train.learning_rate choice [1e-05, 0.003]" in section["searched"]
    assert "head.dropout uniform [0, 0.3]" in section["searched"]
    assert section["first"] == "recipe: head.dropout 0.3"
    assert section["fixed"] == (
        "train.max_length 32, train.batch_size 16, train.effective_batch_size 16"
    )
    # The data after the split, and max_length with what it truncates.
    assert re.search(r"train \d+, validation \d+, test \d+ \(never seen", section["data"])
    assert section["max_length"].startswith("32 (fixed; the model takes 128): truncates 0.0%")
    # Trials, ASHA, the confirmation, the strategy and sampler, where trials run.
    assert section["trials"].startswith(
        "6, up to 3 epochs each; ASHA may stop a trial at epoch 1, 2"
    )
    assert section["trials"].endswith("; no confirmation over seeds (budget.confirm_seeds 0)")
    assert section["strategy"].startswith("tpe-asha: Optuna's TPE sampler (seed 0, n_startup")
    assert re.match(r"1 trial at a time on this host: \d+ CPUs? and no GPU", section["resources"])
    assert section["run folder"].startswith(str(ctx["storage"] / "tiny-"))
    # The estimate, what it measured and what it assumes.
    assert re.match(
        r"~\w+ in all: the search ~\w+ \(6 trials × ~[\d.]+ epochs", section["estimate"]
    )
    assert re.match(
        r"3 optimizer steps after a first one: [\d.]+ training examples/s", section["measured"]
    )
    assert section["timed"].startswith("train.learning_rate 0.003, head.dropout 0.3: the first")
    assert "not counted: Ray's start, the data preparation" in section["assumes"]


def test_dry_run_reads_and_fills_a_token_cache_that_exists(ctx, capsys):
    """Where the search keeps a token cache, the dry run uses it as the search would: the next
    search then reads the tokens instead of tokenizing again."""
    cache = ctx["cwd"] / config.CACHE_DIR
    cache.mkdir(parents=True)
    argv = ["search", str(ctx["space"]), "--storage", str(ctx["storage"]), "--dry-run"]
    assert cli.main(argv) == 0
    assert len(list(cache.iterdir())) == 1
    assert sorted(p.name for p in ctx["storage"].iterdir()) == ["tiny-20250101-000000"]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_the_dry_run_as_it_fails_the_search(ctx, capsys, argv, message):
    """Every mistake of the search's catalogue (`test_bad_input.CASES`) that a new search can
    make ends the dry run with the same line and exit code 2, leaving nothing behind."""
    args = argv(ctx)
    if args[0] != "search" or "--resume" in args:
        pytest.skip("not a new search")
    before = _listing(ctx["cwd"])
    assert cli.main([*args, "--dry-run"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("sentune: error: "), err
    assert message in err[0]
    assert _listing(ctx["cwd"]) == before


def test_dry_run_of_a_resumed_search_is_refused_in_one_line(ctx, capsys):
    run = ctx["storage"] / "tiny-20250101-000000"
    assert cli.main(["search", "--resume", str(run), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "sentune: error: --dry-run plans a new search and --resume continues one as it was "
        "planned (its manifest holds that plan); drop one of them"
    )


# --- the estimate --------------------------------------------------------------------------------


def test_expected_epochs_follow_ashas_rungs():
    budget = config.BudgetConfig(trials=8, max_epochs=2, grace_period=1, reduction_factor=2)
    # All 8 train epoch 1; of those at the rung the first goes on, and half of the other 7.
    assert expected_epochs(budget, [1.0, 2.0]) == pytest.approx((8 * 1 + 4.5 * 1) / 8)
    assert expected_epochs(budget, [2.0]) == 2  # FIFO: every trial trains every epoch
    one = config.BudgetConfig(trials=1, max_epochs=3)
    assert expected_epochs(one, [1.0, 2.0, 3.0]) == 3  # a lone trial is always the first


def test_estimate_scales_the_measurement_to_the_search():
    measured = Measurement(
        values={"train.batch_size": 32, "train.effective_batch_size": 32},
        steps=3,
        examples=96,
        samples_per_s=20.0,
        eval_examples=128,
        eval_per_s=100.0,
        setup_s=5.0,
        precision="fp32",
        device="cpu",
        threads=2,
        wall_s=10.0,
    )
    budget = config.BudgetConfig(
        trials=8, max_epochs=2, grace_period=1, reduction_factor=2, confirm_seeds=2
    )
    estimate = estimate_wall(
        measured,
        budget,
        rungs=[1.0, 2.0],
        train_size=2000,
        val_size=1000,
        eval_every_steps=None,
        at_once=2,
    )
    epoch_s = 2000 / 20 + 1000 / 100
    assert estimate.epoch_s == pytest.approx(epoch_s)
    assert estimate.search_s == pytest.approx(8 * (5 + 12.5 / 8 * epoch_s) / 2)
    # Two configurations over two seeds, each its own first: two more full trials, two at once.
    assert estimate.confirm_s == pytest.approx(2 * (5 + 2 * epoch_s) / 2)
    assert estimate.total_s == pytest.approx(estimate.search_s + estimate.confirm_s)
    capped = estimate_wall(
        measured,
        config.BudgetConfig(trials=8, max_epochs=2, time_budget_s=60, confirm_seeds=0),
        rungs=[1.0, 2.0],
        train_size=2000,
        val_size=1000,
        eval_every_steps=100,
        at_once=1,
    )
    assert capped.capped and capped.search_s == 60 and capped.confirm_s == 0
    assert capped.evaluations == 1  # 63 steps an epoch: no evaluation every 100 before its end
    quarters = config.BudgetConfig(
        trials=8, max_epochs=2, evals_per_epoch=4, grace_period=0.25, confirm_seeds=0
    )
    rungs = [0.25, 0.5, 1.0, 2.0]
    sub_epoch = estimate_wall(
        measured,
        quarters,
        rungs=rungs,
        train_size=2000,
        val_size=1000,
        eval_every_steps=None,
        at_once=1,
    )
    assert sub_epoch.evaluations == 4
    assert sub_epoch.epoch_s == pytest.approx(2000 / 20 + 4 * 1000 / 100)
    # 8 trials reach 0.25, then 4.5, 2.75 and 1.875 of them go on past each rung.
    expected = (8 * 0.25 + 4.5 * 0.25 + 2.75 * 0.5 + 1.875 * 1) / 8
    assert sub_epoch.trial_epochs == pytest.approx(expected)


def test_gpu_packing_is_planned_as_the_search_packs(
    ctx, monkeypatch, write_tiny_space, tiny_model_dir, tiny_csv
):
    """On a host with one 80 GiB GPU (faked: no GPU here), `gpus_per_trial: auto` packs the
    tiny trials 8 to the GPU, and the host's 2 CPUs (1 per trial) run 2 of them at once."""
    from sentune import space
    from sentune.search import SearchOptions
    from sentune.search.plan import build_plan
    from sentune.search.plan_text import format_plan
    from sentune.search.resources import GpuCard

    cards = [GpuCard(80 * 2**30, bf16=True)]
    for module in ("sentune.search.resources", "sentune.search.preflight"):
        monkeypatch.setattr(f"{module}.gpu_cards", lambda: cards)
    folder = ctx["tmp"] / "gpu"
    folder.mkdir()
    per_trial = {"concurrency": None, "cpus_per_trial": 1, "gpus_per_trial": "auto"}
    spec = space.load(str(write_tiny_space(folder, tiny_model_dir, tiny_csv, **per_trial)))
    before = _listing(ctx["cwd"])
    options = SearchOptions(storage=ctx["storage"], num_cpus=2, dashboard=False)
    plan = build_plan(spec, options=options, measure=False)
    assert plan.spec.budget.gpus_per_trial == 0.125 and plan.at_once == 2
    assert plan.measurement is None and plan.estimate is None
    resources = _sections(format_plan(plan).splitlines())["resources"]
    assert resources.startswith("2 trials at a time on this host: 1 CPU and 0.125 GPU each (8 ")
    assert _listing(ctx["cwd"]) == before


def test_dry_run_reads_the_warm_start_as_the_search_does(ctx, capsys):
    """A `--warm-start` that is not a run fails the dry run with the search's line."""
    empty = ctx["tmp"] / "not-a-run"
    empty.mkdir()
    argv = ["search", str(ctx["space"]), "--storage", str(ctx["storage"]), "--dry-run"]
    before = _listing(ctx["cwd"])
    assert cli.main([*argv, "--warm-start", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sentune: error: ") and "not a sentune run" in err, err
    assert "\n" not in err and _listing(ctx["cwd"]) == before


@pytest.mark.slow
def test_dry_run_plans_a_warm_start_from_a_finished_run(ctx, capsys, tiny_run):
    """The plan says how many of the earlier run's trials would seed the study (the tiny search
    of `tiny_run`, on the same data and space)."""
    argv = ["search", str(ctx["space"]), "--storage", str(ctx["storage"]), "--dry-run"]
    assert cli.main([*argv, "--warm-start", str(tiny_run)]) == 0
    study = _sections(capsys.readouterr().out.splitlines())["study"]
    assert re.match(rf"warm start from {tiny_run.name}: \d+ of its \d+ finished trials seed", study)
