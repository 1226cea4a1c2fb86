"""The reconciler's decisions, with Ray and MLflow replaced by fakes (fast, no cluster).

The fakes stand where a real Ray cannot be made to answer on cue: forgetting a job for one
pass, failing a job with a chosen ``error_type`` and exit status. The database is the real
one (SQLite, migrated by alembic)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from service.adapters.db import Job, migrate, session_scope, utcnow
from service.adapters.ray_jobs import UnknownJob
from service.core.reconciler import reconcile_once
from service.core.restarts import job_error
from service.core.states import JobStatus
from service.settings import Settings


class FakeRay:
    def __init__(self):
        self.jobs: dict[str, str] = {}  # submission id -> status
        self.ends: dict[str, tuple[str | None, int | None]] = {}  # id -> error_type, exit code
        self.submits: list[str] = []
        self.stopped: list[str] = []
        self.logs_text = ""

    def submit(self, sid, entrypoint, env, metadata, reservation):
        self.submits.append(sid)
        if sid in self.jobs:
            return False
        self.jobs[sid] = "PENDING"
        return True

    def info(self, sid):
        if sid not in self.jobs:
            raise UnknownJob(sid)
        error_type, code = self.ends.get(sid, (None, None))
        return SimpleNamespace(status=self.jobs[sid], start_time=None, end_time=None,
                               message="msg", error_type=error_type, driver_exit_code=code)

    def stop(self, sid):
        if sid not in self.jobs:
            raise UnknownJob(sid)
        self.stopped.append(sid)
        return True

    def logs(self, sid):
        return self.logs_text


class FakeTracking:
    """Records what the reconciler asks of MLflow, with the owner it asks as (a real store:
    tests/service/test_run_identity.py)."""

    def __init__(self):
        self.terminated: list[tuple[str, str]] = []
        self.read: list[tuple[str, str]] = []  # (run id, owner) of each metrics read
        self.metrics: dict[str, float] | None = {}  # None: MLflow does not answer

    def latest_metrics(self, run_id, owner):
        self.read.append((run_id, owner))
        if self.metrics is None:
            raise ConnectionError("MLflow is down")
        return dict(self.metrics)

    def terminate(self, run_id, owner, status="KILLED"):
        assert owner == "alice"
        self.terminated.append((run_id, status))


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
              submitted_at=created if submitted else None,
              cancel_requested=kw.pop("cancel_requested", False), **kw)
    for s in session_scope(settings):
        s.add(job)
        s.commit()
    return job.id


def reconcile(settings, ray, tracking) -> Job:
    for s in session_scope(settings):
        reconcile_once(s, ray, tracking, settings)
        return s.get(Job, "bckd-test")


def set_row(settings, **values) -> None:
    """Write columns of the test's row directly: how a test moves a clock back."""
    for s in session_scope(settings):
        job = s.get(Job, "bckd-test")
        for k, v in values.items():
            setattr(job, k, v)
        s.commit()


def test_a_row_that_never_reached_ray_is_submitted_once(env):
    settings, ray, tracking = env
    add_job(settings, submitted=False)  # the API died between commit and submit
    job = reconcile(settings, ray, tracking)
    assert ray.submits == ["bckd-test"] and job.submitted_at is not None and job.attempts == 1
    reconcile(settings, ray, tracking)
    assert ray.submits == ["bckd-test"]  # confirmed: never submitted again


def test_status_follows_ray_and_a_run_id_in_the_log_is_never_read(env):
    settings, ray, tracking = env
    add_job(settings, mlflow_run_id="a" * 32)  # the run the API made
    ray.jobs["bckd-test"] = "RUNNING"
    ray.logs_text = "x\nbckd: mlflow_run_id=" + "e" * 32 + "\n"  # printed, or forged
    job = reconcile(settings, ray, tracking)
    assert job.status == "RUNNING" and job.mlflow_run_id == "a" * 32
    assert tracking.read == [("a" * 32, "alice")]  # the row's run, as its owner's
    assert (settings.owners_dir / "alice" / "logs" / "bckd-test.log").read_text() == ray.logs_text
    ray.jobs["bckd-test"] = "SUCCEEDED"
    job = reconcile(settings, ray, tracking)
    assert job.status == "SUCCEEDED" and job.ended_at is not None
    assert tracking.terminated == []  # a finished job ended its run itself


