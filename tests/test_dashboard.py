"""`sentune dashboard`: optuna-dashboard on a run's journal, read over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_analysis import write_manifest

from sentune import cli, runs
from sentune.report import dashboard

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")


def _study(run_dir: Path, *, create: bool = False):
    """The run's study as `search.JournalOptunaSearch` writes it (study name = run name)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(runs.optuna_journal(run_dir))))
    if create:
        return optuna.create_study(storage=storage, study_name=run_dir.name, direction="maximize")
    return optuna.load_study(storage=storage, study_name=run_dir.name)


def _trial(study, scores: list[float], state, *, ray_id: str):
    trial = study.ask({"head.dropout": optuna.distributions.FloatDistribution(0.0, 0.5)})
    trial.set_user_attr(runs.RAY_TRIAL_ID_ATTR, ray_id)
    for epoch, score in enumerate(scores, start=1):
        trial.report(score, epoch)
    if state is not None:
        study.tell(trial, max(scores) if state == optuna.trial.TrialState.COMPLETE else None, state)


@pytest.fixture
def journal_run(tmp_path) -> Path:
    """A run folder whose journal holds a finished trial and one ASHA stopped after epoch 1."""
    run_dir = tmp_path / "trials" / "synthetic-20260101-000000"
    write_manifest(run_dir, optuna_study=run_dir.name)
    study = _study(run_dir, create=True)
    _trial(study, [0.5, 0.6, 0.7], optuna.trial.TrialState.COMPLETE, ray_id="aaaa0001")
    _trial(study, [0.3], optuna.trial.TrialState.PRUNED, ray_id="aaaa0002")
    return run_dir


@pytest.fixture
def served(journal_run):
    server = dashboard.make_dashboard_server(journal_run, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield journal_run, dashboard.url(server).removesuffix("dashboard/")
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _trials(base: str, study_id: int) -> list[dict]:
    return _get(f"{base}api/studies/{study_id}")["trials"]


def test_dashboard_serves_the_runs_study_live(served):
    run_dir, base = served
    assert base.startswith("http://127.0.0.1:")
    (study,) = _get(f"{base}api/studies")["study_summaries"]
    assert study["study_name"] == run_dir.name and study["directions"] == ["maximize"]

    trials = _trials(base, study["study_id"])
    assert [t["state"] for t in trials] == ["Complete", "Pruned"]
    steps = [[(v["step"], v["value"]) for v in t["intermediate_values"]] for t in trials]
    assert steps == [[(1, 0.5), (2, 0.6), (3, 0.7)], [(1, 0.3)]]
    assert trials[0]["values"] == [0.7]
    assert {a["key"]: a["value"] for a in trials[1]["user_attrs"]} == {
        runs.RAY_TRIAL_ID_ATTR: "aaaa0002"
    }

    # The search goes on writing while the dashboard serves: a new trial shows once
    # optuna-dashboard's trial cache (2 s for a small study) expires.
    _trial(_study(run_dir), [0.4], None, ray_id="aaaa0003")
    deadline = time.monotonic() + 15
    while len(trials := _trials(base, study["study_id"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [t["state"] for t in trials] == ["Complete", "Pruned", "Running"]
    assert trials[2]["intermediate_values"] == [{"step": 1, "value": 0.4}]

    with urllib.request.urlopen(f"{base}dashboard/", timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read().lower()


@pytest.mark.parametrize("method", ["DELETE", "POST", "PUT"])
def test_dashboard_is_read_only(served, method):
    run_dir, base = served
    (study,) = _get(f"{base}api/studies")["study_summaries"]
    journal = runs.optuna_journal(run_dir).read_bytes()
    paths = {
        "DELETE": f"api/studies/{study['study_id']}",
        "POST": f"api/studies/{study['study_id']}/rename",
        "PUT": f"api/studies/{study['study_id']}/note",
    }
    request = urllib.request.Request(
        base + paths[method], data=b"{}" if method != "DELETE" else None, method=method
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405
    assert runs.optuna_journal(run_dir).read_bytes() == journal
    assert len(_get(f"{base}api/studies")["study_summaries"]) == 1


def test_cli_takes_the_latest_run_even_unfinished_and_prints_the_url(
    journal_run, monkeypatch, capsys
):
    assert not runs.is_finished(journal_run)  # 2 trials of a budget of 12

    def interrupted(server, *args, **kwargs):
        assert server.server_address[0] == "127.0.0.1"
        raise KeyboardInterrupt

    monkeypatch.setattr(dashboard._Server, "serve_forever", interrupted)
    code = cli.main(["dashboard", "--storage", str(journal_run.parent), "--port", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    assert f"using {journal_run} (latest run)" in err
    assert f"Optuna dashboard of {journal_run}: http://127.0.0.1:" in out
    assert "/dashboard/" in out and "Ctrl-C to stop" in out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sentune: error: ")
    return err[0]


@pytest.mark.parametrize("searched", [["head.dropout"], []])
def test_run_without_journal_is_one_line_exit_2(tmp_path, capsys, searched):
    run_dir = tmp_path / "trials" / "old-20250101-000000"
    write_manifest(run_dir, searched=searched)  # no optuna_study: an older sentune
    assert cli.main(["dashboard", str(run_dir)]) == 2
    line = _error_line(capsys)
    assert str(run_dir) in line and runs.OPTUNA_JOURNAL in line and "sentune search" in line
    assert ("searched no parameter" in line) == (searched == [])
    assert not runs.optuna_journal(run_dir).exists()  # nothing created by looking


def test_not_a_run_and_no_runs_are_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["dashboard", str(tmp_path)]) == 2
    assert "not a sentune run" in _error_line(capsys)
    assert cli.main(["dashboard", "--storage", str(tmp_path / "none")]) == 2
    assert "no runs in" in _error_line(capsys)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.77.0.1", "example.org"])
def test_a_host_off_loopback_is_refused(journal_run, capsys, host):
    assert cli.main(["dashboard", str(journal_run), "--host", host]) == 2
    line = _error_line(capsys)
    assert f"--host {host}" in line and "127.0.0.1" in line


def test_a_taken_port_is_one_line_exit_2(journal_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["dashboard", str(journal_run), "--port", str(port)]) == 2
    line = _error_line(capsys)
    assert f"--port {port}" in line and "--port 0" in line


@pytest.mark.slow
def test_a_real_search_is_served_and_has_tensorboard_files(tiny_run):
    """The journal `sentune search` writes is what the dashboard shows; Ray Tune writes the
    TensorBoard event files the README points `tensorboard --logdir` at."""
    server = dashboard.make_dashboard_server(tiny_run, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = dashboard.url(server).removesuffix("dashboard/")
        (study,) = _get(f"{base}api/studies")["study_summaries"]
        trials = _trials(base, study["study_id"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert study["study_name"] == tiny_run.name
    served = {
        {a["key"]: a["value"] for a in t["user_attrs"]}[runs.RAY_TRIAL_ID_ATTR]: t for t in trials
    }
    assert set(served) == {d.name for d in runs.trial_dirs(tiny_run)}
    states = {t["state"] for t in trials}
    assert states <= {"Complete", "Pruned"} and "Pruned" in states
    for trial in trials:
        assert trial["intermediate_values"], trial["number"]
    for trial_dir in runs.trial_dirs(tiny_run):
        assert list(trial_dir.glob("events.out.tfevents.*")), trial_dir
    assert runs.read_manifest(tiny_run).optuna_study == tiny_run.name
