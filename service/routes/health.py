"""Liveness and readiness; the only routes that need no token (probes carry none)."""

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from service.deps import RayDep, SessionDep, SettingsDep
from service.schemas import Health, Readiness
from service.tracking import get_tracking

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a dependency is down"}})
def ready(session: SessionDep, ray: RayDep, settings: SettingsDep,
          response: Response) -> Readiness:
    checks: dict[str, str] = {}
    probes = {
        "database": lambda: session.execute(text("SELECT 1")),
        "ray": ray.ping,
        "mlflow": lambda: get_tracking(settings.mlflow_uri, settings.mlflow_public_url).ping(),
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as err:
            checks[name] = f"{type(err).__name__}: {str(err)[:200]}"
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(ready=ok, checks=checks)
