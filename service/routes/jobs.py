"""Jobs: submit (idempotent), list, get, cancel, logs (tail and stream)."""

from __future__ import annotations

import weakref
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from service.db import new_session
from service.deps import (
    CurrentUser,
    LogStreamsDep,
    RayDep,
    SessionDep,
    SettingsDep,
    SubmitterDep,
)
from service.errors import Unavailable
from service.models import TERMINAL, Job, JobKind, JobStatus
from service.orchestrator import cancel_job, read_archive, submit_request
from service.schemas import JobCreate, JobLinks, JobPublic, JobsPublic, LogsPublic
from service.settings import Settings
from service.streams import follow, job_logs

router = APIRouter(prefix="/jobs", tags=["jobs"])

IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128,
                                       description="a retried submission returns the same job")]
NOT_FOUND = {404: {"description": "no such job, or not yours"}}
# OpenAPI links from a submitted job to the routes that take its id (schemathesis follows them
# in its stateful phase: submit, then read, cancel and tail the job it made).
JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
             for name, op in (("read", "read_job"), ("cancel", "cancel"), ("logs", "read_logs"))}


def _public(job: Job, settings: Settings) -> JobPublic:
    dash = (settings.ray_dashboard_url or settings.ray_address).rstrip("/")
    mlflow = None
    if job.mlflow_run_id:
        base = (settings.mlflow_public_url or settings.mlflow_uri).rstrip("/")
        mlflow = f"{base}/#/runs/{job.mlflow_run_id}"  # MLflow UI redirects to the experiment
    out = JobPublic.model_validate(job)
    out.links = JobLinks(ray_dashboard=f"{dash}/#/jobs/{job.ray_id}", mlflow_run=mlflow)
    return out


def _own_job(session, user, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or not (user.admin or job.owner == user.name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} not found")
    return job


@router.post("", response_model=JobPublic, status_code=status.HTTP_201_CREATED,
             responses={201: {"links": JOB_LINKS},
                        200: {"model": JobPublic, "links": JOB_LINKS,
                              "description": "the job of an earlier request with this "
                              "Idempotency-Key"},
                        409: {"description": "Idempotency-Key reused for another request, or "
                              "a run name taken by another config or an unfinished job"}})
def submit(req: JobCreate, user: CurrentUser, session: SessionDep, ray: RayDep,
           settings: SettingsDep, response: Response, submitter: SubmitterDep,
           idem_key: IdemKey = None) -> JobPublic:
    """Validate, store the job as PENDING and answer; the job goes to Ray right after."""
    try:
        job, new = submit_request(session, user, req, idem_key, settings, ray)
    except Unavailable as err:
        raise HTTPException(err.status, str(err)) from err
    if new:
        submitter.submit(job.id, ray)
    else:  # a retry, answered from the table alone
        response.status_code = status.HTTP_200_OK
    return _public(job, settings)


@router.get("", response_model=JobsPublic)
def list_jobs(user: CurrentUser, session: SessionDep, settings: SettingsDep,
              status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              kind: JobKind | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobsPublic:
    where = []
    if not user.admin:
        where.append(Job.owner == user.name)
    if status_ is not None:
        where.append(Job.status == status_.value)
    if kind is not None:
        where.append(Job.kind == kind.value)
    count = session.scalar(select(func.count()).select_from(Job).where(*where))
    rows = session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset)).all()
    return JobsPublic(data=[_public(j, settings) for j in rows], count=count or 0, limit=limit,
                      offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def read_job(job_id: str, user: CurrentUser, session: SessionDep,
             settings: SettingsDep) -> JobPublic:
    """The row alone: its metrics are the reconciler's last read of MLflow, so a client's poll
    costs no round trip to MLflow (docs/SERVICE.md, "A job read asks neither Ray nor MLflow")."""
    return _public(_own_job(session, user, job_id), settings)


@router.post("/{job_id}/cancel", response_model=JobPublic,
             status_code=status.HTTP_202_ACCEPTED, responses=NOT_FOUND)
def cancel(job_id: str, user: CurrentUser, session: SessionDep, ray: RayDep,
           settings: SettingsDep) -> JobPublic:
    job = _own_job(session, user, job_id)
    if job.status not in TERMINAL:
        try:
            cancel_job(session, job, ray)
        except Unavailable as err:
            raise HTTPException(err.status, str(err)) from err
    return _public(job, settings)


@router.get("/{job_id}/logs", response_model=LogsPublic, responses=NOT_FOUND)
def read_logs(job_id: str, user: CurrentUser, session: SessionDep, ray: RayDep,
              settings: SettingsDep,
              tail: Annotated[int, Query(ge=1, le=100_000)] = 200) -> LogsPublic:
    job = _own_job(session, user, job_id)
    text, source = job_logs(job, ray)
    if source == "none" and (archived := read_archive(settings, job)) is not None:
        text, source = archived, "archive"
    lines = text.splitlines()
    return LogsPublic(job_id=job.id, source=source, text="\n".join(lines[-tail:]),
                      truncated=len(lines) > tail)


@router.get("/{job_id}/logs/stream", response_class=StreamingResponse, responses={
    200: {"content": {"text/plain": {}}, "description": "the log, followed until the job ends"},
    429: {"description": "you already follow as many logs as one owner may "
          "(BCKD_MAX_LOG_STREAMS)"},
    **NOT_FOUND})
def stream_logs(job_id: str, user: CurrentUser, ray: RayDep, settings: SettingsDep,
                streams: LogStreamsDep, request: Request) -> StreamingResponse:
    """The log, then what the job adds, until it ends. The stream waits without a thread
    (``service.streams``); each owner may hold ``BCKD_MAX_LOG_STREAMS`` open at once."""
    # Its own session, closed here: a SessionDep's closes after the response, and each open
    # stream held a pooled connection (59 streams emptied the pool: every route waited 30 s
    # for one, then answered 500).
    with new_session(settings) as session:
        job = _own_job(session, user, job_id)
    release = streams.open(user.name)
    if release is None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{user.name} already follows {streams.per_owner} logs, the most one owner may at "
            f"once (BCKD_MAX_LOG_STREAMS={streams.per_owner}); close one, or read the log "
            f"once with GET /v1/jobs/{job.id}/logs", headers={"Retry-After": "5"})
    body = follow(job.id, ray, settings, streams, release, request.is_disconnected)
    # a generator that never starts (the client left before the first byte) runs no finally
    weakref.finalize(body, release)
    return StreamingResponse(body, media_type="text/plain")
