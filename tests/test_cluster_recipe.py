"""docs/cluster.md: its KubeRay manifest is a RayCluster with a GPU worker group, token auth and
S3 credentials from secrets, and its `ray job submit -- sentune …` commands name real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from sentune import cli, space

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def _manifest() -> dict:
    (block,) = _blocks("yaml")
    return yaml.safe_load(block)


def _env(container: dict) -> tuple[dict, list[str]]:
    env = {item["name"]: item for item in container.get("env", [])}
    secrets = [item["secretRef"]["name"] for item in container.get("envFrom", [])]
    return env, secrets


def test_the_manifest_is_a_ray_cluster_with_gpu_workers_token_auth_and_s3():
    manifest = _manifest()
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    (workers,) = spec["workerGroupSpecs"]
    worker = workers["template"]["spec"]["containers"][0]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert int(workers["replicas"]) >= 1
    assert head["image"] == worker["image"]
    for container in (head, worker):
        env, secrets = _env(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "sentune-ray-token"
        assert secrets == ["sentune-s3"]
    # The dashboard (and its job API) stays on loopback; kubectl port-forward reaches it.
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert spec["rayVersion"].split(".")[:2] == ["2", "60"]


def _submitted() -> list[list[str]]:
    """The sentune command lines after `ray job submit … --`."""
    commands = []
    for line in DOC.read_text().splitlines():
        if line.startswith("ray job submit"):
            words = shlex.split(line)
            assert words[words.index("--") + 1] == "sentune", line
            commands.append(words[words.index("--") + 2 :])
    return commands


def test_the_submitted_commands_use_real_flags_and_object_storage():
    commands = _submitted()
    assert len(commands) == 2  # a search and its resume
    parser = cli._parser()
    for argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert not extra, f"not sentune flags: {extra}"
        assert args.func is cli.run_search
        assert args.address == "auto" and args.storage.startswith("s3://")
    search, resume = (parser.parse_known_args(argv)[0] for argv in commands)
    assert space.find_space(search.space).is_file()
    assert search.gpus_per_trial > 0 and resume.resume is not None


def test_the_kubernetes_secrets_named_by_the_manifest_are_created():
    text = DOC.read_text()
    for secret in ("sentune-ray-token", "sentune-s3"):
        assert f"kubectl create secret generic {secret}" in text
