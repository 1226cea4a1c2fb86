"""The API's background work: the loop that keeps each unfinished job row in step with Ray (a
daemon thread, one pass is ``reconcile_once``), and the pool that hands new jobs to Ray so that
their POST need not wait.

A job's MLflow run is the one its row names (created by the API, ``service.core.jobs``); its
log is archived and searched for the job's own error, never for a run id.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.adapters.db import Job, session_scope, utcnow
from service.adapters.ray_jobs import RayJobs, UnknownJob, get_ray_jobs
from service.adapters.tracking import Tracking, get_tracking
from service.core import stalls
from service.core.jobs import archive_logs, aware, finish, finish_if, submit_new, submit_row
from service.core.queue import admit
from service.core.restarts import infrastructure_failure, job_error, restart
from service.core.runs import end_job_run
from service.core.states import TERMINAL, JobStatus
from service.settings import Settings

__all__ = ["Reconciler", "Submitter", "reconcile_job", "reconcile_once"]

log = logging.getLogger("bckd.service")
RAY_TO_STATUS = {"PENDING": JobStatus.PENDING, "RUNNING": JobStatus.RUNNING,
                 "SUCCEEDED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
                 "STOPPED": JobStatus.STOPPED}


class Reconciler:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bckd-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        s = self.settings
        ray = get_ray_jobs(s.ray_address)
        while not self._stop.is_set():
            try:
                tracking = get_tracking(s)
            except Exception as err:
                log.warning("MLflow client: %s", err)
                tracking = None
            try:
                for session in session_scope(s):
                    reconcile_once(session, ray, tracking, s)
            except Exception as err:
                log.warning("reconcile pass failed: %s", err)
            self._stop.wait(s.reconcile_interval_s)


class Submitter:
    """A few threads of its own (``Settings.submit_threads``) that give new jobs to Ray
    (``orchestrator.submit_new``); with none, a new job waits for the reconciler's next pass.

    Not FastAPI's ``BackgroundTasks``: those run in the request thread pool, so 50 submissions
    blocked on Ray (about a second each on a loaded 2-core head) held the threads the next POSTs
    needed. A submission lost with the process is picked up by the reconciler.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.submit_threads, thread_name_prefix="bckd-submit"
                                        ) if settings.submit_threads else None

    def submit(self, job_id: str, ray: RayJobs) -> None:
        if self._pool is not None:
            self._pool.submit(submit_new, job_id, ray, self.settings).add_done_callback(
                _log_error)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _log_error(future: Future) -> None:
    if (err := future.exception()) is not None:  # e.g. the database was locked too long
        log.warning("submission left to the reconciler: %s", err)


