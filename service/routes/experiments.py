"""Compare the runs of an MLflow experiment: key params and COCO metrics, with run links."""

from fastapi import APIRouter, HTTPException, Path, status

from service.deps import CurrentUser, SettingsDep
from service.schemas import ComparePublic, CompareRow
from service.tracking import get_tracking

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("/{experiment}/compare", response_model=ComparePublic)
def compare(experiment: str = Path(max_length=128), *, _: CurrentUser,
            settings: SettingsDep) -> ComparePublic:
    tracking = get_tracking(settings.mlflow_uri, settings.mlflow_public_url)
    try:
        found = tracking.compare(experiment)
    except Exception as err:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"MLflow: {err}") from err
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"experiment {experiment!r} not found")
    exp_id, rows = found
    keys = sorted({k for r in rows for k in r["metrics"]})
    return ComparePublic(experiment=experiment, experiment_id=exp_id, metric_keys=keys,
                         runs=[CompareRow(**r) for r in rows])