@pytest.mark.parametrize("ray_status,run_status", [("FAILED", "FAILED"), ("STOPPED", "KILLED")])
def test_a_job_that_ends_without_ending_its_run_has_it_ended(env, ray_status, run_status):
    settings, ray, tracking = env
    add_job(settings, mlflow_run_id="a" * 32)
    ray.jobs["bckd-test"] = ray_status  # e.g. refused before it opened its run
    job = reconcile(settings, ray, tracking)
    assert job.status == ray_status and tracking.terminated == [("a" * 32, run_status)]


def test_a_job_cancelled_before_it_reached_ray_has_its_scheduled_run_ended(env):
    settings, ray, tracking = env
    add_job(settings, submitted=False, cancel_requested=True, mlflow_run_id="f" * 32)
    job = reconcile(settings, ray, tracking)
    assert job.status == "STOPPED" and tracking.terminated == [("f" * 32, "KILLED")]


def test_each_pass_keeps_the_runs_latest_metrics_on_the_row_until_the_job_ends(env):
    settings, ray, tracking = env
    add_job(settings, mlflow_run_id="a" * 32)
    ray.jobs["bckd-test"] = "RUNNING"
    tracking.metrics = {"loss": 0.5}
    assert reconcile(settings, ray, tracking).metrics == {"loss": 0.5}
    tracking.metrics = None  # MLflow away for a pass: the row keeps what it had
    assert reconcile(settings, ray, tracking).metrics == {"loss": 0.5}
    tracking.metrics = {"loss": 0.25, "coco/bbox_mAP": 0.5}  # logged before the job ended
    ray.jobs["bckd-test"] = "SUCCEEDED"
    job = reconcile(settings, ray, tracking)
    assert job.status == "SUCCEEDED" and job.metrics == {"loss": 0.25, "coco/bbox_mAP": 0.5}


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



# --- LOST counts from the last time Ray knew the job ----------------------------------------


def test_one_unknown_answer_for_an_old_job_ray_just_knew_is_not_lost(env):
    settings, ray, tracking = env
    add_job(settings, age_s=3600)  # submitted an hour ago: far older than the 5 s grace
    ray.jobs["bckd-test"] = "RUNNING"
    job = reconcile(settings, ray, tracking)
    assert job.status == "RUNNING" and job.ray_seen_at is not None
    del ray.jobs["bckd-test"]  # one dashboard hiccup: "no such job"
    job = reconcile(settings, ray, tracking)
    assert job.status == "RUNNING" and tracking.terminated == []
    set_row(settings, ray_seen_at=utcnow() - timedelta(seconds=6))  # the grace went by
    job = reconcile(settings, ray, tracking)
    assert job.status == "LOST"


# --- restarts ---------------------------------------------------------------------------------


def test_an_infrastructure_failure_is_resubmitted_under_a_new_ray_id(env):
    settings, ray, tracking = env
    add_job(settings, max_restarts=2, mlflow_run_id="c" * 32)
    ray.jobs["bckd-test"] = "FAILED"
    ray.ends["bckd-test"] = ("JOB_SUPERVISOR_ACTOR_DIED", None)  # the driver's node died
    job = reconcile(settings, ray, tracking)
    assert job.status == "PENDING" and job.restarts == 1 and job.submitted_at is None
    assert "restart 1 of 2" in job.message and "JOB_SUPERVISOR_ACTOR_DIED" in job.message
    job = reconcile(settings, ray, tracking)  # the next pass submits the next attempt
    assert ray.submits == ["bckd-test-r1"] and job.submitted_at is not None
    assert job.mlflow_run_id == "c" * 32 and tracking.terminated == []  # the run resumes
    ray.jobs["bckd-test-r1"] = "SUCCEEDED"
    job = reconcile(settings, ray, tracking)
    assert job.status == "SUCCEEDED" and job.restarts == 1


@pytest.mark.parametrize("end", [("JOB_ENTRYPOINT_COMMAND_ERROR", -9),
                                 ("JOB_ENTRYPOINT_COMMAND_ERROR", 137),
                                 ("JOB_ENTRYPOINT_COMMAND_ERROR", 1)])
def test_a_driver_killed_or_dead_without_saying_why_is_restarted(env, end):
    settings, ray, tracking = env
    add_job(settings, max_restarts=1)
    ray.jobs["bckd-test"] = "FAILED"
    ray.ends["bckd-test"] = end
    ray.logs_text = "Traceback ...\nConnectionError: GCS unreachable\n"  # no bckd: error line
    job = reconcile(settings, ray, tracking)
    assert job.status == "PENDING" and job.restarts == 1, job.message


