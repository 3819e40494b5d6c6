"""Scratch folders: kept while their process runs, swept once it has ended however it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sentune.train import scratch

#: A process that makes a scratch folder under argv[1], writes into it, says where, and waits.
_OWNER = """
import sys, time
from sentune.train import scratch
path = scratch.make(sys.argv[1])
(path / "model.safetensors").write_bytes(b"0" * 4096)
print(path, flush=True)
time.sleep(600)
"""


def _start_owner(parent: Path) -> tuple[subprocess.Popen, Path]:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(parent)], stdout=subprocess.PIPE, text=True
    )
    return owner, Path(owner.stdout.readline().strip())


def test_a_killed_process_s_folder_is_swept_and_a_live_one_s_is_kept(tmp_path):
    killed, killed_dir = _start_owner(tmp_path)
    alive, alive_dir = _start_owner(tmp_path)
    try:
        assert killed_dir.is_dir() and alive_dir.is_dir()
        assert scratch.sweep(tmp_path) == 0  # both processes run
        killed.send_signal(signal.SIGKILL)  # as Ray ends a stopped trial's worker: no clean-up
        killed.wait()
        assert (killed_dir / "model.safetensors").exists()
        assert scratch.sweep(tmp_path) == 1
        assert not killed_dir.exists()
        assert (alive_dir / "model.safetensors").exists()
    finally:
        alive.kill()
        killed.kill()
        alive.wait()
    assert scratch.sweep(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_this_process_s_own_folders_are_kept_until_released(tmp_path):
    path = scratch.make(tmp_path)
    assert path.name.startswith(scratch.PREFIX)
    assert scratch.sweep(tmp_path) == 0
    scratch.release(path)
    assert not path.exists()
    assert path not in scratch._held


def test_a_folder_is_locked_before_it_takes_its_swept_name(tmp_path):
    path = scratch.make(tmp_path)
    try:
        # Another process's sweep sees it locked (this process's own sweep knows it anyway).
        sweep = f"from sentune.train import scratch; scratch.sweep({str(tmp_path)!r})"
        subprocess.run([sys.executable, "-c", sweep], check=True)
        assert path.is_dir()
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
    finally:
        scratch.release(path)


def test_unlocked_folders_go_only_when_old_and_nothing_else_is_touched(tmp_path):
    young = tmp_path / f"{scratch.PREFIX}young"  # as an older sentune made them: no lock file
    stale = tmp_path / f"{scratch.PREFIX}stale"
    for folder in (young, stale):
        folder.mkdir()
        (folder / "out").mkdir()
    day_ago = time.time() - scratch.UNLOCKED_AGE_S - 1
    os.utime(stale, (day_ago, day_ago))
    other = tmp_path / "sentune-cache"
    other.mkdir()
    target = tmp_path / "kept"
    target.mkdir()
    link = tmp_path / f"{scratch.PREFIX}link"
    link.symlink_to(target)
    os.utime(link, (day_ago, day_ago), follow_symlinks=False)

    assert scratch.sweep(tmp_path) == 1
    assert not stale.exists()
    assert young.is_dir() and other.is_dir() and target.is_dir() and link.is_symlink()
