"""Registered data sets: register (after ``bckd data check``), upload, list, read, share
(admin)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path as FilePath
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request, status

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.core import datasets
from service.core.schemas import (
    NAME_PATTERN,
    DataSetCreate,
    DataSetPublic,
    DataSetSharing,
    DataSetsPublic,
)
from service.core.uploads import receive

router = APIRouter(prefix="/datasets", tags=["datasets"])

SetName = Annotated[str, Path(pattern=f"^{NAME_PATTERN}$")]
Owner = Annotated[str | None, Query(pattern=f"^{NAME_PATTERN}$",
                                    description="the set's owner (default: you)")]
NOT_FOUND = {404: {"description": "no such data set, or not visible to you"}}
# The archive route's bodies are capped by BCKD_MAX_UPLOAD_BYTES, not the API's body limit.
ARCHIVE_PATH = re.compile(r"^/v1/datasets/[^/]+/archive$")
TAR = {"schema": {"type": "string", "format": "binary"}}


@router.post("", response_model=DataSetPublic, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "you already have a data set of this name"},
                        422: {"description": "the path or the set fails its checks (named)"}})
def create_dataset(body: DataSetCreate, user: CurrentUser, session: SessionDep,
                   settings: SettingsDep) -> DataSetPublic:
    """Check the COCO set at ``path`` (images, boxes, categories) and register it by name."""
    row = datasets.register(session, user, body.name, body.path, body.description,
                            settings)
    return DataSetPublic.model_validate(row)


@router.post("/{name}/archive", response_model=DataSetPublic,
             status_code=status.HTTP_201_CREATED,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-tar": TAR, "application/gzip": TAR,
                 "application/octet-stream": TAR}}},
             responses={409: {"description": "you already have a data set of this name"},
                        413: {"description": "the archive, or what it unpacks to, is over "
                              "BCKD_MAX_UPLOAD_BYTES"},
                        422: {"description": "the archive or the set fails its checks "
                              "(named)"}})
async def upload_dataset(name: SetName, request: Request, user: CurrentUser,
                         settings: SettingsDep,
                         description: Annotated[str | None, Query(max_length=2000)] = None
                         ) -> DataSetPublic:
    """Upload a COCO set as a tar archive (gzip or not: ``annotations/``, ``train/``,
    ``val/`` at its top, or in its one top-level directory) into your own directory, check
    it as ``POST /v1/datasets`` does and register it as ``name``. Its files are readable by
    your jobs alone."""
    with tempfile.TemporaryDirectory(prefix="bckd-upload-") as tmp:
        archive = FilePath(tmp) / "set.tar"
        await receive(request.stream(), archive, settings.max_upload_bytes)
        row = await to_thread.run_sync(datasets.upload, user, name, archive, description,
                                       settings)
    return DataSetPublic.model_validate(row)


@router.get("", response_model=DataSetsPublic)
def list_datasets(user: CurrentUser, session: SessionDep) -> DataSetsPublic:
    """Your sets and those shared with you (an admin: all), with their summaries."""
    rows = datasets.list_visible(session, user)
    return DataSetsPublic(data=[DataSetPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{name}", response_model=DataSetPublic, responses=NOT_FOUND)
def read_dataset(name: SetName, user: CurrentUser, session: SessionDep,
                 owner: Owner = None) -> DataSetPublic:
    return DataSetPublic.model_validate(datasets.read(session, user, name, owner))


@router.put("/{name}/shared", response_model=DataSetPublic,
            responses={403: {"description": "not an admin token"},
                       409: {"description": "the set lives in its owner's directory"},
                       **NOT_FOUND})
def share_dataset(name: SetName, body: DataSetSharing, user: CurrentUser, session: SessionDep,
                  settings: SettingsDep, owner: Owner = None) -> DataSetPublic:
    """Admin: mark a set shared, so every user sees it and may train on it (``owner/name``)."""
    row = datasets.share(session, user, name, owner, body.shared, settings)
    return DataSetPublic.model_validate(row)
