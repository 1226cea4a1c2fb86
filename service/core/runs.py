"""Runs the service made for jobs: one ends with its job when the job did not end it, and an
admin shares one so every user may compare it and distill from it. Only runs of a job can be
shared; any other run of the tracking store is answered as absent. And the caller's own MLflow
login, which opens their experiments in MLflow's UI and API and nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.adapters.db import Job
from service.adapters.tracking import NotOwned, Tracking
from service.core.auth import Principal
from service.core.errors import Forbidden, NotFound, Unavailable
from service.core.states import JobStatus

__all__ = ["MlflowAccess", "end_job_run", "mlflow_access", "share_run"]

log = logging.getLogger("bckd.service")
# how a job's end leaves a run the job did not end itself (a finished job ends its own run)
RUN_END = {JobStatus.FAILED: "FAILED", JobStatus.STOPPED: "KILLED", JobStatus.LOST: "KILLED"}


def share_run(tracking: Tracking, user: Principal, run_id: str, shared: bool) -> None:
    """Mark ``run_id`` shared or not: :class:`Forbidden` for a user's token, :class:`NotFound`
    for a run no job made, :class:`Unavailable` (502) when MLflow does not answer."""
    if not user.admin:
        raise Forbidden("only an admin token shares runs")
    try:
        tracking.set_shared(run_id, shared)
    except NotOwned as err:
        raise NotFound(f"no MLflow run {run_id!r} of a job") from err
    except Exception as err:  # MLflow did not answer
        raise Unavailable(f"MLflow: {err}", 502) from err


@dataclass(frozen=True)
class MlflowAccess:
    url: str  # MLflow's UI
    username: str | None  # None: this MLflow checks no login
    password: str | None


def mlflow_access(tracking: Tracking, user: Principal) -> MlflowAccess:
    """The caller's MLflow login (made on the tracking server at its first use):
    :class:`Unavailable` (502) when MLflow does not answer."""
    try:
        login = tracking.login(user.name)
    except Exception as err:
        raise Unavailable(f"MLflow: {err}", 502) from err
    return MlflowAccess(tracking.public_url, login and login.username, login and login.password)


def end_job_run(job: Job, tracking: Tracking | None) -> None:
    """End the run of a job that just ended FAILED, STOPPED or LOST, if the job left it
    unfinished (SCHEDULED: the job never opened it, e.g. cancelled while queued or timed out
    before it started; RUNNING: its driver died); a run the job ended keeps its status."""
    if tracking is None or not job.mlflow_run_id or job.status not in RUN_END:
        return
    try:
        tracking.terminate(job.mlflow_run_id, job.owner, RUN_END[job.status])
    except Exception as err:
        log.warning("could not end the MLflow run of %s: %s", job.id, err)
