"""The reconciler's decisions, with Ray and MLflow replaced by fakes (fast, no cluster)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from service.db import migrate, session_scope
from service.models import Job, JobStatus, utcnow
from service.orchestrator import reconcile_once
from service.ray_jobs import UnknownJob
from service.settings import Settings


class FakeRay:
    def __init__(self):
        self.jobs: dict[str, str] = {}  # submission id -> status
        self.submits: list[str] = []
        self.stopped: list[str] = []
        self.logs_text = ""

    def submit(self, sid, entrypoint, env, metadata):
        self.submits.append(sid)
        if sid in self.jobs:
            return False
        self.jobs[sid] = "PENDING"
        return True

    def info(self, sid):
        if sid not in self.jobs:
            raise UnknownJob(sid)
        return SimpleNamespace(status=self.jobs[sid], start_time=None, end_time=None,
                               message="msg")

    def stop(self, sid):
        self.stopped.append(sid)
        return True

    def logs(self, sid):
        return self.logs_text


class FakeTracking:
    def __init__(self):
        self.terminated: list[tuple[str, str]] = []
        self.tagged: list[tuple[str, str]] = []

    def terminate(self, run_id, status="KILLED"):
        self.terminated.append((run_id, status))

    def tag_job(self, run_id, job_id):
        self.tagged.append((run_id, job_id))


@pytest.fixture
def env(tmp_path):
    settings = Settings(data_dir=tmp_path, pending_timeout_s=60, lost_grace_s=5,
                        resubmit_after_s=5)
    migrate(settings.db_url)
    return settings, FakeRay(), FakeTracking()


def add_job(settings, age_s: float = 0, submitted: bool = True, **kw) -> str:
    now = utcnow()
    created = now - timedelta(seconds=age_s)
    job = Job(id=kw.pop("id", "bckd-test"), owner="alice", kind="train", name="n",
              experiment="e", config="c", request={}, entrypoint="true",
              status=JobStatus.PENDING, attempts=1 if submitted else 0, created_at=created,
              submitted_at=created if submitted else None, cancel_requested=False, **kw)
    for s in session_scope(settings.db_url):
        s.add(job)
        s.commit()
    return job.id


def reconcile(settings, ray, tracking) -> Job:
    for s in session_scope(settings.db_url):
        reconcile_once(s, ray, tracking, settings)
        return s.get(Job, "bckd-test")


def test_a_row_that_never_reached_ray_is_submitted_once(env):
    settings, ray, tracking = env
    add_job(settings, submitted=False)  # the API died between commit and submit
    job = reconcile(settings, ray, tracking)
    assert ray.submits == ["bckd-test"] and job.submitted_at is not None and job.attempts == 1
    reconcile(settings, ray, tracking)
    assert ray.submits == ["bckd-test"]  # confirmed: never submitted again


def test_status_follows_ray_and_the_run_id_is_read_from_the_log(env):
    settings, ray, tracking = env
    add_job(settings)
    ray.jobs["bckd-test"] = "RUNNING"
    ray.logs_text = "x\nbckd: mlflow_run_id=" + "a" * 32 + "\n"
    job = reconcile(settings, ray, tracking)
    assert job.status == "RUNNING" and job.mlflow_run_id == "a" * 32
    assert tracking.tagged == [("a" * 32, "bckd-test")]
    assert (settings.owners_dir / "alice" / "logs" / "bckd-test.log").read_text() == ray.logs_text
    ray.jobs["bckd-test"] = "SUCCEEDED"
    job = reconcile(settings, ray, tracking)
    assert job.status == "SUCCEEDED" and job.ended_at is not None


def test_a_job_ray_forgot_is_lost_and_its_mlflow_run_killed(env):
    settings, ray, tracking = env
    add_job(settings, age_s=30, mlflow_run_id="b" * 32)
    job = reconcile(settings, ray, tracking)
    assert job.status == "LOST" and "no longer knows" in job.message
    assert tracking.terminated == [("b" * 32, "KILLED")]


def test_a_just_submitted_job_unknown_to_ray_is_not_lost_yet(env):
    settings, ray, tracking = env
    add_job(settings, age_s=1)
    assert reconcile(settings, ray, tracking).status == "PENDING"


def test_pending_past_the_timeout_is_stopped_and_failed_with_the_reason(env):
    settings, ray, tracking = env
    add_job(settings, age_s=120)
    ray.jobs["bckd-test"] = "PENDING"
    job = reconcile(settings, ray, tracking)
    assert job.status == "FAILED" and "PENDING after 60 s" in job.message
    assert ray.stopped == ["bckd-test"]

