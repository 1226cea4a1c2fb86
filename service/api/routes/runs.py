"""Admin: mark a job's MLflow run shared, so every user may compare it and distill from it.

Only runs the service made for a job can be shared (``service.core.runs``).
"""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from service.api.deps import CurrentUser, TrackingDep
from service.core.runs import share_run

router = APIRouter(prefix="/runs", tags=["runs"])

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an MLflow run id")]


class Sharing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared: bool


class RunSharing(BaseModel):
    run_id: str
    shared: bool


@router.put("/{run_id}/shared", response_model=RunSharing,
            responses={403: {"description": "not an admin token"},
                       404: {"description": "no such run of a job"},
                       502: {"description": "MLflow did not answer"}})
def set_shared(run_id: RunId, body: Sharing, user: CurrentUser,
               tracking: TrackingDep) -> RunSharing:
    share_run(tracking, user, run_id, body.shared)
    return RunSharing(run_id=run_id, shared=body.shared)
