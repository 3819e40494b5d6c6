"""A catalogue of mistakes a user can make: each ends in one line on stderr that names the problem
and the fix, exit code 2, and no run folder left behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_texts

from sentune import cli, runs


def _space(ctx, **changes) -> str:
    """The tiny space file with top-level entries replaced (None deletes), written as JSON."""
    text = json.loads(ctx["space"].read_text())
    for key, value in changes.items():
        if value is None:
            text.pop(key, None)
        else:
            text[key] = value
    path = ctx["tmp"] / "case.yaml"
    path.write_text(json.dumps(text))
    return str(path)


def _raw_space(ctx, text: str) -> str:
    path = ctx["tmp"] / "case.yaml"
    path.write_text(text)
    return str(path)


def _data(ctx, frame: pd.DataFrame, name: str = "case.csv") -> dict:
    path = ctx["tmp"] / name
    frame.to_csv(path, index=False)
    return {"dataset": str(path)}


def _texts(n=120, **kw) -> pd.DataFrame:
    return make_texts(n, seed=7, **kw)


def _val_labels_absent(ctx) -> dict:
    folder = ctx["tmp"] / "splits"
    folder.mkdir()
    train = _texts()
    train[train["label"] != "neutral"].to_csv(folder / "train.csv", index=False)
    make_texts(60, seed=8).to_csv(folder / "validation.csv", index=False)
    return {"dataset": str(folder)}


def _same_texts_in_every_split(ctx) -> dict:
    folder = ctx["tmp"] / "same"
    folder.mkdir()
    for split in ("train", "validation"):
        _texts().to_csv(folder / f"{split}.csv", index=False)
    return {"dataset": str(folder)}


def _utf16(ctx) -> dict:
    path = ctx["tmp"] / "utf16.csv"
    path.write_bytes(_texts().to_csv(index=False).encode("utf-16"))
    return {"dataset": str(path)}


def _fake_run(ctx) -> str:
    """A run folder with a complete manifest and no Tune state (the search never started)."""
    from sentune import config

    run = ctx["tmp"] / "runs" / "tiny-20250101-000000"
    run.mkdir(parents=True)
    manifest = runs.Manifest(
        run=run.name,
        started="2025-01-01T00:00:00",
        space=runs.SpaceRecord(name="tiny", path="tiny.yaml", text=""),
        model="tiny",
        model_path="tiny",
        data=runs.DataRecord(config=config.DataConfig(), fingerprint="0", label_names=["a", "b"]),
        budget=config.BudgetConfig(),
        settings=config.TrialSettings(resumable=True),
    )
    runs.write_manifest(run, manifest)
    return str(run)


def _cut_manifest(ctx) -> str:
    run = ctx["tmp"] / "runs" / "cut-20250101-000000"
    run.mkdir(parents=True)
    (run / runs.MANIFEST).write_text(json.dumps({"space": {"name": "cut"}}))
    return str(run)


def _empty_dir(ctx) -> str:
    folder = ctx["tmp"] / "empty"
    folder.mkdir(exist_ok=True)
    return str(folder)


def _a_file(ctx) -> Path:
    path = ctx["tmp"] / "a-file"
    path.write_text("not a folder")
    return path


def _search(ctx, space, *extra) -> list[str]:
    return ["search", str(space), "--storage", str(ctx["storage"]), "--no-dashboard", *extra]


# (id, argv builder, what the one line must say). The builders get a context with the tiny
# space file (`space`), a scratch folder (`tmp`) and the storage folder that must stay empty.
CASES = [
    (
        "a-start-point-outside-the-space",
        lambda c: _search(c, _space(c, start=[{"head.dropout": 0.9}])),
        "start point 1: head.dropout=0.9 is outside the space",
    ),
    (
        "a-start-point-of-an-unsearched-key",
        lambda c: _search(c, _space(c, start=[{"head.layers": 1}])),
        "start point 1: head.layers is not searched",
    ),
    (
        "more-encoder-layers-than-the-model-has",
        lambda c: _search(c, _space(c, fixed={"model.encoder_layers": 3})),
        "model.encoder_layers 3: ",
    ),
    (
        "a-latency-budget-of-zero",
        lambda c: [*_search(c, str(c["space"])), "--max-latency-ms", "0"],
        "--max-latency-ms: needs a bound above 0, got 0",
    ),
    (
        "objective-and-objectives",
        lambda c: _search(
            c,
            _space(
                c,
                objective={"subject_to": {"latency_p95_ms": 8}},
                objectives=["val_macro_f1", "latency_p95_ms"],
            ),
        ),
        "give objective (one metric, with bounds) or objectives",
    ),
    (
        "malformed-yaml",
        lambda c: _search(c, _raw_space(c, "search: {head.dropout: [0.1, 0.2}\n")),
        "malformed YAML",
    ),
    (
        "yaml-not-a-mapping",
        lambda c: _search(c, _raw_space(c, "- just\n- a list\n")),
        "top level must be a mapping",
    ),
    (
        "unknown-parameter",
        lambda c: _search(c, _space(c, search={"head.droput": {"uniform": [0.1, 0.2]}})),
        "unknown parameter 'head.droput'",
    ),
    (
        "bad-bounds",
        lambda c: _search(c, _space(c, search={"head.dropout": {"uniform": [0.5, 0.1]}})),
        "uniform needs low < high",
    ),
    (
        "unknown-distribution",
        lambda c: _search(c, _space(c, search={"head.dropout": {"gaussian": [0.1, 0.2]}})),
        "unknown distribution 'gaussian'; use one of choice",
    ),
    ("unknown-space", lambda c: _search(c, "no-such-space"), "known spaces: "),
    (
        "missing-data-file",
        lambda c: _search(c, _space(c, data={"dataset": str(c["tmp"] / "missing.csv")})),
        "no such file or folder",
    ),
    (
        "unreadable-encoding",
        lambda c: _search(c, _space(c, data=_utf16(c))),
        "unreadable encoding",
    ),
    (
        "missing-text-column",
        lambda c: _search(c, _space(c, data=_data(c, _texts().rename(columns={"text": "body"})))),
        "no text column",
    ),
    (
        "missing-label-column",
        lambda c: _search(c, _space(c, data=_data(c, _texts().rename(columns={"label": "mood"})))),
        "no label column",
    ),
    (
        "empty-after-cleaning",
        lambda c: _search(
            c, _space(c, data=_data(c, pd.DataFrame({"text": ["hi", "ok"], "label": ["a", "b"]})))
        ),
        "no examples left after cleaning",
    ),
    (
        "single-class",
        lambda c: _search(c, _space(c, data=_data(c, _texts().assign(label="positive")))),
        "at least two",
    ),
    (
        "validation-labels-absent-from-training",
        lambda c: _search(c, _space(c, data=_val_labels_absent(c))),
        "absent from training",
    ),
    (
        "validation-holds-every-training-text",
        lambda c: _search(c, _space(c, data=_same_texts_in_every_split(c))),
        "no training examples left to carve the test split from",
    ),
    (
        "max-length-quantile-above-one",
        lambda c: _search(c, _space(c, search={"train.max_length": {"quantiles": [0.5, 1.5]}})),
        "quantiles needs a non-empty list of numbers in (0, 1], got [0.5, 1.5]",
    ),
    (
        "auto-on-another-key",
        lambda c: _search(c, c["space"], "--set", "head.dropout=auto"),
        "head.dropout: auto is only for train.max_length",
    ),
    (
        "unknown-truncation",
        lambda c: _search(c, c["space"], "--set", "train.truncation=middle"),
        "train.truncation: 'middle' is not one of head, tail, head_tail",
    ),
    (
        "train-size-above-the-data",
        lambda c: _search(c, c["space"], "--train-size", "100000"),
        "set data.train_size to at most",
    ),
    (
        "max-length-above-the-model-limit",
        lambda c: _search(c, c["space"], "--set", "train.max_length=4096"),
        "exceeds the model's limit of 128 tokens",
    ),
    (
        "unknown-model-id-offline",
        lambda c: _search(c, c["space"], "--model", "no-such-org/no-such-model"),
        "cannot load model 'no-such-org/no-such-model'",
    ),
    (
        "folder-that-is-not-a-model",
        lambda c: _search(c, c["space"], "--model", _empty_dir(c)),
        "is not a model folder",
    ),
    (
        "gpus-on-a-host-without-gpus",
        lambda c: _search(c, c["space"], "--gpus-per-trial", "1"),
        "no CUDA GPU; use --gpus-per-trial 0",
    ),
    (
        "fractional-gpu-above-one",
        lambda c: _search(c, c["space"], "--gpus-per-trial", "1.5"),
        "a fraction of a GPU must be at most 1",
    ),
    (
        "cpus-above-the-host",
        lambda c: _search(c, c["space"], "--cpus-per-trial", "512"),
        "CPUs; use --cpus-per-trial",
    ),
    (
        "concurrency-below-one",
        lambda c: _search(c, c["space"], "--concurrency", "0"),
        "budget.concurrency: 0 is outside [1, inf]",
    ),
    (
        "grace-period-above-max-epochs",
        lambda c: _search(c, c["space"], "--grace-period", "5", "--max-epochs", "2"),
        "lower the grace period or raise max_epochs",
    ),
    (
        "unknown-strategy",
        lambda c: _search(c, c["space"], "--strategy", "grid-magic"),
        "unknown strategy 'grid-magic'; use one of tpe-asha",
    ),
    (
        "set-without-a-value",
        lambda c: _search(c, c["space"], "--set", "head.dropout"),
        "write KEY=VALUE",
    ),
    (
        "negative-max-failures",
        lambda c: _search(c, c["space"], "--max-failures", "-1"),
        "--max-failures must be 0 or more",
    ),
    (
        "no-space-and-no-resume",
        lambda c: ["search", "--storage", str(c["storage"])],
        "name a space",
    ),
    (
        "resume-of-a-folder-that-is-not-a-run",
        lambda c: ["search", "--resume", _empty_dir(c), "--storage", str(c["storage"])],
        "not a sentune run",
    ),
    (
        "resume-with-overrides",
        lambda c: ["search", "--resume", _fake_run(c), "--max-epochs", "9"],
        "drop the overrides (budget.max_epochs)",
    ),
    (
        "resume-of-another-space",
        lambda c: ["search", "heads", "--resume", _fake_run(c)],
        "is a run of space 'tiny', not 'heads'",
    ),
    (
        "resume-of-a-run-that-never-started",
        lambda c: ["search", "--resume", _fake_run(c), "--no-dashboard"],
        "the search never started",
    ),
    (
        "storage-under-a-file",
        lambda c: _search(c, c["space"], "--storage", str(_a_file(c) / "trials")),
        "is a file, not a folder; choose another --storage",
    ),
    (
        "storage-in-proc",
        lambda c: _search(c, c["space"], "--storage", "/proc/sentune-trials"),
        "pass a writable --storage folder",
    ),
    (
        "dashboard-on-the-network-without-auth",
        lambda c: [
            "search",
            str(c["space"]),
            "--storage",
            str(c["storage"]),
            "--dashboard-host",
            "0.0.0.0",
        ],  # fmt: skip
        "RAY_AUTH_MODE=disabled would let anyone on the network run code here",
    ),
    (
        "search-name-that-is-not-a-folder-name",
        lambda c: _search(c, c["space"], "--name", "../elsewhere"),
        "--name '../elsewhere': not a safe folder name",
    ),
    (
        "resume-with-a-name",
        lambda c: ["search", "--resume", _fake_run(c), "--name", "other"],
        "drop the overrides (name)",
    ),
    (
        "leaderboard-of-an-unknown-run-name",
        lambda c: ["leaderboard", "heads-nope", "--storage", str(c["storage"])],
        "no run 'heads-nope': not a folder, nor a run in",
    ),
    (
        "report-with-only-unfinished-runs",
        lambda c: ["report", "--storage", str(Path(_fake_run(c)).parent)],
        "no finished run in",
    ),
    (
        "leaderboard-of-a-folder-that-is-not-a-run",
        lambda c: ["leaderboard", _empty_dir(c)],
        "not a sentune run",
    ),
    (
        "leaderboard-of-an-empty-storage",
        lambda c: ["leaderboard", "--storage", _empty_dir(c)],
        "no runs in",
    ),
    ("report-of-an-empty-run", lambda c: ["report", _empty_dir(c)], "not a sentune run"),
    (
        "leaderboard-of-a-run-with-a-cut-manifest",
        lambda c: ["leaderboard", _cut_manifest(c)],
        "unreadable manifest",
    ),
    ("export-of-an-empty-run", lambda c: ["export", _empty_dir(c)], "not a sentune run"),
    (
        "storage-uri-with-credentials",
        lambda c: ["search", str(c["space"]), "--storage", "s3://AKIA1:secret@bucket/runs"],
        "the URI holds credentials; drop them and put credentials in the environment",
    ),
    (
        "storage-uri-with-a-secret-parameter",
        lambda c: ["leaderboard", "--storage", "s3://bucket/runs?region=x&secret_key=abc"],
        "the URI holds credentials",
    ),
    (
        "address-without-a-port",
        lambda c: _search(c, c["space"], "--address", "10.0.0.5"),
        "write the head's host:port",
    ),
    (
        "predict-on-a-folder-that-is-not-an-export",
        lambda c: ["predict", _empty_dir(c), "what a great day"],
        "is not a sentune export",
    ),
]


@pytest.fixture
def ctx(ray_session, tmp_path, write_tiny_space, tiny_model_dir, tiny_csv, monkeypatch):
    """The cases run with the tests' Ray already up: a search that finds bad data starts Ray
    beside its preparation and must stop it again (seconds per case); the real start and stop
    are `test_bad_data_found_while_ray_starts_is_still_one_line`'s."""
    import torch

    monkeypatch.chdir(tmp_path)  # the token cache (.cache/sentune) goes here
    # No hub: an unknown model id fails at once instead of after the hub client's retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # only read by the dashboard-host case
    folder = tmp_path / "space"
    folder.mkdir()
    return {
        "space": write_tiny_space(folder, tiny_model_dir, tiny_csv),
        "tmp": tmp_path,
        "storage": tmp_path / "trials",
    }


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    # Ray workers of other tests in this process may print to stderr; keep sentune's lines.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("\x1b")]
    lines = [line for line in lines if not line.startswith("(")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(ctx, capsys, argv, message):
    assert cli.main(argv(ctx)) == 2
    line = _one_error_line(capsys)
    assert line.startswith("sentune: error: ")
    assert message in line
    storage = ctx["storage"]
    assert not storage.exists() or not any(storage.iterdir())


def test_disk_full_while_writing_the_manifest_leaves_no_run(ctx, capsys, monkeypatch):
    real_write_bytes = Path.write_bytes  # what the run's atomic writes use

    def full_disk(self, *args, **kwargs):
        if self.name.startswith(runs.MANIFEST):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert cli.main(["search", str(ctx["space"]), "--storage", str(ctx["storage"])]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("sentune: error: no space left on the device writing ")
    assert "free some space or pass --storage on a larger disk" in line
    assert not any(ctx["storage"].iterdir())


def test_search_name_that_is_taken_is_refused_before_any_work(ctx, capsys):
    taken = ctx["storage"] / "mine"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("someone's results")
    argv = ["search", str(ctx["space"]), "--storage", str(ctx["storage"]), "--name", "mine"]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert "--name 'mine':" in line and "already exists" in line
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_bad_data_found_while_ray_starts_is_still_one_line(ctx):
    """In a fresh process, as a user runs it: the data is found bad while Ray starts beside
    it; the command still says one line, exits 2 and leaves no run folder."""
    import subprocess
    import sys

    bad = _space(ctx, data=_data(ctx, _texts().rename(columns={"text": "body"})))
    done = subprocess.run(
        [sys.executable, "-m", "sentune.cli", *_search(ctx, bad)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ctx["tmp"],
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sentune: error: "), done.stderr
    assert "no text column" in lines[0]
    assert not ctx["storage"].exists() or not any(ctx["storage"].iterdir())
