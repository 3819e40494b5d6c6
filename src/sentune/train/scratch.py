"""A trial's scratch folder in the system temp dir, removed even when its process is killed.

A trial writes its checkpoints to a scratch folder before handing them to `report` (Ray Tune
copies them into the run). Ray ends a trial that ASHA stopped, or one still running when the
search ends, by ending its worker process: the trial's own clean-up never runs, and each such
folder (a model's weights and optimizer state, 0.3-1 GB for MiniLM, more for BERT-base) would
stay in /tmp for good. So the process that makes a folder holds a lock on a file inside it for
as long as it uses the folder, and the kernel drops that lock when the process ends, however it
ends. `sweep` removes the folders whose lock is free: each trial sweeps its node as it starts,
and a search sweeps once Ray has stopped. Ray-free; the folders are node-local, as is the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

PREFIX = "sentune-trial-"
#: A folder is made under this name, locked, then renamed to its `PREFIX` name: a sweep never
#: sees a folder of a live process unlocked.
_MAKING_PREFIX = ".sentune-making-"
LOCK_FILE = ".owner.lock"
#: A folder with no lock file (made by a sentune before the lock) is removed once it is this old.
UNLOCKED_AGE_S = 24 * 3600.0

#: The folders this process made and still holds: path -> the open lock file.
_held: dict[Path, int] = {}


def make(parent: str | Path | None = None) -> Path:
    """A new scratch folder (under `parent`, default the system temp dir), locked by this process
    until `release` or the process's end."""
    making = Path(tempfile.mkdtemp(prefix=_MAKING_PREFIX, dir=parent))
    fd = os.open(making / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    path = making.with_name(PREFIX + making.name.removeprefix(_MAKING_PREFIX))
    os.rename(making, path)  # mkdtemp's random name: a folder of the same name is not expected
    _held[path] = fd
    return path


def release(path: Path) -> None:
    """Remove a folder made by `make` and drop its lock."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def sweep(parent: str | Path | None = None) -> int:
    """Remove the scratch folders under `parent` (default the system temp dir) whose process has
    ended; returns how many. A folder another user owns is skipped."""
    now = time.time()
    removed = 0
    for path in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        if path in _held:
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            if now - info.st_mtime >= UNLOCKED_AGE_S:
                removed += _remove(path)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its process still runs
            continue
        try:
            removed += _remove(path)
        finally:
            os.close(fd)
    return removed


def _remove(path: Path) -> bool:
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
