"""``runs:/`` checkpoints of a request, fetched from MLflow into the owner's directory.

``teacher_ckpt``, and an override of ``load_from`` or of a backbone's
``init_cfg.checkpoint``, may name ``runs:/<run id>/<path>``: a run of the caller's own, one an
admin marked shared, or any run for an admin. Each is downloaded once per owner and URI
(``OwnerDirs.teacher_dir``) before the config policy runs, which then sees a local file under
the owner's directory. Model-zoo URLs are not fetched here but by the job
(:mod:`bckd.checkpoint`). Called only for a new request, never for an idempotent retry.
"""

from __future__ import annotations

from pathlib import Path

from bckd.engine.paths import CHECKPOINT_KEYS
from service.auth import Principal
from service.errors import Invalid
from service.owners import OwnerDirs
from service.schemas import JobCreate
from service.tracking import Tracking

__all__ = ["RUNS", "fetch_run", "fetch_run_checkpoints"]

RUNS = "runs:/"


def fetch_run(uri: str, field: str, user: Principal, owner: OwnerDirs,
              tracking: Tracking) -> str:
    """The local copy of ``uri``; 422 on ``field`` for a run the caller may not read (as if
    absent: no leak) or that cannot be fetched."""
    run_id = uri.removeprefix(RUNS).split("/", 1)[0]
    try:
        run = tracking.run(run_id)
    except Exception as err:
        raise Invalid(field, f"no MLflow run {run_id!r}") from err
    if not user.admin and not tracking.visible_to(run, user.name):
        raise Invalid(field, f"no MLflow run {run_id!r}")
    try:
        return str(Path(tracking.download(uri, owner.teacher_dir(uri))))
    except Exception as err:
        raise Invalid(field, f"cannot fetch {uri!r}: {err}") from err


def fetch_run_checkpoints(req: JobCreate, user: Principal, owner: OwnerDirs,
                          tracking: Tracking) -> dict[str, str]:
    """Request field -> local path for every ``runs:/`` checkpoint of ``req``:
    ``teacher_ckpt`` and ``overrides.<key>`` whose last part is a checkpoint key."""
    wanted = {}
    if req.teacher_ckpt is not None and req.teacher_ckpt.startswith(RUNS):
        wanted["teacher_ckpt"] = req.teacher_ckpt
    for key, value in req.overrides.items():
        if isinstance(value, str) and value.startswith(RUNS) and \
                key.rsplit(".", 1)[-1] in CHECKPOINT_KEYS:
            wanted[f"overrides.{key}"] = value
    return {field: fetch_run(uri, field, user, owner, tracking) for field, uri in wanted.items()}
