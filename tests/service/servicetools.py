"""Helpers of the service tests (not conftest.py, so modules can import them by name): API
clients per user and the waits on job states."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from service.core.auth import hash_token
from service.core.states import TERMINAL
from service.stack.embedded import Stack, StackConfig, free_port
from service.stack.mlflow_server import service_secret

HERE = Path(__file__).parent
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}


def stand_in_stack(root: Path, data_roots: list[Path], **env: str) -> Stack:
    """An embedded stack (real Ray, MLflow and API, not started yet) whose jobs are the
    stand-in (``fake_job.py``: the job file read, the run checked and logged to, nothing
    trained), on the test configs, with alice and bob as users and the reconciler polling every
    0.5 s; ``env`` adds or replaces settings."""
    users = ";".join(f"{hash_token(t)} {n} user" for n, t in TOKENS.items())
    return Stack(StackConfig(
        data_dir=root / "state", api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_JOB_MODULE": str(HERE / "fake_job.py"),
                   "BCKD_CONFIGS_DIR": str(HERE / "configs"),
                   "BCKD_DATA_ROOTS": json.dumps([str(p) for p in data_roots]),
                   "BCKD_TOKENS": users, "BCKD_RECONCILE_INTERVAL_S": "0.5", **env}))


def service_tracking(stack: Stack):
    """The stack's MLflow as the service reads it (its admin login, its seals): to make an
    owner's experiment as a job's run does (``Tracking.own_experiment``) and read any run."""
    from service.adapters.mlflow_users import MlflowUsers
    from service.adapters.tracking import Tracking

    uri = stack.mlflow_admin_uri
    return Tracking(uri, stack.mlflow_url, MlflowUsers(uri, stack.mlflow_admin,
                                                       service_secret(stack.data_dir)))


def toy_dataset(root: Path) -> Path:
    """``root/datasets/toy``: a data root with an (empty) val annotation file, enough for the
    validation of a request; jobs on it are the stand-in's, which read no image."""
    toy = root / "datasets" / "toy"
    (toy / "annotations").mkdir(parents=True)
    (toy / "annotations" / "instances_val.json").write_text("{}")
    return toy


def client(stack: Stack, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=stack.api_url, headers=headers, timeout=60)


def wait_for(c: httpx.Client, job_id: str, pred, timeout: float = 90.0,
             poll_s: float = 0.3) -> dict:
    """The job once ``pred(job)`` holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        r = c.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200:
            job = r.json()
            if pred(job):
                return job
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} never got there: {job}")


def finished(job: dict) -> bool:
    return job["status"] in TERMINAL


def wait_all(c: httpx.Client, ids: list[str], timeout: float = 900) -> list[dict]:
    """Every job of ``ids`` once all have ended (a real training takes minutes here)."""
    return [wait_for(c, i, finished, timeout=timeout, poll_s=1.0) for i in ids]


def alive(pid: int) -> bool:
    """Whether a process of this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
