"""`--address`: checked before Ray joins it. A malformed or unreachable address, and a
token-protected head joined without the token, end in one line and exit code 2; with
`RAY_AUTH_MODE=token` and the head's token, Ray joins.

The head is a real one on 127.0.0.1 (`ray start --head`, token auth on); it is stopped by
process id: `ray stop` would end every Ray process on the machine."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sentune import search
from sentune.errors import ResourceError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address", ["bad", "10.0.0.5", "host:0", "host:70000", "a b:6379"])
def test_a_malformed_address_says_the_form(address):
    with pytest.raises(ResourceError, match="write the head's host:port"):
        search.check_address(address)


def test_an_unreachable_address_says_so():
    port = _free_port()  # closed again: nothing listens there
    with pytest.raises(ResourceError, match=f"cannot reach 127.0.0.1:{port}"):
        search.check_address(f"127.0.0.1:{port}")


@pytest.mark.parametrize("address", [None, "auto", "local"])
def test_auto_and_local_are_left_to_ray(address):
    search.check_address(address)  # no probe: Ray finds (or starts) the cluster itself


def _head_env(ray_tmp: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_TMPDIR=str(ray_tmp),  # its session files stay in the test's own folder
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every service on 127.0.0.1
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _stop_processes_of(ray_tmp: Path) -> None:
    """SIGKILL every process whose command line names `ray_tmp` (the head's), and their
    children, by process id."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(ray_tmp) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    for proc in list(found):
        try:
            found += proc.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for proc in found:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def token_head():
    """A Ray head on 127.0.0.1 that wants a token: (address, token, its environment)."""
    # Short: Ray's socket paths under it must stay below the 107-byte limit.
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    port, token = _free_port(), secrets.token_hex(16)
    env = _head_env(ray_tmp, token)
    ray = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run(
            [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", "1", "--include-dashboard=false"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield f"127.0.0.1:{port}", token, env
    finally:
        _stop_processes_of(ray_tmp)
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_token_protected_head_without_the_token_says_how_to_get_it(
    token_head, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    address, token, head_env = token_head
    env = {k: v for k, v in head_env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=1)
    storage = tmp_path / "trials"
    result = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "search", str(space_file), "--address", address,
         "--storage", str(storage), "--no-dashboard"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"sentune: error: --address {address}: the cluster wants")
    for fix in ("ray get-auth-token", "RAY_AUTH_MODE=token", "~/.ray/auth_token", "RAY_AUTH_TOKEN"):
        assert fix in lines[0]
    assert not storage.exists() or not any(storage.iterdir())  # nothing half-written

    # A wrong token is told apart from none.
    wrong = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    check = [
        sys.executable,
        "-c",
        f"from sentune import search; search.check_address({address!r})",
    ]
    refused = subprocess.run(check, env=wrong, capture_output=True, text=True, timeout=60)
    assert "refused this machine's Ray token" in refused.stderr

    # With the head's token, the check passes and Ray joins the cluster.
    joined = subprocess.run(
        [sys.executable, "-c",
         "import ray; from sentune import search\n"
         f"options = search.SearchOptions(address={address!r})\n"
         "search.check_address(options.address)\n"
         "with search.ray_session(options):\n"
         "    print('CPUS', ray.cluster_resources().get('CPU'))"],
        env=head_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "CPUS 1.0" in joined.stdout
