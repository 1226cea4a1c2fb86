"""Admin: mark a job's MLflow run shared, so every user may compare it and distill from it.

Only runs the service made for a job (they carry ``bckd.owner``) can be shared; any other run of
the tracking store is answered as absent.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict

from service.deps import CurrentUser, SettingsDep
from service.tracking import NotOwned, get_tracking

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
               settings: SettingsDep) -> RunSharing:
    if not user.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin token shares runs")
    tracking = get_tracking(settings.mlflow_uri, settings.mlflow_public_url)
    try:
        tracking.set_shared(run_id, body.shared)
    except NotOwned as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no MLflow run {run_id!r} of a job") from err
    except Exception as err:  # MLflow did not answer
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"MLflow: {err}") from err
    return RunSharing(run_id=run_id, shared=body.shared)
