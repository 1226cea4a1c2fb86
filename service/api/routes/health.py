"""Liveness and readiness; the only routes that need no token (probes carry none)."""

from fastapi import APIRouter, Response, status

from service.api.deps import RayDep, SessionDep, TrackingDep
from service.core.health import readiness
from service.core.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a dependency is down"}})
def ready(session: SessionDep, ray: RayDep, tracking: TrackingDep,
          response: Response) -> Readiness:
    checks = readiness(session, ray, tracking)
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(ready=ok, checks=checks)
