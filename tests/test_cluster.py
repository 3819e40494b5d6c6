"""A real two-node Ray cluster on this machine: each node in its own network namespace (as root),
a search whose trials land on both, and the worker node killed halfway.

Traffic stays on the test's own hosts (10.77.0.1 and 10.77.0.2 on a veth pair). Nodes are
stopped by process id: `ray stop` would end every Ray process on the machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sentune import analysis, runs

pytestmark = pytest.mark.slow

HEAD, WORKER = "sentune-head", "sentune-worker"
HEAD_IP, WORKER_IP, PORT = "10.77.0.1", "10.77.0.2", 6380


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = "sentune-probe"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return False
    _ip("netns", "del", probe, check=False)
    return True


def _namespace_pids(namespace: str) -> list[int]:
    out = _ip("netns", "pids", namespace, check=False).stdout
    return [int(pid) for pid in out.split()]


def _kill_namespace(namespace: str) -> None:
    for pid in _namespace_pids(namespace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def two_namespaces():
    if not _netns_available():
        pytest.skip("needs root and `ip netns`")
    for ns in (HEAD, WORKER):
        _ip("netns", "del", ns, check=False)
    # Short: Ray's socket paths under it must stay below the 107-byte limit.
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    try:
        _ip("netns", "add", HEAD)
        _ip("netns", "add", WORKER)
        _ip("link", "add", "st-head", "type", "veth", "peer", "name", "st-worker")
        _ip("link", "set", "st-head", "netns", HEAD)
        _ip("link", "set", "st-worker", "netns", WORKER)
        for ns, dev, ip in ((HEAD, "st-head", HEAD_IP), (WORKER, "st-worker", WORKER_IP)):
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield ray_tmp
    finally:
        for ns in (WORKER, HEAD):
            _kill_namespace(ns)
        time.sleep(1)
        for ns in (WORKER, HEAD):
            _kill_namespace(ns)
            _ip("netns", "del", ns, check=False)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray_env(temp_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        # Ray's sessions and its "current cluster" file stay in the test's own folder: in
        # /tmp/ray they would make a later `ray.init()` on this machine try to join this cluster.
        RAY_TMPDIR=str(temp_dir),
        RAY_AUTH_MODE="token",  # the same ~/.ray/auth_token for both nodes and the driver
        RAY_USAGE_STATS_ENABLED="0",
        # Notice the dead node within seconds rather than half a minute.
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
        PYTHONUNBUFFERED="1",
    )
    return env


def _in(namespace: str, *command: str, **kwargs):
    return subprocess.run(["ip", "netns", "exec", namespace, *command], timeout=120, **kwargs)


def _node_ips(run_dir: Path) -> dict[str, set[str]]:
    ips = {}
    for path in run_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ips[path.parent.name] = {row.get("node_ip") for row in rows}
    return ips


def test_search_survives_a_lost_node(
    two_namespaces, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    ray = str(Path(sys.executable).with_name("ray"))
    env = _ray_env(two_namespaces)
    _in(
        HEAD, ray, "start", "--head", "--node-ip-address", HEAD_IP, "--port", str(PORT),
        "--num-cpus", "1", "--include-dashboard=false", env=env, check=True, capture_output=True,
    )  # fmt: skip
    _in(
        WORKER, ray, "start", "--address", f"{HEAD_IP}:{PORT}", "--node-ip-address", WORKER_IP,
        "--num-cpus", "1", env=env, check=True, capture_output=True,
    )  # fmt: skip
    space_file = write_tiny_space(
        tmp_path, tiny_model_dir, tiny_csv, trials=4, max_epochs=3, concurrency=2
    )
    storage = tmp_path / "trials"  # every node sees it: one machine, one filesystem
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        ["ip", "netns", "exec", HEAD, sys.executable, "-m", "sentune.cli", "search",
         str(space_file), "--address", f"{HEAD_IP}:{PORT}", "--storage", str(storage),
         "--precision", "fp32", "--strategy", "random-fifo", "--max-failures", "2"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        killed = False
        while driver.poll() is None and time.monotonic() < deadline:
            found = list(storage.glob("*/"))
            if found and not killed:
                on_worker = [t for t, ips in _node_ips(found[0]).items() if WORKER_IP in ips]
                if on_worker:
                    _kill_namespace(WORKER)  # the worker node dies mid-trial
                    killed = True
            time.sleep(0.5)
        returncode = driver.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    output = (tmp_path / "driver.log").read_text()
    assert killed, output[-3000:]
    assert returncode == 0, output[-3000:]
    (run_dir,) = storage.glob("*/")
    ips = _node_ips(run_dir)
    assert set().union(*ips.values()) >= {HEAD_IP, WORKER_IP}
    statuses = {
        p.parent.name: json.loads(p.read_text())["status"]
        for p in run_dir.glob(f"*/{runs.TRIAL_STATUS}")
    }
    assert len(statuses) == 4 and set(statuses.values()) <= {"completed", "error"}
    assert "retrying" not in statuses.values()
    table = analysis.leaderboard(runs.open_run(run_dir))
    assert len(table) == 4
