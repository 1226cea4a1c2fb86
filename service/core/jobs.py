"""Job life cycle on the service side: row first, then Ray; cancel. A job is made (validated,
given its MLflow run, claimed under its name) by ``creation``.

Order matters for restarts: the row is committed (QUEUED, attempts=0), admitted by the queue
(``queue``: PENDING) and only then handed to Ray, and the job id is Ray's ``submission_id``, so
a crash between the admission and Ray's answer is healed by the reconciler re-submitting (Ray
refuses a duplicate id: at most one Ray job per row). The POST answers once the row and the
admission pass that follows it are committed; Ray is called from another thread (``submit_new``).

A submission and a cancel may run at the same moment, in two threads or two API replicas.
Both sides write through conditional UPDATEs, so one of them always sees the other: a
submission starts only while no cancel is recorded, and confirms (``submitted_at``) only while
none is; a cancel that finds a submission in flight leaves the stop to it, and a submission
that lands on a cancelled (or otherwise ended) row stops the job on Ray at once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bckd.config.kinds import JobKind
from bckd.runtime.cluster import Capacity
from service.adapters.db import Job, session_scope, utcnow
from service.adapters.ray_jobs import RayJobs, Reservation, UnknownJob
from service.adapters.tracking import Login, Tracking, get_tracking
from service.core.auth import Principal
from service.core.creation import create_job
from service.core.errors import Invalid, NotFound, Unavailable
from service.core.idempotency import claim_or_find, find_duplicate, release_claim
from service.core.owners import OwnerDirs
from service.core.queue import admit, check_room, stop_queued
from service.core.quotas import demand, quota_of
from service.core.runs import end_job_run
from service.core.schemas import JobCreate, JobLinks, JobPublic
from service.core.slots import SubmitSlots
from service.core.states import TERMINAL, JobStatus
from service.settings import Settings

__all__ = ["archive_logs", "aware", "cancel", "cancel_job", "driver_env", "driver_reservation",
           "find_job", "finish", "list_jobs", "public_job", "read_archive", "submit_new",
           "submit_request", "submit_row"]

log = logging.getLogger("bckd.service")


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def submit_request(session: Session, user: Principal, req: JobCreate, idem_key: str | None,
                   settings: Settings, ray: RayJobs, tracking: Tracking,
                   slots: SubmitSlots) -> tuple[Job, bool, list[str]]:
    """A POST's job, True if new, and the jobs the admission pass that follows a new job
    admitted (``service.core.queue``: the new one, QUEUED until its turn, among them), for the
    caller to hand to Ray. A known key is answered from the table before Ray or MLflow is asked
    anything; a key whose first request is in flight waits for its job (``idempotency``), so a
    duplicate never downloads, asks Ray or takes one of the owner's ``slots``. The work is then
    done in one: the queue must have room (``Busy``, 429), the job fit the owner's quota, and
    the cluster's capacity is asked last, so a bad request is a 4xx whether or not Ray answers
    (``Unavailable`` when Ray cannot say what the cluster holds)."""
    known = find_duplicate(session, user.name, req, idem_key)
    if known is not None:
        return known, False, []
    if idem_key is not None and (known := claim_or_find(session, user.name, req, idem_key)):
        return known, False, []

    asked: list[Capacity] = []

    def capacity() -> Capacity:  # asked once the request passed every other check, once
        if not asked:
            try:
                asked.append(ray.capacity(settings.node_groups()))
            except Exception as err:
                raise Unavailable(f"Ray cluster unreachable: {err}") from err
        return asked[0]

    try:
        with slots.held(user.name):  # a few of the owner's requests at a time (core.slots)
            quota = quota_of(session, user.name, settings)
            check_room(session, user.name, quota)  # 429 beyond max_queued
            if (never := quota.never(demand(req.model_dump(mode="json"), settings),
                                     user.name)):
                raise Invalid("resources", never)
            job, new = create_job(session, user, req, idem_key, settings, tracking, capacity)
    except BaseException:
        if idem_key is not None:
            release_claim(session, user.name, idem_key)
        raise
    if not new or not asked:  # no cluster size to admit against: the reconciler's pass will
        return job, new, []
    try:
        admitted = admit(session, asked[0], settings)  # the new job, if its turn has come
    except Exception as err:  # e.g. the database locked too long: the job exists, QUEUED,
        session.rollback()  # and the reconciler's next pass admits it
        log.warning("admission after %s left to the reconciler: %s", job.id, err)
        admitted = []
    session.refresh(job)
    return job, new, admitted


def public_job(job: Job, settings: Settings, tracking: Tracking) -> JobPublic:
    """A row as the API shows it, with links to its Ray dashboard page and its MLflow run's
    page (asking MLflow nothing: the row holds the run's experiment)."""
    dash = (settings.ray_dashboard_url or settings.ray_address).rstrip("/")
    mlflow = None
    if job.mlflow_run_id and job.mlflow_experiment_id:
        mlflow = tracking.run_link(job.mlflow_experiment_id, job.mlflow_run_id)
    elif job.mlflow_run_id:  # a row from before 0007: MLflow finds the experiment itself
        mlflow = f"{tracking.public_url}/#/runs/{job.mlflow_run_id}"
    out = JobPublic.model_validate(job)
    out.links = JobLinks(ray_dashboard=f"{dash}/#/jobs/{job.ray_id}", mlflow_run=mlflow)
    return out


def find_job(session: Session, user: Principal, job_id: str) -> Job:
    """The caller's job (an admin: anyone's); :class:`NotFound` for another owner's too."""
    job = session.get(Job, job_id)
    if job is None or not (user.admin or job.owner == user.name):
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(session: Session, user: Principal, status: JobStatus | None,
              kind: JobKind | None, limit: int, offset: int) -> tuple[list[Job], int]:
    """The caller's jobs (an admin: everyone's) of ``status`` and ``kind`` when given, newest
    first, ``limit`` from ``offset`` on; and how many there are in all."""
    where = [] if user.admin else [Job.owner == user.name]
    if status is not None:
        where.append(Job.status == status.value)
    if kind is not None:
        where.append(Job.kind == kind.value)
    count = session.scalar(select(func.count()).select_from(Job).where(*where))
    rows = session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset)).all()
    return list(rows), count or 0


