"""FastAPI dependencies and their ``Annotated`` aliases (``SessionDep``, ``CurrentUser``, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.adapters.db import new_session
from service.adapters.ray_jobs import RayJobs, get_ray_jobs
from service.adapters.tracking import Tracking, get_tracking
from service.core.auth import Principal, TokenTable
from service.core.reconciler import Submitter
from service.core.slots import SubmitSlots
from service.core.streams import LogStreams
from service.settings import Settings, get_settings

__all__ = ["CurrentUser", "LogStreamsDep", "RayDep", "SessionDep", "SettingsDep",
           "SubmitSlotsDep", "SubmitterDep", "TrackingDep"]

# The dependencies here are ``async`` though none awaits: FastAPI runs each sync dependency as
# one more trip through the request thread pool (a sync generator two: in and out), and under
# load every trip queues for a thread and for the GIL. None of them blocks: a cached lookup, a
# stat and a hash; a session connects only at its first query, which runs in the route's thread
# (the routes stay sync), and its close hands the connection back to the pool.


async def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    with new_session(settings) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_ray(settings: SettingsDep) -> RayJobs:
    return get_ray_jobs(settings.ray_address)


RayDep = Annotated[RayJobs, Depends(get_ray)]


async def get_tracking_client(settings: SettingsDep) -> Tracking:
    return get_tracking(settings)


TrackingDep = Annotated[Tracking, Depends(get_tracking_client)]


async def get_submitter(request: Request) -> Submitter:
    return request.app.state.submitter


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]


async def get_log_streams(request: Request, settings: SettingsDep) -> LogStreams:
    """The app's count of open log streams, made at the first stream (on the event loop, so
    two first streams cannot make two counts)."""
    state = request.app.state
    if not hasattr(state, "log_streams"):
        state.log_streams = LogStreams(settings.max_log_streams)
    return state.log_streams


LogStreamsDep = Annotated[LogStreams, Depends(get_log_streams)]


async def get_submit_slots(request: Request, settings: SettingsDep) -> SubmitSlots:
    """The app's submission slots per owner (made on the event loop, so once)."""
    state = request.app.state
    if not hasattr(state, "submit_slots"):
        state.submit_slots = SubmitSlots(settings.max_submitting)
    return state.submit_slots


SubmitSlotsDep = Annotated[SubmitSlots, Depends(get_submit_slots)]


@lru_cache(maxsize=4)
def _tokens(file: Path | None, mtime: float, env: str) -> TokenTable:
    return TokenTable.load(file, env)


def tokens_for(settings: Settings) -> TokenTable:
    file = settings.tokens_file
    mtime = file.stat().st_mtime if file is not None and file.exists() else 0.0
    return _tokens(file, mtime, settings.tokens)  # a rewritten file is re-read


_bearer = HTTPBearer(auto_error=False, description="an API token from the tokens file")


async def current_user(settings: SettingsDep,
                       cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                       ) -> Principal:
    if cred is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    principal = tokens_for(settings).lookup(cred.credentials)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
