"""``runs:/`` checkpoints of a request, fetched from MLflow into the owner's directory.

``teacher_ckpt``, and an override of ``load_from`` or of a backbone's
``init_cfg.checkpoint``, may name ``runs:/<run id>/<path>.pth`` (or ``.pt``): a checkpoint
artifact of a run of the caller's own, one an admin marked shared, or any job's run for an admin
(the run's ``bckd.owner`` says whose it is). Nothing else of a run is fetched: not its config,
not a whole run, not a URI with a query. Each is downloaded once per owner and URI
(``OwnerDirs.teacher_dir``) before the config policy runs, which then sees a local file under
the owner's directory. Model-zoo URLs are not fetched here but by the job
(:mod:`bckd.checkpoint`). Called only for a new request, never for an idempotent retry.
"""

from __future__ import annotations

import re
from pathlib import Path

from bckd.config.paths import CHECKPOINT_KEYS
from service.adapters.tracking import Tracking
from service.core.auth import Principal
from service.core.errors import Invalid
from service.core.owners import OwnerDirs
from service.core.schemas import JobCreate

__all__ = ["RUNS", "fetch_run", "fetch_run_checkpoints"]

RUNS = "runs:/"
# runs:/<run id>/<artifact path ending .pth or .pt>: plain path parts, no query or fragment
RUNS_CHECKPOINT = re.compile(r"runs:/([0-9a-f]{32})/((?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+\.pth?)")
FORM = "runs:/<run id>/<checkpoint path>.pth, e.g. runs:/<run id>/checkpoints/final.pth"


def fetch_run(uri: str, field: str, user: Principal, owner: OwnerDirs,
              tracking: Tracking) -> str:
    """The local copy of ``uri``; 422 on ``field`` for a URI not of the form :data:`FORM`, a run
    the caller may not read (as if absent: no leak) or one that cannot be fetched."""
    m = RUNS_CHECKPOINT.fullmatch(uri)
    if m is None or ".." in m.group(2).split("/"):
        raise Invalid(field, f"{uri!r} is not a checkpoint of a run: give {FORM}")
    run_id = m.group(1)
    try:
        run = tracking.run(run_id)
    except Exception as err:
        raise Invalid(field, f"no MLflow run {run_id!r}") from err
    if not tracking.owner_of(run) or not (user.admin or tracking.visible_to(run, user.name)):
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
