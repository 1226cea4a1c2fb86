"""Stall detection's rule, pass by pass, with the clock in the test's hands: the real database
(SQLite, migrated by alembic) and the job's log as Ray would hand it over; Ray's ``stop_job``
replaced by a recorder (a real stopped worker: ``test_supervision_faults.py``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.adapters.db import Job, migrate, session_scope, utcnow
from service.core import stalls
from service.core.schemas import JobPublic
from service.core.states import JobStatus
from service.settings import Settings


class StopRecorder:
    def __init__(self):
        self.stopped: list[str] = []

    def stop(self, sid: str) -> bool:
        self.stopped.append(sid)
        return True


def line(it: int, step_s: float) -> str:
    return (f"\x1b[36m(RayTrainWorker pid=7)\x1b[0m 12/05 12:00:00 - mmengine - INFO - bckd: "
            f"progress epoch=1/9 iter={it}/90 eta=0:01:00 images_per_s=8.0 step_s={step_s:.3f} "
            f"loss=0.5000\n")


@pytest.fixture
def db(tmp_path):
    settings = Settings(data_dir=tmp_path, stall_floor_s=60, stall_startup_s=600)
    migrate(settings.db_url)
    for s in session_scope(settings):
        s.add(Job(id="bckd-s", owner="alice", kind="train", name="n", experiment="e",
                  config="c", request={}, entrypoint="true", status=JobStatus.RUNNING,
                  attempts=1, submitted_at=utcnow(), max_restarts=1))
        s.commit()
    for s in session_scope(settings):
        yield settings, s, s.get(Job, "bckd-s")


def look(db, ray, status, text, at) -> bool:
    settings, session, job = db
    settled = stalls.check(session, job, status, text, ray, settings, at)
    session.commit()
    return settled


def test_the_timeout_follows_the_step_time_above_its_floors():
    s = Settings(stall_floor_s=60, stall_startup_s=600)
    lines = [m.group(1) for m in stalls.PROGRESS_RE.finditer(line(10, 0.5) + line(20, 0.5))]
    assert stalls.timeout_s([], s) == 600  # before the first line: start-up
    assert stalls.timeout_s(lines, s) == 60  # 10 x 10 x 0.5 s = 50 s: the floor
    slow = [m.group(1) for m in stalls.PROGRESS_RE.finditer(line(10, 3.0) + line(14, 3.0))]
    assert stalls.timeout_s(slow, s) == pytest.approx(10 * 4 * 3.0)  # 4 iterations apart
    assert stalls.timeout_s(["val epoch=1 batch=10/20"], s) == 60


def test_a_silent_job_is_marked_then_stopped_then_restarted_as_an_infrastructure_failure(db):
    ray, t0 = StopRecorder(), utcnow()
    log = line(10, 0.5) + line(20, 0.5)
    assert not look(db, ray, JobStatus.RUNNING, log, t0)  # first sight: the clock starts
    job = db[2]
    assert job.progress_at == t0 and job.progress_lines == 2 and job.stalled_at is None
    assert not look(db, ray, JobStatus.RUNNING, log, t0 + timedelta(seconds=59))
    assert job.stalled_at is None and not JobPublic.model_validate(job).stalled
    t1 = t0 + timedelta(seconds=61)
    assert not look(db, ray, JobStatus.RUNNING, log, t1)
    view = JobPublic.model_validate(job)
    assert view.stalled and view.stalled_at == t1 and view.status == JobStatus.RUNNING
    assert job.message.startswith("stalled: no progress for 61 s (stall timeout 60 s; last "
                                  "progress: epoch=1/9 iter=20/90 ")
    assert ray.stopped == []
    assert not look(db, ray, JobStatus.RUNNING, log, t1 + timedelta(seconds=61))
    assert ray.stopped == ["bckd-s"] and job.stall_stopped_at is not None
    assert not look(db, ray, JobStatus.RUNNING, log, t1 + timedelta(seconds=200))
    assert ray.stopped == ["bckd-s"]  # stopped once
    # Ray's end of the stopped attempt: a restart (max_restarts 1), as after a lost cluster
    assert look(db, ray, JobStatus.STOPPED, log, t1 + timedelta(seconds=210))
    assert (job.status, job.restarts, job.ray_id) == (JobStatus.PENDING, 1, "bckd-s-r1")
    assert job.message.startswith("restart 1 of 1 after: stalled: no progress for ")
    assert (job.progress_at, job.progress_lines, job.stalled_at, job.stall_stopped_at) == \
        (None, None, None, None)  # the next attempt's clocks start afresh


def test_no_restart_left_fails_the_job_saying_it_stalled(db):
    ray, t0 = StopRecorder(), utcnow()
    db[2].max_restarts = 0
    for s in (0, 700, 1400):  # no line yet: the start-up timeout, 600 s
        look(db, ray, JobStatus.RUNNING, "starting\n", t0 + timedelta(seconds=s))
    assert ray.stopped == ["bckd-s"]
    assert look(db, ray, JobStatus.FAILED, "starting\n", t0 + timedelta(seconds=1500))
    assert db[2].status == JobStatus.FAILED
    assert db[2].message == ("stalled: no progress for 1500 s; stopped by the service (no "
                             "restarts left: max_restarts 0)")


def test_progress_again_clears_the_mark(db):
    ray, t0 = StopRecorder(), utcnow()
    look(db, ray, JobStatus.RUNNING, line(10, 0.5), t0)
    look(db, ray, JobStatus.RUNNING, line(10, 0.5), t0 + timedelta(seconds=70))
    assert db[2].stalled_at is not None
    resumed = line(10, 0.5) + "bckd: progress val epoch=1 batch=10/20\n"
    look(db, ray, JobStatus.RUNNING, resumed, t0 + timedelta(seconds=80))
    assert db[2].stalled_at is None and ray.stopped == []
    assert db[2].message == "progress again after 10 s stalled"


def test_a_cancelled_job_stopped_for_its_stall_stays_the_users_stop(db):
    ray, t0 = StopRecorder(), utcnow()
    db[2].stall_stopped_at, db[2].stalled_at, db[2].cancel_requested = t0, t0, True
    assert not look(db, ray, JobStatus.STOPPED, "", t0)  # the reconciler's own path ends it
    assert db[2].restarts == 0


def test_a_job_with_worker_failures_but_no_restart_left_waits_for_ray_trains_turn(db):
    job = db[2]
    assert stalls.stop_after_s(job, 240) == 480  # a restart of its own left: 2 T
    job.max_restarts, job.request = 0, {"max_failures": 2}
    # Ray Train restarts a hung worker after its health check hung 600 s: T + 600 + 60
    assert stalls.stop_after_s(job, 240) == 900
    job.request = {"max_failures": 0}
    assert stalls.stop_after_s(job, 240) == 480
