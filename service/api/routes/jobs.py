"""Jobs: submit (idempotent), list, get, cancel, logs (tail and stream)."""

from __future__ import annotations

import weakref
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from bckd.config.kinds import JobKind
from service.api.deps import (
    CurrentUser,
    LogStreamsDep,
    RayDep,
    SessionDep,
    SettingsDep,
    SubmitSlotsDep,
    SubmitterDep,
    TrackingDep,
)
from service.core import jobs
from service.core.jobs import public_job
from service.core.schemas import JobCreate, JobPublic, JobsPublic, LogsPublic
from service.core.states import JobStatus
from service.core.streams import open_stream, tail_logs

router = APIRouter(prefix="/jobs", tags=["jobs"])

IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128,
                                       description="a retried submission returns the same job")]
NOT_FOUND = {404: {"description": "no such job, or not yours"}}
# OpenAPI links from a submitted job to the routes that take its id (schemathesis follows them
# in its stateful phase: submit, then read, cancel and tail the job it made).
JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
             for name, op in (("read", "read_job"), ("cancel", "cancel"), ("logs", "read_logs"))}


@router.post("", response_model=JobPublic, status_code=status.HTTP_201_CREATED,
             responses={201: {"links": JOB_LINKS},
                        200: {"model": JobPublic, "links": JOB_LINKS,
                              "description": "the job of an earlier request with this "
                              "Idempotency-Key"},
                        409: {"description": "Idempotency-Key reused for another request, or "
                              "a run name taken by another config or an unfinished job"},
                        429: {"description": "your queue is full (max_queued of your quota, "
                              "GET /v1/quotas/{owner})"}})
def submit(req: JobCreate, user: CurrentUser, session: SessionDep, ray: RayDep,
           settings: SettingsDep, tracking: TrackingDep, response: Response,
           submitter: SubmitterDep, slots: SubmitSlotsDep,
           idem_key: IdemKey = None) -> JobPublic:
    """Validate, store the job as QUEUED and admit it if its turn has come (PENDING: it goes
    to Ray right after the answer); 429 when its owner already has ``max_queued`` queued.
    One owner's submissions are worked on ``max_submitting`` at a time."""
    job, new, admitted = jobs.submit_request(session, user, req, idem_key, settings, ray,
                                             tracking, slots)
    for job_id in admitted:
        submitter.submit(job_id, ray)
    if not new:  # a retry, answered from the table alone
        response.status_code = status.HTTP_200_OK
    return public_job(job, settings, tracking)


@router.get("", response_model=JobsPublic)
def list_jobs(user: CurrentUser, session: SessionDep, settings: SettingsDep,
              tracking: TrackingDep,
              status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              kind: JobKind | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobsPublic:
    rows, count = jobs.list_jobs(session, user, status_, kind, limit, offset)
    return JobsPublic(data=[public_job(j, settings, tracking) for j in rows], count=count,
                      limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def read_job(job_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep,
             tracking: TrackingDep) -> JobPublic:
    """The row alone: its metrics are the reconciler's last read of MLflow, so a client's poll
    costs no round trip to MLflow (docs/SERVICE.md, "A job read asks neither Ray nor MLflow")."""
    return public_job(jobs.find_job(session, user, job_id), settings, tracking)


@router.post("/{job_id}/cancel", response_model=JobPublic,
             status_code=status.HTTP_202_ACCEPTED, responses=NOT_FOUND)
def cancel(job_id: str, user: CurrentUser, session: SessionDep, ray: RayDep,
           settings: SettingsDep, tracking: TrackingDep) -> JobPublic:
    return public_job(jobs.cancel(session, user, job_id, ray, tracking), settings, tracking)


@router.get("/{job_id}/logs", response_model=LogsPublic, responses=NOT_FOUND)
def read_logs(job_id: str, user: CurrentUser, session: SessionDep, ray: RayDep,
              settings: SettingsDep,
              tail: Annotated[int, Query(ge=1, le=100_000)] = 200) -> LogsPublic:
    return tail_logs(session, user, job_id, ray, settings, tail)


@router.get("/{job_id}/logs/stream", response_class=StreamingResponse, responses={
    200: {"content": {"text/plain": {}}, "description": "the log, followed until the job ends"},
    429: {"description": "you already follow as many logs as one owner may "
          "(BCKD_MAX_LOG_STREAMS)"},
    **NOT_FOUND})
def stream_logs(job_id: str, user: CurrentUser, ray: RayDep, settings: SettingsDep,
                streams: LogStreamsDep, request: Request) -> StreamingResponse:
    """The log, then what the job adds, until it ends. The stream waits without a thread
    (``service.core.streams``); each owner may hold ``BCKD_MAX_LOG_STREAMS`` open at once."""
    body, release = open_stream(user, job_id, ray, settings, streams, request.is_disconnected)
    # a generator that never starts (the client left before the first byte) runs no finally
    weakref.finalize(body, release)
    return StreamingResponse(body, media_type="text/plain")
