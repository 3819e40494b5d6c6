"""Machine facts: where and with what a run is made (git commit, package versions, host, CPU,
devices) and what this CPU can do (native bf16).

The ground floor: the run manifest (`runs`) records these facts and a trial (`train`) asks the
CPU's abilities; neither knows the other, and this module imports nothing of sentune.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

_VERSIONED = (
    "sentune",
    "torch",
    "transformers",
    "accelerate",
    "ray",
    "optuna",
    "datasets",
    "scikit-learn",
    "numpy",
    "pandas",
)


def git_commit() -> str | None:
    """The commit of the sentune checkout (with `-dirty` for uncommitted changes), if any."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=here,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    """Python's version and those of the packages that shape a result."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def host_description() -> dict[str, Any]:
    """The host's name, platform and CPU count."""
    return {"name": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()}


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo`'s "model name", e.g. "AMD EPYC 9454 48-Core
    Processor"); elsewhere what `platform` knows (which may be only the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_description() -> dict[str, Any]:
    """The CPU (and whether it has native bf16) and the CUDA GPUs, if any."""
    import torch

    device: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_bf16": cpu_has_bf16(),
    }
    if torch.cuda.is_available():
        device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (emulated bf16 is slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the `with` block, then put back what was there (unset
    where it was unset)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
