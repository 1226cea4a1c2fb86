"""Stall detection: a RUNNING job that shows no progress for too long is marked, then handled
as an infrastructure failure.

**What progress is.** Rank 0 of a training prints ``bckd: progress ...`` lines
(:class:`bckd.runtime.hooks.ProgressHook`): every ``progress_interval`` training iterations and
at each epoch's end, each with ``step_s=`` (the mean time of an iteration over the last ones),
and ``bckd: progress val ...`` every ``progress_interval`` validation iterations. Ray streams
them into the job's log, which the reconciler reads each pass anyway; :func:`check` counts
them. A job whose count grew made progress; ``Job.progress_at`` is when the service saw it grow
(or first saw the attempt RUNNING). A worker that is stopped, deadlocked or waiting forever on
a collective prints nothing, and neither does a driver stuck before its workers start.

**The timeout.** ``T = max(BCKD_STALL_FLOOR_S, STEP_FACTOR x every x step_s)``, from the job's
own last train line: ``step_s``, and ``every`` the iterations between its last two train lines
(what a silence between two lines normally lasts is ``every x step_s``, plus an evaluation,
which prints its own lines). Before the attempt's first line (imports, data, the teacher's
evaluation) it is ``BCKD_STALL_STARTUP_S``. The floors (240 s, 900 s) keep a slow checkpoint
write, COCO's evaluation or a loaded machine from counting as a stall.

**What happens.** Silent for ``T``: ``stalled_at`` is set and the message says so (the job
stays RUNNING: ``GET /v1/jobs/{id}`` shows ``stalled``, ``bckd jobs list`` shows
``RUNNING*``). Progress again clears it. Silent for ``2 T``: the service stops the attempt
through Ray (``stop_job``: SIGINT, then SIGKILL after ``BCKD_STOP_WAIT_S``; the hung worker
dies with its driver) and records ``stall_stopped_at``. When Ray reports that attempt ended,
the end is an infrastructure failure: the job is restarted under ``max_restarts`` (it resumes
from its last checkpoint) or, with none left, FAILED saying it stalled.

The worker alone is restarted, under ``max_failures``, by Ray Train itself, once its health
check of a hung worker process has hung ``RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S`` (600 s); the
service cannot do that (the Jobs API stops a job, not one of its actors). So ``2 T`` comes
first by default (8 min), and a job with no restart of its own left but worker failures to
spend is given Ray Train's turn before the service stops it (:func:`stop_after_s`). A hang Ray
Train does not see (a collective, the driver) is the service's alone.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime

from sqlalchemy.orm import Session

from service.adapters.db import Job
from service.adapters.ray_jobs import RayJobs
from service.core.jobs import aware, finish
from service.core.restarts import restart
from service.core.states import TERMINAL, JobStatus
from service.settings import Settings

__all__ = ["PROGRESS_RE", "STEP_FACTOR", "check", "stop_after_s", "timeout_s"]

log = logging.getLogger("bckd.service")
PROGRESS_RE = re.compile(r"bckd: progress (.*)$", re.MULTILINE)
TRAIN_RE = re.compile(r"^epoch=\S+ iter=(\d+)/\d+ .*\bstep_s=([0-9.]+)")
STEP_FACTOR = 10.0  # a silence this many times the usual gap between two lines is a stall
# Ray Train marks a worker dead once its health check (an actor call the worker answers between
# steps) has hung this long, then restarts the workers under max_failures (ray.train.v2)
HEALTH_ENV, DEFAULT_HEALTH_S, HEALTH_MARGIN_S = "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S", 600, 60


def timeout_s(lines: list[str], settings: Settings) -> float:
    """The stall timeout of a job whose log holds the progress ``lines`` (their text after
    ``bckd: progress ``), by the rule of the module's doc."""
    if not lines:
        return settings.stall_startup_s
    train = [(int(m.group(1)), float(m.group(2))) for line in lines
             if (m := TRAIN_RE.match(line))]
    if not train:  # only validation so far
        return settings.stall_floor_s
    every = train[-1][0] - train[-2][0] if len(train) > 1 else train[-1][0]
    return max(settings.stall_floor_s, STEP_FACTOR * max(every, 1) * train[-1][1])


def stop_after_s(job: Job, limit: float) -> float:
    """How long a job may stay silent before the service stops it: ``2 T``; for a job with no
    restart of its own left but worker failures to spend, long enough for Ray Train's own
    health check to restart a hung worker under ``max_failures`` first (the job's silence
    starts ``T`` before its health check does, at most)."""
    if job.restarts >= job.max_restarts and (job.request or {}).get("max_failures", 0) > 0:
        health = float(os.environ.get(HEALTH_ENV, DEFAULT_HEALTH_S))
        return max(2 * limit, limit + health + HEALTH_MARGIN_S)
    return 2 * limit


def check(session: Session, job: Job, status: JobStatus, text: str | None, ray: RayJobs,
          settings: Settings, now: datetime) -> bool:
    """One reconcile pass's look at ``job`` (Ray says ``status``, its log is ``text``). True
    when it settled the row (an attempt the service stopped for a stall has ended: restarted
    or FAILED, committed); the caller then does nothing more with it this pass."""
    if job.stall_stopped_at is not None and status in TERMINAL and not job.cancel_requested:
        silent = _age(job.progress_at, now)
        why = f"stalled: no progress for {silent:.0f} s; stopped by the service"
        if not restart(session, job, why):
            finish(session, job, JobStatus.FAILED, f"{why} (no restarts left: max_restarts "
                   f"{job.max_restarts})")
        return True
    if status != JobStatus.RUNNING or text is None:
        return False
    lines = PROGRESS_RE.findall(text)
    if job.progress_at is None or len(lines) > (job.progress_lines or 0):
        job.progress_at, job.progress_lines = now, len(lines)
        if job.stalled_at is not None and job.stall_stopped_at is None:
            job.message = f"progress again after {_age(job.stalled_at, now):.0f} s stalled"
            job.stalled_at = None
            log.warning("job %s: %s", job.id, job.message)
        return False
    silent, limit = _age(job.progress_at, now), timeout_s(lines, settings)
    if job.stalled_at is None and silent > limit:
        job.stalled_at = now
        last = lines[-1] if lines else "none yet"
        job.message = (f"stalled: no progress for {silent:.0f} s (stall timeout {limit:.0f} s; "
                       f"last progress: {last[:200]}); the service stops it after "
                       f"{stop_after_s(job, limit):.0f} s of silence")
        log.warning("job %s: %s", job.id, job.message)
    elif job.stalled_at is not None and job.stall_stopped_at is None and \
            silent > stop_after_s(job, limit):
        try:
            ray.stop(job.ray_id)
        except Exception as err:  # Ray away: the next pass tries again
            log.warning("could not stop stalled %s: %s", job.id, err)
            return False
        job.stall_stopped_at = now
        job.message = f"stalled: no progress for {silent:.0f} s; stopping it (restart follows)"
        log.warning("job %s: %s", job.id, job.message)
    return False


def _age(since: datetime | None, now: datetime) -> float:
    return (now - aware(since)).total_seconds() if since is not None else 0.0
