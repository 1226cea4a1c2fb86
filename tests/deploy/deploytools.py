"""Readers shared by the deployment tests: the compose file, the env-file examples, the
Kubernetes manifests, the Dockerfile's stages and the entrypoint's dry run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SHARED_MOUNTS = {"/app/data", "/app/work_dirs", "/var/lib/bckd"}  # API and every Ray node
SETTINGS_ENV = {f"BCKD_{name.upper()}" for name in Settings.model_fields}


@cache
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def env_example(name: str) -> dict[str, str]:
    """``docker/env/<name>.env.example`` as a dict (compose's env-file syntax: KEY=VALUE)."""
    out = {}
    for line in (DOCKER / "env" / f"{name}.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{name}.env.example: {line!r} is not KEY=VALUE"
            out[key.strip()] = value
    return out


def service_env(service: str) -> dict[str, str]:
    """A compose service's container environment: its env files, then ``environment``."""
    svc = compose()["services"][service]
    env: dict[str, str] = {}
    for path in svc.get("env_file", []):
        env.update(env_example(Path(path).name.removesuffix(".env")))
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    return env


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", value)


@cache
def manifests() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def manifest(kind: str, name: str) -> dict:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} manifests"
    return found[0]


def pod_specs() -> dict[str, dict]:
    """Every pod template of the manifests by a readable name (``RayCluster/bckd/head``...)."""
    out = {}
    for d in manifests():
        if d["kind"] == "Kustomization":
            continue
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet"):
            out[name] = d["spec"]["template"]["spec"]
        elif d["kind"] == "RayCluster":
            out[f"{name}/head"] = d["spec"]["headGroupSpec"]["template"]["spec"]
            for group in d["spec"]["workerGroupSpecs"]:
                out[f"{name}/{group['groupName']}"] = group["template"]["spec"]
    return out


def dockerfile_stages() -> list[dict]:
    """``[{"from": ..., "name": ..., "lines": [instruction, ...]}]``; continuation lines joined,
    comments dropped; ``args`` are the ARGs declared before the first FROM."""
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                          if not line.lstrip().startswith("#")))
    stages: list[dict] = [{"from": None, "name": "<global>", "lines": []}]
    for line in filter(None, (x.strip() for x in text.splitlines())):
        if line.upper().startswith("FROM "):
            parts = line.split()
            stages.append({"from": parts[1], "name": parts[3] if len(parts) > 3 else "",
                           "lines": []})
        else:
            stages[-1]["lines"].append(line)
    return stages


def entrypoint_command(role: str, **env: str) -> list[str]:
    """The argv the entrypoint would exec for ``role`` (``ENTRYPOINT_DRY_RUN=1``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NODE_", "MLFLOW_"))}
    proc = subprocess.run(["bash", str(ENTRYPOINT), *role.split()], capture_output=True,
                          text=True, timeout=30, env={**base, "ENTRYPOINT_DRY_RUN": "1", **env})
    assert proc.returncode == 0, f"{role}: {proc.stderr}"
    return shlex.split(proc.stdout)


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} not in {argv}"
    return argv[argv.index(name) + 1]
