"""The API in the test's own process (FastAPI's ``TestClient``, the real app and database), for
tests that must hold one of its calls to Ray or MLflow at a chosen moment: the stack's uvicorn
runs in another process, where no test can reach in.

``HeldRay`` stands in for Ray only because a real Ray cannot be paused in the middle of a call:
it holds one named call on a ``threading.Event`` until the test lets it go, and records what it
was asked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from service.adapters.db import Job, session_scope
from service.adapters.ray_jobs import UnknownJob
from service.api.deps import get_ray
from service.core.auth import hash_token
from service.settings import Settings, get_settings
from tests.service.servicetools import TOKENS

HERE = Path(__file__).parent

WAIT_S = 30  # a held call never waits longer: a broken test fails instead of hanging


class HeldRay:
    """Ray Jobs as the service calls it; ``hold`` names the call whose first use is held until
    ``release``."""

    def __init__(self, hold: str | None = None):
        self.hold, self.entered, self.release = hold, threading.Event(), threading.Event()
        self.calls: list[str] = []
        self.jobs: dict[str, str] = {}  # submission id -> Ray status
        self.stopped: list[str] = []

    def _maybe_hold(self, name: str) -> None:
        self.calls.append(name)
        if name == self.hold and not self.entered.is_set():  # the first such call only
            self.entered.set()
            assert self.release.wait(WAIT_S), f"{name} was never released"

    def capacity(self, groups=(), max_age_s: float = 30.0):
        from bckd.runtime.cluster import Capacity

        self._maybe_hold("capacity")
        return Capacity(nodes=({"CPU": 4.0, "GPU": 0.0, "memory": 8e9},))

    def submit(self, sid, entrypoint, env, metadata, reservation) -> bool:
        self._maybe_hold("submit")
        self.jobs.setdefault(sid, "RUNNING")
        return True

    def stop(self, sid) -> bool:
        if sid not in self.jobs:
            raise UnknownJob(sid)
        self.stopped.append(sid)
        self.jobs[sid] = "STOPPED"
        return True

    def info(self, sid):
        if sid not in self.jobs:
            raise UnknownJob(sid)
        return SimpleNamespace(status=self.jobs[sid], start_time=None, end_time=None,
                               message=None, error_type=None, driver_exit_code=None)

    def logs(self, sid) -> str:
        return ""


def body(toy, **kw) -> dict:
    return {"kind": "train", "config": "toy_teacher", "data_root": str(toy), **kw}


def row(settings, job_id: str) -> Job:
    for s in session_scope(settings):
        return s.get(Job, job_id)


def until(pred, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := pred()):
            return got
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


@contextmanager
def inprocess_api(monkeypatch: pytest.MonkeyPatch, root: Path, ray, data_roots: list[Path],
                  **env: str) -> Iterator[tuple[TestClient, Settings]]:
    """alice's client of an API whose Ray is ``ray`` (a ``RayJobs``, real or standing in);
    its reconciler is off: a test runs ``reconcile_once`` itself, at the moment it chooses."""
    users = ";".join(f"{hash_token(t)} {n} user" for n, t in TOKENS.items())
    values = {"BCKD_DATA_DIR": str(root / "state"), "BCKD_TOKENS": users,
              "BCKD_CONFIGS_DIR": str(HERE / "configs"),
              "BCKD_JOB_MODULE": str(HERE / "fake_job.py"),
              "BCKD_DATA_ROOTS": json.dumps([str(p) for p in data_roots]),
              "BCKD_RUN_RECONCILER": "false",
              # the API makes each job's MLflow run: a real store, in the test's directory
              "BCKD_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}", **env}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    from service.main import create_app

    app = create_app()
    app.dependency_overrides[get_ray] = lambda: ray
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKENS['alice']}"}) as c:
            yield c, get_settings()
    finally:
        get_settings.cache_clear()
