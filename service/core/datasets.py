"""Registered data sets: a name for a checked COCO directory, under the shared data roots or
in its owner's own directory.

``register`` runs ``bckd data check`` (:func:`bckd.data.check.check_dataset`) and stores the
set's summary, so a job that names the set (``JobCreate.dataset``) gets its classes without
reading its files again; ``register_upload`` does the same for a set its owner uploaded as an
archive into ``<data dir>/owners/<owner>/datasets/<name>``. A set is its owner's: another user
neither sees nor uses it by name (as if it did not exist) until an admin marks it shared; an
admin sees every one. A path is one owner's: a path inside, around or equal to another owner's
registered set, or in another owner's directory, is refused. A registration grants the name
and its summary, not the files: files under a shared data root stay readable by any user's
job through ``data_root``; only an uploaded set's files are its owner's alone.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bckd.data.check import DataSetError, check_dataset
from service.adapters.db import DataSet, new_session
from service.core.auth import Principal
from service.core.errors import Forbidden, Invalid, NotFound
from service.core.hints import did_you_mean
from service.core.schemas import JobCreate
from service.core.uploads import unpack
from service.settings import PROJECT_ROOT, Settings

__all__ = ["DataSource", "data_source", "find_visible", "list_visible", "register",
           "register_upload", "set_shared", "source_of"]


@dataclass(frozen=True)
class DataSource:
    """The data set a job trains on: its root, its classes (None: unknown) and the request
    field that named it (for error locations)."""

    root: str
    classes: list[str] | None
    field: str  # "dataset" or "data_root"


def _allowed_path(path: str, user: Principal, settings: Settings) -> Path:
    """``path`` resolved, if it is under a shared data root or in ``user``'s own directory."""
    try:
        resolved = (Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path).resolve()
    except (OSError, ValueError) as err:
        raise Invalid("path", f"{path!r} is not a valid path: {err}") from None
    own = settings.owners_dir / user.name
    if resolved.is_relative_to(settings.owners_dir) and not resolved.is_relative_to(own):
        raise Invalid("path", f"{path!r} is in another owner's directory; register a set of "
                      "your own, or upload one with POST /v1/datasets/{name}/archive", 403)
    roots = settings.shared_roots
    if not (resolved.is_relative_to(own) or any(resolved.is_relative_to(r) for r in roots)):
        raise Invalid("path", f"{path!r} is outside the shared data roots "
                      f"({', '.join(map(str, roots))}) and your own directory; upload the set "
                      "with POST /v1/datasets/{name}/archive")
    if not resolved.is_dir():
        raise Invalid("path", f"{path!r} is not a directory")
    return resolved


def _unclaimed(session: Session, user: Principal, root: Path) -> None:
    """Refuse (409 on ``path``) a ``root`` equal to, inside or around another owner's set:
    a second name on the same files would get around the first owner's choice of sharing."""
    for (other,) in session.execute(select(DataSet.path).where(DataSet.owner != user.name)):
        if root.is_relative_to(other) or Path(other).is_relative_to(root):
            raise Invalid("path", f"{str(root)!r} overlaps a set another owner registered; a "
                          "set shared with you is named owner/name (GET /v1/datasets)", 409)


def _check(root: Path, field: str, shown: Path | None = None) -> dict:
    """``bckd data check`` of ``root``: its summary as stored (root shown as ``shown``), or
    422 on ``field`` listing the problems."""
    try:
        summary = check_dataset(root).to_dict()
    except DataSetError as err:
        text = str(err) if shown is None else str(err).replace(str(root), str(shown))
        raise Invalid(field, text) from None
    return {**summary, "root": str(shown or root)}


def _insert(session: Session, row: DataSet) -> DataSet:
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # registered at the same moment
        session.rollback()
        raise Invalid("name", f"you already have a data set named {row.name!r}", 409) from None
    return row


def _name_free(session: Session, user: Principal, name: str) -> None:
    if session.get(DataSet, (user.name, name)) is not None:
        raise Invalid("name", f"you already have a data set named {name!r}", 409)


def register(session: Session, user: Principal, name: str, path: str,
             description: str | None, settings: Settings) -> DataSet:
    """Check the set at ``path`` and store it as ``user``'s ``name``; 422 naming what failed,
    403 in another owner's directory, 409 when the name or the path is taken."""
    _name_free(session, user, name)
    root = _allowed_path(path, user, settings)
    _unclaimed(session, user, root)
    return _insert(session, DataSet(owner=user.name, name=name, path=str(root),
                                    description=description, summary=_check(root, "path"),
                                    shared=False))


def register_upload(session: Session, user: Principal, name: str, archive: Path,
                    description: str | None, settings: Settings) -> DataSet:
    """Unpack ``archive`` (``service.core.uploads.unpack``) into ``user``'s directory, check it
    and store it as ``name``; 422 on ``archive`` naming what failed, 409 a taken name."""
    _name_free(session, user, name)
    sets = settings.owners_dir / user.name / "datasets"  # read by user's jobs alone
    sets.mkdir(parents=True, exist_ok=True)
    dest = sets / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=sets))  # same file system
    try:
        root = unpack(archive, staging, settings.max_upload_bytes)
        summary = _check(root, "archive", shown=dest)
        if dest.exists():  # an unregistered leftover (the name is free): a crash's
            shutil.rmtree(dest)
        try:
            root.rename(dest)
        except OSError:  # the same name uploaded at the same moment
            raise Invalid("name", f"a set named {name!r} is being uploaded", 409) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        return _insert(session, DataSet(owner=user.name, name=name, path=str(dest),
                                        description=description, summary=summary,
                                        shared=False))
    except Invalid:
        shutil.rmtree(dest, ignore_errors=True)
        raise


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


def upload(user: Principal, name: str, archive: Path, description: str | None,
           settings: Settings) -> DataSet:
    """:func:`register_upload` in a session of its own: it runs in a worker thread, for seconds
    to minutes (images are decoded)."""
    with new_session(settings) as session:
        return register_upload(session, user, name, archive, description, settings)


def read(session: Session, user: Principal, name: str, owner: str | None = None) -> DataSet:
    """:func:`find_visible`, or :class:`NotFound`: another user's unshared set reads as
    absent, so nothing leaks."""
    row = find_visible(session, user, name, owner)
    if row is None:
        raise NotFound(f"data set {name!r} not found")
    return row


def share(session: Session, user: Principal, name: str, owner: str | None, shared: bool,
          settings: Settings) -> DataSet:
    """Admin: mark a visible set shared or not (:func:`set_shared`)."""
    if not user.admin:
        raise Forbidden("only an admin token shares data sets")
    return set_shared(session, read(session, user, name, owner), shared, settings)


def set_shared(session: Session, row: DataSet, shared: bool, settings: Settings) -> DataSet:
    """Mark ``row`` shared or not; 409 on ``shared`` for a set in its owner's directory,
    which other owners' jobs may not read."""
    if shared and Path(row.path).is_relative_to(settings.owners_dir):
        raise Invalid("shared", f"{row.owner}/{row.name} lives in {row.owner}'s own directory, "
                      "which only their jobs read; to share it, copy it under a shared data "
                      "root and register that copy (POST /v1/datasets)", 409)
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