def test_a_failure_the_job_reports_as_its_own_is_not_retried(env):
    settings, ray, tracking = env
    add_job(settings, max_restarts=3)
    ray.jobs["bckd-test"] = "FAILED"
    ray.ends["bckd-test"] = ("JOB_ENTRYPOINT_COMMAND_ERROR", 1)
    ray.logs_text = ("step 3\nbckd: error: training failed: WorkerGroupError:\n"
                     "  node_ip='10.0.0.2'\n"
                     "\x1b[36m(RayTrainWorker pid=7)\x1b[0m Traceback (most recent call last):\n")
    job = reconcile(settings, ray, tracking)
    assert job.status == "FAILED" and job.restarts == 0 and ray.submits == []
    # the message is the job's own error with its snippet, not the traceback Ray streamed after
    assert job.message == "bckd: error: training failed: WorkerGroupError:\n  node_ip='10.0.0.2'"


def test_a_long_job_error_keeps_its_first_line_and_its_end():
    trace = "\n".join(f"  File 'loops.py', line {i}" for i in range(400))
    log_text = (f"bckd: error: training failed: WorkerGroupError:\n{trace}\n"
                "RuntimeError: Connection closed by peer [10.0.0.2]:4000\n")
    message = job_error(log_text)
    assert len(message) <= 2000
    assert message.startswith("bckd: error: training failed") and message.endswith("]:4000")


def test_restarts_stop_at_max_restarts_and_a_lost_job_restarts_too(env):
    settings, ray, tracking = env
    add_job(settings, age_s=30, max_restarts=1, mlflow_run_id="d" * 32)  # Ray forgot it
    job = reconcile(settings, ray, tracking)
    assert job.status == "PENDING" and job.restarts == 1 and "no longer knew" in job.message
    assert tracking.terminated == []  # the next attempt reopens the run
    reconcile(settings, ray, tracking)
    assert ray.submits == ["bckd-test-r1"]
    ray.jobs["bckd-test-r1"] = "FAILED"
    ray.ends["bckd-test-r1"] = ("JOB_SUPERVISOR_ACTOR_DIED", None)
    job = reconcile(settings, ray, tracking)
    assert job.status == "FAILED" and job.restarts == 1  # max_restarts spent


def test_a_restarted_attempt_has_its_own_pending_clock(env):
    settings, ray, tracking = env
    add_job(settings, age_s=120, max_restarts=1)  # older than the 60 s pending timeout
    ray.jobs["bckd-test"] = "FAILED"
    ray.ends["bckd-test"] = ("JOB_SUPERVISOR_ACTOR_DIED", None)
    reconcile(settings, ray, tracking)
    job = reconcile(settings, ray, tracking)  # submitted again, and PENDING on Ray
    assert ray.submits == ["bckd-test-r1"]
    job = reconcile(settings, ray, tracking)
    assert job.status == "PENDING" and ray.stopped == []  # not timed out by the first attempt


def test_a_cancelled_job_is_not_restarted(env):
    settings, ray, tracking = env
    add_job(settings, max_restarts=2, cancel_requested=True)
    ray.jobs["bckd-test"] = "FAILED"
    ray.ends["bckd-test"] = ("JOB_SUPERVISOR_ACTOR_DIED", None)
    job = reconcile(settings, ray, tracking)
    assert job.status == "FAILED" and job.restarts == 0


# --- a cancel whose submission's answer was lost ------------------------------------------------


def test_a_cancel_of_a_row_whose_submission_reached_ray_before_its_api_died_stops_it(env):
    settings, ray, tracking = env
    # an attempt was made 20 s ago and never confirmed: the API died while Ray took the job
    add_job(settings, submitted=False, cancel_requested=True,
            last_attempt_at=utcnow() - timedelta(seconds=20))
    ray.jobs["bckd-test"] = "RUNNING"
    job = reconcile(settings, ray, tracking)
    assert ray.stopped == ["bckd-test"] and job.status == "PENDING" and job.submitted_at
    ray.jobs["bckd-test"] = "STOPPED"
    job = reconcile(settings, ray, tracking)
    assert job.status == "STOPPED" and "cancelled by user" in job.message


def test_a_cancel_of_an_attempt_ray_never_got_is_stopped_without_a_submission(env):
    settings, ray, tracking = env
    add_job(settings, submitted=False, cancel_requested=True,
            last_attempt_at=utcnow() - timedelta(seconds=20))
    job = reconcile(settings, ray, tracking)  # FakeRay.stop of an unknown id
    assert job.status == "STOPPED" and ray.submits == []
