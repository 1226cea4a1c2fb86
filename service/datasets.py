"""Registered data sets: a name for a checked COCO directory under the shared data roots.

``register`` runs ``bckd data check`` (:func:`bckd.data.check.check_dataset`) and stores the
set's summary, so a job that names the set (``JobCreate.dataset``) gets its classes without
reading its files again. A set is its owner's: another user neither sees nor uses it (as if
it did not exist) until an admin marks it shared; an admin sees every one. Sets live under the
shared data roots only (not an owner's directory), so a shared set is readable by the jobs of
everyone it is shared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bckd.data.check import DataSetError, check_dataset
from service.auth import Principal
from service.db import DataSet
from service.errors import Invalid
from service.hints import did_you_mean
from service.schemas import JobCreate
from service.settings import PROJECT_ROOT, Settings

__all__ = ["DataSource", "find_visible", "list_visible", "register", "set_shared",
           "data_source", "source_of"]


@dataclass(frozen=True)
class DataSource:
    """The data set a job trains on: its root, its classes (None: unknown) and the request
    field that named it (for error locations)."""

    root: str
    classes: list[str] | None
    field: str  # "dataset" or "data_root"


def _under_data_roots(path: str, settings: Settings) -> Path:
    roots = [r.resolve() for r in settings.data_roots]
    try:
        resolved = (Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path).resolve()
    except (OSError, ValueError) as err:
        raise Invalid("path", f"{path!r} is not a valid path: {err}") from None
    if not any(resolved.is_relative_to(r) for r in roots):
        raise Invalid("path", f"{path!r} is outside the shared data roots "
                      f"({', '.join(map(str, roots))})")
    if not resolved.is_dir():
        raise Invalid("path", f"{path!r} is not a directory")
    return resolved


def register(session: Session, user: Principal, name: str, path: str,
             description: str | None, settings: Settings) -> DataSet:
    """Check the set at ``path`` and store it as ``user``'s ``name``; 422 naming what failed,
    409 when the name is taken."""
    if session.get(DataSet, (user.name, name)) is not None:
        raise Invalid("name", f"you already have a data set named {name!r}", 409)
    root = _under_data_roots(path, settings)
    try:
        summary = check_dataset(root)
    except DataSetError as err:
        raise Invalid("path", str(err)) from None
    row = DataSet(owner=user.name, name=name, path=str(root), description=description,
                  summary=summary.to_dict(), shared=False)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # registered at the same moment
        session.rollback()
        raise Invalid("name", f"you already have a data set named {name!r}", 409) from None
    return row


def _visible(user: Principal):
    return [] if user.admin else [or_(DataSet.owner == user.name, DataSet.shared.is_(True))]


def list_visible(session: Session, user: Principal) -> list[DataSet]:
    return list(session.scalars(select(DataSet).where(*_visible(user))
                                .order_by(DataSet.owner, DataSet.name)))


def find_visible(session: Session, user: Principal, name: str, owner: str | None = None
                 ) -> DataSet | None:
    """``owner``'s set ``name`` (default: the caller's), if the caller may see it."""
    row = session.get(DataSet, (owner or user.name, name))
    if row is None or not (user.admin or row.owner == user.name or row.shared):
        return None
    return row


def set_shared(session: Session, row: DataSet, shared: bool) -> DataSet:
    row.shared = shared
    session.commit()
    return row


def source_of(session: Session, user: Principal, ref: str) -> DataSource:
    """The set a job's ``dataset`` names: ``name`` (the caller's) or ``owner/name`` (one
    shared with the caller); 422 as if absent when the caller may not use it."""
    owner, _, name = ref.rpartition("/")
    row = find_visible(session, user, name, owner or None)
    if row is None:
        known = (r.name if r.owner == user.name else f"{r.owner}/{r.name}"
                 for r in list_visible(session, user))
        raise Invalid("dataset", f"no data set {ref!r}{did_you_mean(ref, known)}; see "
                      "GET /v1/datasets, or register one: POST /v1/datasets")
    return DataSource(root=row.path, classes=list(row.summary["classes"]), field="dataset")


def data_source(session: Session, user: Principal, req: JobCreate) -> DataSource | None:
    """The data set a request trains on: a registered one, or a raw ``data_root``."""
    if req.dataset is not None and req.data_root is not None:
        raise Invalid("dataset", "give one of dataset and data_root")
    if req.dataset is not None:
        return source_of(session, user, req.dataset)
    return DataSource(req.data_root, None, "data_root") if req.data_root is not None else None