def cancel(session: Session, user: Principal, job_id: str, ray: RayJobs,
           tracking: Tracking) -> Job:
    """Cancel the caller's job (:func:`cancel_job`); an ended job is answered as it is. A job
    the cancel ended at once (it never reached Ray) has its MLflow run ended KILLED here: the
    reconciler, which ends the others', follows unfinished jobs only."""
    job = find_job(session, user, job_id)
    if job.status not in TERMINAL:
        cancel_job(session, job, ray)
        if job.status in TERMINAL:
            end_job_run(job, tracking)
    return job


def driver_env(settings: Settings, job_id: str, login: Login | None) -> dict[str, str]:
    """What a job's submission gives its driver and Ray's job supervisor: ``DRIVER_ENV`` names
    only (``bckd.runtime.cluster``), with ``login``, the owner's MLflow login (None: a store
    without logins), which the driver hands its workers in their WorkerJob."""
    return {"MLFLOW_TRACKING_URI": settings.mlflow_uri, "BCKD_JOB_ID": job_id,
            "PYTHONUNBUFFERED": "1", **(login.env() if login is not None else {}),
            # read by Ray's job supervisor: cancel = SIGINT, then SIGKILL after the grace
            "RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(settings.stop_wait_s)}


def driver_reservation(settings: Settings) -> Reservation:
    """What each job's driver reserves on Ray (``BCKD_DRIVER_CPUS``, ``BCKD_DRIVER_MEMORY_GB``):
    Ray starts no driver before that much is free on one node."""
    return Reservation(settings.driver_cpus, int(settings.driver_memory_gb * 2**30))


def submit_row(session: Session, job: Job, ray: RayJobs, settings: Settings) -> None:
    """Hand a committed PENDING row to Ray; a failure leaves it for the reconciler to retry.
    The attempt starts only if no cancel is recorded and no other attempt started since the
    caller read the row (compare-and-sets: the submitter and a reconciler pass may both find a
    new row), and is confirmed only if still no cancel is, else stopped (``_stop_landed``)."""
    waiting = (Job.id == job.id, Job.status == JobStatus.PENDING, Job.submitted_at.is_(None),
               Job.cancel_requested.is_(False))
    seen = Job.last_attempt_at.is_(None) if job.last_attempt_at is None else \
        Job.last_attempt_at == job.last_attempt_at
    started = session.execute(update(Job).where(*waiting, seen).values(
        attempts=Job.attempts + 1, last_attempt_at=utcnow())).rowcount
    session.commit()
    session.refresh(job)
    if started != 1:
        return  # cancelled, ended, or confirmed meanwhile: nothing to submit
    try:
        env = driver_env(settings, job.id, get_tracking(settings).login(job.owner))
        # job_name is what the Ray dashboard's jobs table shows as the job's name
        metadata = {"job_name": f"{job.owner}/{job.name}", "owner": job.owner, "kind": job.kind,
                    "experiment": job.experiment}
        ray.submit(job.ray_id, job.entrypoint, env, metadata, driver_reservation(settings))
    except Exception as err:
        log.warning("submission of %s failed (attempt %d): %s", job.id, job.attempts, err)
        session.execute(update(Job).where(*waiting).values(
            message=f"submission failed (attempt {job.attempts}): {err}"[:2000]))
        session.commit()
        session.refresh(job)
        return
    now = utcnow()
    confirmed = session.execute(update(Job).where(*waiting).values(
        submitted_at=now, ray_seen_at=now, message=None)).rowcount
    session.commit()
    session.refresh(job)
    # not confirmed: cancelled or ended meanwhile (stop what landed), or confirmed by another
    # attempt of the same id (the reconciler's retry of a slow submission: Ray kept one job)
    if confirmed != 1 and (job.cancel_requested or job.status in TERMINAL):
        _stop_landed(session, job, ray)


def _stop_landed(session: Session, job: Job, ray: RayJobs) -> None:
    """A submission reached Ray after its row was cancelled (or timed out): stop it there.

    The row is then confirmed, so the reconciler follows the job to Ray's STOPPED; a row that
    already ended keeps its status. If Ray does not answer the stop, ``submitted_at`` stays
    empty and the reconciler retries the stop (``cancel_unconfirmed``)."""
    try:
        ray.stop(job.ray_id)
    except Exception as err:
        log.warning("could not stop %s, cancelled during its submission: %s", job.id, err)
        return
    now = utcnow()
    session.execute(update(Job).where(
        Job.id == job.id, Job.status == JobStatus.PENDING, Job.submitted_at.is_(None)).values(
        submitted_at=now, ray_seen_at=now,
        message="cancelled while it was being submitted; stopping it on Ray"))
    session.commit()
    session.refresh(job)


def submit_new(job_id: str, ray: RayJobs, settings: Settings) -> None:
    """Hand a just-created row to Ray, off the POST's path (``reconciler.Submitter``).

    Ray's submission takes most of a POST's time (hundreds of ms under load), so the client
    gets its PENDING row without waiting for it. A row the reconciler or a cancel reached
    first is left alone; a failed submission is retried by the reconciler.
    """
    for session in session_scope(settings):
        job = session.get(Job, job_id)
        if job is not None and job.last_attempt_at is None and not job.cancel_requested:
            submit_row(session, job, ray, settings)


def cancel_job(session: Session, job: Job, ray: RayJobs) -> None:
    """Record the cancel, then stop the job where it is: queued, or admitted and not yet
    handed to Ray (STOPPED at once), being handed to Ray (the submission stops it when it
    lands), or on Ray (SIGINT; the reconciler records STOPPED once Ray does)."""
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.commit()
    session.refresh(job)  # what a submission did before the cancel was recorded
    if job.status == JobStatus.QUEUED and stop_queued(session, job, "cancelled while queued"):
        return  # never admitted: Ray never heard of it
    if job.submitted_at is None:
        if job.last_attempt_at is None:
            finish_if(session, job, JobStatus.STOPPED, "cancelled before it reached Ray",
                      Job.last_attempt_at.is_(None))
        # else a submission is in flight (or died with its API): submit_row stops what lands,
        # and the reconciler asks Ray for an attempt that never came back
        return
    try:
        ray.stop(job.ray_id)  # SIGINT; the reconciler records STOPPED once Ray does
    except UnknownJob:
        finish(session, job, JobStatus.STOPPED, "cancelled; Ray did not know the job")
    except Exception as err:  # the cancel stays recorded: a restart will not resubmit it
        raise Unavailable(f"Ray unreachable, cancel recorded: {err}") from err


def finish(session: Session, job: Job, status: JobStatus, message: str | None) -> None:
    job.status = status
    job.message = message
    job.ended_at = job.ended_at or utcnow()
    session.commit()


def finish_if(session: Session, job: Job, status: JobStatus, message: str, *where) -> bool:
    """End a PENDING, unconfirmed row only if ``where`` still holds (a compare-and-set: a
    submission may be starting in another thread); True if it did."""
    done = session.execute(update(Job).where(
        Job.id == job.id, Job.status == JobStatus.PENDING, Job.submitted_at.is_(None), *where)
        .values(status=status, message=message, ended_at=utcnow())).rowcount
    session.commit()
    session.refresh(job)
    return done == 1


def archive_logs(settings: Settings, job: Job, text: str) -> None:
    """Durable copy of a job's log (Ray's dies with the cluster), in its owner's directory;
    one file per Ray submission, so a restart keeps the earlier attempts' logs."""
    path = OwnerDirs.of(settings, job.owner).log_file(job.ray_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".log.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_archive(settings: Settings, job: Job) -> str | None:
    path = OwnerDirs.of(settings, job.owner).log_file(job.ray_id)
    return path.read_text(errors="replace") if path.exists() else None


