"""Registered data sets: register (after ``bckd data check``), list, read, share (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from service.datasets import find_visible, list_visible, register, set_shared
from service.db import DataSet
from service.deps import CurrentUser, SessionDep, SettingsDep
from service.schemas import DataSetCreate, DataSetPublic, DataSetSharing, DataSetsPublic

router = APIRouter(prefix="/datasets", tags=["datasets"])

SetName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Owner = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                                    description="the set's owner (default: you)")]
NOT_FOUND = {404: {"description": "no such data set, or not visible to you"}}


def _found(row: DataSet | None, name: str) -> DataSet:
    if row is None:  # another user's unshared set reads as absent: no leak
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"data set {name!r} not found")
    return row


@router.post("", response_model=DataSetPublic, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "you already have a data set of this name"},
                        422: {"description": "the path or the set fails its checks (named)"}})
def create_dataset(body: DataSetCreate, user: CurrentUser, session: SessionDep,
                   settings: SettingsDep) -> DataSetPublic:
    """Check the COCO set at ``path`` (images, boxes, categories) and register it by name."""
    row = register(session, user, body.name, body.path, body.description, settings)
    return DataSetPublic.model_validate(row)


@router.get("", response_model=DataSetsPublic)
def list_datasets(user: CurrentUser, session: SessionDep) -> DataSetsPublic:
    """Your sets and those shared with you (an admin: all), with their summaries."""
    rows = list_visible(session, user)
    return DataSetsPublic(data=[DataSetPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{name}", response_model=DataSetPublic, responses=NOT_FOUND)
def read_dataset(name: SetName, user: CurrentUser, session: SessionDep,
                 owner: Owner = None) -> DataSetPublic:
    return DataSetPublic.model_validate(_found(find_visible(session, user, name, owner), name))


@router.put("/{name}/shared", response_model=DataSetPublic,
            responses={403: {"description": "not an admin token"}, **NOT_FOUND})
def share_dataset(name: SetName, body: DataSetSharing, user: CurrentUser, session: SessionDep,
                  owner: Owner = None) -> DataSetPublic:
    """Admin: mark a set shared, so every user sees it and may train on it (``owner/name``)."""
    if not user.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin token shares data sets")
    row = _found(find_visible(session, user, name, owner), name)
    return DataSetPublic.model_validate(set_shared(session, row, body.shared))
