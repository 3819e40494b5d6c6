"""A search whose every trial failed ends `sentune search` with one line that names the first
failure's cause and a non-zero exit code, without confirming, ranking or reporting anything."""

from __future__ import annotations

import functools

import pytest

from sentune import runs, search

pytestmark = pytest.mark.slow


# A factory: Ray's pickler sends a nested function by value, so the trial workers need not
# import this test module.
def _broken_trial():
    """A trial hook: every attempt fails after its first evaluation."""

    def hook(metrics, resumed):
        raise ValueError("injected failure: tokenizer and model disagree")

    return hook


def test_a_search_whose_every_trial_failed_exits_non_zero_with_the_cause(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, monkeypatch, capsys
):
    from sentune import cli

    # The command line has no fault injection: its options get the trial hook here.
    options = functools.partial(search.SearchOptions, trial_hook=_broken_trial())
    monkeypatch.setattr(search, "SearchOptions", options)
    monkeypatch.chdir(tmp_path)  # the token cache (.cache/sentune) goes there
    space_file = write_tiny_space(
        tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=2, confirm_seeds=2
    )
    storage, analysis = tmp_path / "trials", tmp_path / "analysis"
    argv = [
        "search", str(space_file), "--storage", str(storage), "--analysis", str(analysis),
        "--precision", "fp32", "--no-dashboard",
        "--max-failures", "0", "--name", "broken",
    ]  # fmt: skip
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("sentune: error:")]
    assert len(errors) == 1, err
    assert "all 1 trial(s) of broken failed; the first (" in errors[0]
    assert "injected failure: tokenizer and model disagree" in errors[0]
    assert f"sentune search --resume {storage / 'broken'}" in errors[0]
    # Nothing is made of errors alone: no confirmation over seeds, leaderboard or report.
    run_dir = storage / "broken"
    assert [runs.read_trial_status(d)["status"] for d in runs.trial_dirs(run_dir)] == [runs.ERROR]
    assert not runs.confirm_dir(run_dir).exists()
    assert not analysis.exists() and "Leaderboard of" not in out
