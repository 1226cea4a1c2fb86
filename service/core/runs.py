"""Runs the service made for jobs: an admin shares one so every user may compare it and distill
from it. Only runs that carry ``bckd.owner`` can be shared; any other run of the tracking store
is answered as absent."""

from __future__ import annotations

from service.adapters.tracking import NotOwned, Tracking
from service.core.auth import Principal
from service.core.errors import Forbidden, NotFound, Unavailable

__all__ = ["share_run"]


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
