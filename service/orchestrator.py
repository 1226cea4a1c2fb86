"""Job life cycle on the service side: row first, then Ray; cancel; the reconciler's step.

Order matters for restarts: the row is committed (PENDING, attempts=0) before Ray is called
and the job id is Ray's ``submission_id``, so a crash between the two is healed by the
reconciler re-submitting (Ray refuses a duplicate id, so at most one Ray job per row). The POST
answers once the row is committed; Ray is called from another thread (``submit_new``).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth import Principal
from service.db import session_scope
from service.entrypoints import JobCommand, build_entrypoint
from service.models import TERMINAL, Job, JobStatus, new_job_id, utcnow
from service.ray_jobs import RayJobs, UnknownJob
from service.schemas import JobCreate
from service.settings import Settings
from service.tracking import Tracking
from service.validation import Invalid, ValidatedJob

__all__ = ["archive_logs", "cancel_job", "create_job", "reconcile_once", "submit_new",
           "submit_row"]

log = logging.getLogger("bckd.service")
RUN_ID_RE = re.compile(r"bckd: mlflow_run_id=([0-9a-f]{32})")
RAY_TO_STATUS = {"PENDING": JobStatus.PENDING, "RUNNING": JobStatus.RUNNING,
                 "SUCCEEDED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
                 "STOPPED": JobStatus.STOPPED}


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _resolve_teacher(req: JobCreate, job_id: str, v: ValidatedJob, settings: Settings,
                     tracking: Tracking) -> None:
    if req.teacher_ckpt is None or not req.teacher_ckpt.startswith("runs:/"):
        return
    run_id = req.teacher_ckpt.removeprefix("runs:/").split("/", 1)[0]
    try:
        tracking.run(run_id)
    except Exception as err:
        raise Invalid("teacher_ckpt", f"no MLflow run {run_id!r}") from err
    try:
        local = tracking.download(req.teacher_ckpt, settings.data_dir.resolve() / "teachers"
                                  / job_id)
    except Exception as err:
        raise Invalid("teacher_ckpt", f"cannot fetch {req.teacher_ckpt!r}: {err}") from err
    v.cfg_options["model.teacher_ckpt"] = str(local)


def create_job(session: Session, user: Principal, req: JobCreate, v: ValidatedJob,
               idem_key: str | None, settings: Settings, tracking: Tracking
               ) -> tuple[Job, bool]:
    """Write the row (or find the one of an earlier request with this key); True if new."""
    if idem_key is not None:
        found = _by_key(session, user.name, idem_key)
        if found is not None:
            return _same_request(found, req), False
    job_id = new_job_id()
    _resolve_teacher(req, job_id, v, settings, tracking)
    config_path = v.config_path
    if v.upload is not None:
        upload_dir = settings.data_dir.resolve() / "configs"
        upload_dir.mkdir(parents=True, exist_ok=True)
        path = upload_dir / f"{job_id}.json"
        path.write_text(json.dumps(v.upload, indent=1))
        config_path = str(path)
    name = req.name or job_id
    cmd = JobCommand(kind=req.kind, config=config_path, name=name, experiment=req.experiment,
                     num_workers=req.resources.num_workers,
                     cpus_per_worker=req.resources.cpus_per_worker,
                     gpus_per_worker=req.resources.gpus_per_worker,
                     num_samples=req.num_samples, cfg_options=v.cfg_options)
    job = Job(id=job_id, owner=user.name, idempotency_key=idem_key, kind=req.kind, name=name,
              experiment=req.experiment, config=v.config_label if v.upload is None else
              config_path, request=req.model_dump(mode="json"),
              entrypoint=build_entrypoint(cmd, settings.job_python, settings.job_module),
              status=JobStatus.PENDING, attempts=0, created_at=utcnow(),
              cancel_requested=False)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same key won the insert
        session.rollback()
        found = _by_key(session, user.name, idem_key) if idem_key else None
        if found is None:
            raise
        return _same_request(found, req), False
    return job, True


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


def archive_logs(settings: Settings, job_id: str, text: str) -> None:
    """Durable copy of a job's log (Ray's dies with the cluster)."""
    d = settings.data_dir.resolve() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{job_id}.log.tmp"
    tmp.write_text(text)
    tmp.replace(d / f"{job_id}.log")


def read_archive(settings: Settings, job_id: str) -> str | None:
    p = settings.data_dir.resolve() / "logs" / f"{job_id}.log"
    return p.read_text(errors="replace") if p.exists() else None


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
        archive_logs(settings, job.id, text)
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
