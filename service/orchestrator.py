"""Job life cycle on the service side: row first, then Ray; cancel; the reconciler's step.

Order matters for restarts: the row is committed (PENDING, attempts=0) before Ray is called
and the job id is Ray's ``submission_id``, so a crash between the two is healed by the
reconciler re-submitting (Ray refuses a duplicate id, so at most one Ray job per row). The POST
answers once the row is committed; Ray is called from another thread (``submit_new``).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bckd.engine.jobfile import JobFile
from service.auth import Principal
from service.checkpoints import fetch_run_checkpoints
from service.datasets import data_source
from service.db import session_scope
from service.entrypoints import build_entrypoint
from service.errors import Invalid
from service.models import TERMINAL, Job, JobStatus, Run, new_job_id, utcnow
from service.owners import OwnerDirs
from service.ray_jobs import ClusterTotals, RayJobs, UnknownJob
from service.schemas import JobCreate
from service.settings import PROJECT_ROOT, Settings
from service.tracking import Tracking
from service.validation import ValidatedJob, validate_job

__all__ = ["archive_logs", "cancel_job", "create_job", "find_duplicate", "read_archive",
           "reconcile_once", "submit_new", "submit_row"]

log = logging.getLogger("bckd.service")
RUN_ID_RE = re.compile(r"bckd: mlflow_run_id=([0-9a-f]{32})")
RAY_TO_STATUS = {"PENDING": JobStatus.PENDING, "RUNNING": JobStatus.RUNNING,
                 "SUCCEEDED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
                 "STOPPED": JobStatus.STOPPED}


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def find_duplicate(session: Session, user: Principal, req: JobCreate, idem_key: str | None
                   ) -> Job | None:
    """The job of an earlier request with this key, answered before Ray or MLflow is asked;
    409 if the key came with another body."""
    found = _by_key(session, user.name, idem_key) if idem_key is not None else None
    return _same_request(found, req) if found is not None else None


def create_job(session: Session, user: Principal, req: JobCreate, idem_key: str | None,
               settings: Settings, tracking: Tracking, totals: ClusterTotals | None
               ) -> tuple[Job, bool]:
    """Validate, write the job file, then claim the run's name and insert the row in one
    transaction; True if the job is new (False: a concurrent request with the same key won,
    and this is its job)."""
    job_id = new_job_id()
    name = req.name or job_id
    owner = OwnerDirs.of(settings, user.name)
    run_dir = owner.run_dir(name)
    source = data_source(session, user, req)
    fetched = fetch_run_checkpoints(req, user, owner, tracking)
    v = validate_job(req, settings, user.name, run_dir, fetched, totals, source)
    job_file = owner.job_file(job_id)  # an orphan if the claim below fails: never submitted
    JobFile(kind=str(req.kind), name=name, experiment=req.experiment, owner=user.name,
            run_dir=str(run_dir), configs_dir=str(settings.configs_dir.resolve()),
            read_roots=[str(r) for r in settings.read_roots(user.name)],
            base_dir=str(PROJECT_ROOT),
            config_file=str(v.config_file) if v.config_file is not None else None,
            config_data=v.config_data, overrides=v.overrides,
            num_workers=req.resources.num_workers, cpus_per_worker=req.resources.cpus_per_worker,
            gpus_per_worker=req.resources.gpus_per_worker, num_samples=req.num_samples,
            tags={"bckd.owner": user.name, "bckd.job_id": job_id,
                  "bckd.config_hash": v.config_hash},
            checkpoint_url_prefixes=list(settings.checkpoint_url_prefixes)).write(job_file)
    job = Job(id=job_id, owner=user.name, idempotency_key=idem_key, kind=req.kind, name=name,
              experiment=req.experiment, config=v.config_label, request=req.model_dump(mode="json"),
              entrypoint=build_entrypoint(req.kind, job_file, settings.job_python,
                                          settings.job_module),
              status=JobStatus.PENDING, attempts=0, created_at=utcnow(), cancel_requested=False)
    for _ in range(2):  # a second pass when the name was created at the same moment
        _claim_run(session, user.name, name, req, v, job_id)
        session.add(job)
        try:
            session.commit()  # the claim and the row together: a run's job always exists
            return job, True
        except IntegrityError:  # the same key, or the same new name, won the insert
            session.rollback()
            found = _by_key(session, user.name, idem_key) if idem_key else None
            if found is not None:
                return _same_request(found, req), False
    raise Invalid("name", f"run {name!r} was just claimed by another submission", 409)


def _claim_run(session: Session, owner: str, name: str, req: JobCreate, v: ValidatedJob,
               job_id: str) -> None:
    """Make ``job_id`` the one job of the run (owner, name) in the open transaction, or refuse
    with 409.

    A new name creates the run (its primary key settles a race at commit). A known name is a
    rerun: it resumes only with the same resolved config, and only when the run's last job has
    ended; the claim is a compare-and-set on ``active_job_id``, so of two racing reruns one
    updates no row and is refused.
    """
    run = session.get(Run, (owner, name))
    if run is None:
        session.add(Run(owner=owner, name=name, kind=str(req.kind), experiment=req.experiment,
                        config_hash=v.config_hash, config=v.resolved, active_job_id=job_id,
                        created_at=utcnow()))
        return
    if run.config_hash != v.config_hash:
        changed = sorted(k for k in set(run.config) | set(v.resolved)
                         if run.config.get(k) != v.resolved.get(k))
        shown = ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else "")
        raise Invalid("name", f"run {name!r} exists with another config (differs in: {shown}); "
                      "a rerun resumes only with the same config: choose a new name", 409)
    previous = run.active_job_id
    active = session.get(Job, previous) if previous else None
    if active is not None and active.status not in TERMINAL:
        raise Invalid("name", f"run {name!r} has an unfinished job {active.id}", 409)
    claimed = session.execute(
        update(Run).where(Run.owner == owner, Run.name == name,
                          Run.active_job_id.is_(None) if previous is None
                          else Run.active_job_id == previous)
        .values(active_job_id=job_id)).rowcount
    if claimed != 1:
        session.rollback()
        raise Invalid("name", f"run {name!r} was just claimed by another submission", 409)


def _same_request(job: Job, req: JobCreate) -> Job:
    if job.request != req.model_dump(mode="json"):
        raise Invalid("Idempotency-Key", f"already used for job {job.id} with another request",
                      409)
    return job


def _by_key(session: Session, owner: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def submit_row(session: Session, job: Job, ray: RayJobs, settings: Settings) -> None:
    """Hand a committed PENDING row to Ray; a failure leaves it for the reconciler to retry."""
    env = {"MLFLOW_TRACKING_URI": settings.mlflow_uri, "BCKD_JOB_ID": job.id,
           "PYTHONUNBUFFERED": "1",
           # read by Ray's job supervisor: cancel = SIGINT, then SIGKILL after the grace
           "RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(settings.stop_wait_s)}
    job.attempts += 1
    job.last_attempt_at = utcnow()
    session.commit()
    try:
        ray.submit(job.id, job.entrypoint, env, {"owner": job.owner, "kind": job.kind})
    except Exception as err:
        log.warning("submission of %s failed (attempt %d): %s", job.id, job.attempts, err)
        job.message = f"submission failed (attempt {job.attempts}): {err}"[:2000]
        session.commit()
        return
    job.submitted_at = utcnow()
    job.message = None
    session.commit()


def submit_new(job_id: str, ray: RayJobs, settings: Settings) -> None:
    """Hand a just-created row to Ray, off the POST's path (``reconciler.Submitter``).

    Ray's submission takes most of a POST's time (hundreds of ms under load), so the client
    gets its PENDING row without waiting for it. A row the reconciler or a cancel reached
    first is left alone; a failed submission is retried by the reconciler.
    """
    for session in session_scope(settings.db_url):
        job = session.get(Job, job_id)
        if job is not None and job.last_attempt_at is None and not job.cancel_requested:
            submit_row(session, job, ray, settings)


def cancel_job(session: Session, job: Job, ray: RayJobs) -> None:
    job.cancel_requested = True
    session.commit()
    if job.submitted_at is None and job.status == JobStatus.PENDING:
        _finish(session, job, JobStatus.STOPPED, "cancelled before it reached Ray")
        return
    try:
        ray.stop(job.id)  # SIGINT; the reconciler records STOPPED once Ray does
    except UnknownJob:
        _finish(session, job, JobStatus.STOPPED, "cancelled; Ray did not know the job")


def _finish(session: Session, job: Job, status: JobStatus, message: str | None) -> None:
    job.status = status
    job.message = message
    job.ended_at = job.ended_at or utcnow()
    session.commit()


def archive_logs(settings: Settings, job: Job, text: str) -> None:
    """Durable copy of a job's log (Ray's dies with the cluster), in its owner's directory."""
    path = OwnerDirs.of(settings, job.owner).log_file(job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".log.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_archive(settings: Settings, job: Job) -> str | None:
    path = OwnerDirs.of(settings, job.owner).log_file(job.id)
    return path.read_text(errors="replace") if path.exists() else None


def _ts(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def reconcile_job(session: Session, job: Job, ray: RayJobs, tracking: Tracking | None,
                  settings: Settings) -> None:
    now = utcnow()
    if job.submitted_at is None:  # never confirmed by Ray: (re)submit, Ray dedups the id
        if job.cancel_requested:
            _finish(session, job, JobStatus.STOPPED, "cancelled before it reached Ray")
        elif (now - aware(job.created_at)).total_seconds() > settings.pending_timeout_s:
            _finish(session, job, JobStatus.FAILED,
                    f"could not be submitted within {settings.pending_timeout_s:g} s: "
                    f"{job.message or ''}")
        elif job.last_attempt_at is None or \
                (now - aware(job.last_attempt_at)).total_seconds() > settings.resubmit_after_s:
            submit_row(session, job, ray, settings)  # the API died mid-submit, or Ray was down
        return
    try:
        info = ray.info(job.id)
    except UnknownJob:
        if (now - aware(job.submitted_at)).total_seconds() < settings.lost_grace_s:
            return
        if tracking is not None and job.mlflow_run_id:
            try:
                tracking.terminate(job.mlflow_run_id, "KILLED")
            except Exception as err:
                log.warning("could not terminate MLflow run of lost %s: %s", job.id, err)
        _finish(session, job, JobStatus.LOST, "Ray no longer knows this job "
                "(cluster restarted?); its MLflow run was terminated")
        return
    try:
        text = ray.logs(job.id)
    except Exception:
        text = None
    if text is not None:
        archive_logs(settings, job, text)
        if job.mlflow_run_id is None and (m := RUN_ID_RE.search(text)):
            job.mlflow_run_id = m.group(1)
            if tracking is not None:
                try:
                    tracking.tag_job(job.mlflow_run_id, job.id)
                except Exception as err:
                    log.warning("could not tag run of %s: %s", job.id, err)
    status = RAY_TO_STATUS.get(str(info.status.value if hasattr(info.status, "value")
                                   else info.status), JobStatus.FAILED)
    job.started_at = job.started_at or _ts(info.start_time)
    if status == JobStatus.PENDING and (now - aware(job.created_at)).total_seconds() > \
            settings.pending_timeout_s:
        try:
            ray.stop(job.id)
        except Exception as err:
            log.warning("could not stop timed-out %s: %s", job.id, err)
        _finish(session, job, JobStatus.FAILED,
                f"still PENDING after {settings.pending_timeout_s:g} s (pending_timeout_s): "
                f"{info.message or 'no resources?'}")
        return
    if status in TERMINAL:
        job.ended_at = _ts(info.end_time) or now
        msg = info.message
        if status == JobStatus.STOPPED and job.cancel_requested:
            msg = f"cancelled by user; {msg}" if msg else "cancelled by user"
        job.message = msg
    job.status = status
    session.commit()


def reconcile_once(session: Session, ray: RayJobs, tracking: Tracking | None,
                   settings: Settings) -> int:
    """One pass over the unfinished rows; returns how many it looked at."""
    active = [s.value for s in JobStatus if s not in TERMINAL]
    jobs = session.scalars(select(Job).where(Job.status.in_(active))).all()
    for job in jobs:
        try:
            reconcile_job(session, job, ray, tracking, settings)
        except Exception as err:  # Ray or MLflow down: keep the row, try next pass
            session.rollback()
            log.warning("reconcile %s: %s", job.id, err)
    return len(jobs)