def _ts(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _age(since: datetime | None, now: datetime) -> float:
    return (now - aware(since)).total_seconds()


def reconcile_job(session: Session, job: Job, ray: RayJobs, tracking: Tracking | None,
                  settings: Settings) -> None:
    now = utcnow()
    # the pending clocks of this attempt: a job's wait in the queue is not Ray's
    attempt_start = job.restarted_at or job.admitted_at or job.created_at
    if job.submitted_at is None:  # never confirmed by Ray: (re)submit, Ray dedups the id
        if job.cancel_requested:
            _cancel_unconfirmed(session, job, ray, settings, now)
        elif _age(attempt_start, now) > settings.pending_timeout_s:
            finish(session, job, JobStatus.FAILED,
                   f"could not be submitted within {settings.pending_timeout_s:g} s: "
                   f"{job.message or ''}")
        elif job.last_attempt_at is None or \
                _age(job.last_attempt_at, now) > settings.resubmit_after_s:
            submit_row(session, job, ray, settings)  # the API died mid-submit, or Ray was down
        return
    try:
        info = ray.info(job.ray_id)
    except UnknownJob:
        # counted from the last answer Ray gave about the job, not from its submission: one
        # "unknown" of a dashboard hiccup is not a restarted cluster
        if _age(job.ray_seen_at or job.submitted_at, now) < settings.lost_grace_s:
            return
        if restart(session, job, "Ray no longer knew the job (cluster restarted?)"):
            return  # the next attempt reopens the MLflow run: it stays as it is
        finish(session, job, JobStatus.LOST, "Ray no longer knows this job "
               "(cluster restarted?); its MLflow run was terminated")
        return
    job.ray_seen_at = now
    try:
        text = ray.logs(job.ray_id)
    except Exception:
        text = None
    if text is not None:
        archive_logs(settings, job, text)
    if tracking is not None and job.mlflow_run_id:
        # read here, once a pass, so that GET /v1/jobs/{id} answers from the row; the pass
        # that sees the job end reads its final values
        try:
            job.metrics = tracking.latest_metrics(job.mlflow_run_id, job.owner)
        except Exception as err:
            log.warning("could not read the metrics of %s: %s", job.id, err)
    status = RAY_TO_STATUS.get(str(info.status.value if hasattr(info.status, "value")
                                   else info.status), JobStatus.FAILED)
    job.started_at = job.started_at or _ts(info.start_time)
    if stalls.check(session, job, status, text, ray, settings, now):
        return  # an attempt stopped for a stall ended: restarted or FAILED
    if status == JobStatus.PENDING and _age(attempt_start, now) > settings.pending_timeout_s:
        try:
            ray.stop(job.ray_id)
        except Exception as err:
            log.warning("could not stop timed-out %s: %s", job.id, err)
        finish(session, job, JobStatus.FAILED,
               f"still PENDING after {settings.pending_timeout_s:g} s (pending_timeout_s): "
               f"{info.message or 'no resources?'}")
        return
    if status == JobStatus.FAILED and (why := infrastructure_failure(info, text)) and \
            restart(session, job, f"{why}: {info.message or ''}".rstrip(": ")):
        return
    if status in TERMINAL:
        job.ended_at = _ts(info.end_time) or now
        msg = info.message
        if status == JobStatus.FAILED:
            msg = job_error(text) or msg  # the job's own error, not Ray's tail of the log
        if status == JobStatus.STOPPED and job.cancel_requested:
            msg = f"cancelled by user; {msg}" if msg else "cancelled by user"
        job.message = msg
    job.status = status
    session.commit()


def _cancel_unconfirmed(session: Session, job: Job, ray: RayJobs, settings: Settings,
                        now: datetime) -> None:
    """A cancelled row that Ray never confirmed. With no attempt made it is STOPPED. An
    attempt in flight is left to its submitter (which stops what lands); one older than
    ``resubmit_after_s`` may have reached Ray before its API died, so Ray is asked to stop
    it: Ray knowing it confirms the row, to be followed to Ray's STOPPED."""
    if job.last_attempt_at is None:
        finish_if(session, job, JobStatus.STOPPED, "cancelled before it reached Ray")
        return
    if _age(job.last_attempt_at, now) <= settings.resubmit_after_s:
        return
    try:
        ray.stop(job.ray_id)
    except UnknownJob:
        finish_if(session, job, JobStatus.STOPPED, "cancelled before it reached Ray")
        return
    job.submitted_at = job.ray_seen_at = now
    job.message = "cancelled; its submission had reached Ray: stopping it there"
    session.commit()


def reconcile_once(session: Session, ray: RayJobs, tracking: Tracking | None,
                   settings: Settings) -> int:
    """One pass over the admitted unfinished rows, then an admission pass
    (``service.core.queue``: the jobs that ended just now made room) whose jobs are submitted
    at once; returns how many rows it looked at."""
    active = [s.value for s in JobStatus if s not in TERMINAL and s != JobStatus.QUEUED]
    jobs = list(session.scalars(select(Job).where(Job.status.in_(active))).all())
    _reconcile(session, jobs, ray, tracking, settings)
    if session.scalar(select(Job.id).where(Job.status == JobStatus.QUEUED).limit(1)) is None:
        return len(jobs)  # nothing waits: Ray need not be asked the cluster's size
    try:
        admitted = admit(session, ray.capacity(settings.node_groups()), settings)
    except Exception as err:  # Ray did not say the cluster's size, or the database was
        session.rollback()  # locked too long: the next pass admits
        log.warning("admission pass skipped: %s", err)
        return len(jobs)
    _reconcile(session, [session.get(Job, i) for i in admitted], ray, tracking, settings)
    return len(jobs) + len(admitted)


def _reconcile(session: Session, jobs: list[Job], ray: RayJobs, tracking: Tracking | None,
               settings: Settings) -> None:
    for job in jobs:
        try:
            reconcile_job(session, job, ray, tracking, settings)
            end_job_run(job, tracking)  # however it ended, in this pass
        except Exception as err:  # Ray or MLflow down: keep the row, try next pass
            session.rollback()
            log.warning("reconcile %s: %s", job.id, err)
