"""Watching one's own work without the cluster's keys (issue 31): the job page and its reads.

``GET /watch`` is a static page (no data, no token in it) that asks the API with the user's own
API token: ``GET /v1/me``, ``GET /v1/jobs`` and ``GET /v1/jobs/{id}/view``, the read-only,
owner-filtered view of one job's Ray driver, workers, resource use, progress and log
(``service.core.views``). Users never get Ray's token; operators keep the Ray dashboard.
``GET /v1/me/mlflow`` gives the caller's own MLflow login (``service.adapters.mlflow_users``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from service.api.deps import CurrentUser, RayDep, SessionDep, SettingsDep, TrackingDep
from service.core.runs import mlflow_access
from service.core.views import JobView, job_view

__all__ = ["page_router", "router"]

STATIC = Path(__file__).resolve().parents[1] / "static"
# The page and its assets come from the API's origin only; it asks nothing but the API.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

router = APIRouter(tags=["watch"])
page_router = APIRouter(prefix="/watch", include_in_schema=False)


class Me(BaseModel):
    name: str
    admin: bool


@router.get("/me", response_model=Me)
def read_me(user: CurrentUser) -> Me:
    """Who the token is: the owner name its jobs and runs carry."""
    return Me(name=user.name, admin=user.admin)


class MlflowLogin(BaseModel):
    url: str  # MLflow's UI: log in there with this login
    username: str | None  # None (and no password): this MLflow checks no login
    password: str | None


@router.get("/me/mlflow", response_model=MlflowLogin,
            responses={502: {"description": "MLflow did not answer"}})
def read_mlflow_login(user: CurrentUser, tracking: TrackingDep,
                      response: Response) -> MlflowLogin:
    """The caller's own MLflow login: it opens their experiments (``<owner>/<experiment>``) in
    MLflow's UI and REST API, and nothing of anyone else's. Runs an admin shared stay readable
    through this API (``GET /v1/experiments/{name}/compare``), not in MLflow."""
    response.headers["Cache-Control"] = "no-store"  # a password: no cache keeps it
    access = mlflow_access(tracking, user)
    return MlflowLogin(url=access.url, username=access.username, password=access.password)


@router.get("/jobs/{job_id}/view", response_model=JobView,
            responses={404: {"description": "no such job, or not yours"}})
def read_job_view(job_id: str, user: CurrentUser, session: SessionDep, ray: RayDep,
                  settings: SettingsDep, tracking: TrackingDep) -> JobView:
    """The job page's read: the job, its Ray driver and workers (with their reservations and
    resource use as Ray last reported them), its last progress line and its log's tail."""
    return job_view(session, user, job_id, ray, settings, tracking)


def _static(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type,
                        headers={"Content-Security-Policy": PAGE_POLICY,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})


@page_router.get("")
def page() -> FileResponse:
    return _static("watch.html", "text/html")


@page_router.get("/watch.js")
def script() -> FileResponse:
    return _static("watch.js", "text/javascript")


@page_router.get("/watch.css")
def style() -> FileResponse:
    return _static("watch.css", "text/css")
