"""Readiness: whether each dependency of the API answers."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.adapters.ray_jobs import RayJobs
from service.adapters.tracking import Tracking

__all__ = ["readiness"]


def readiness(session: Session, ray: RayJobs, tracking: Tracking) -> dict[str, str]:
    """``{"database": "ok", "ray": "ok", "mlflow": "ok"}``, or the error a probe raised, cut
    to 200 characters, in place of its ``ok``."""
    checks: dict[str, str] = {}
    probes = {"database": lambda: session.execute(text("SELECT 1")), "ray": ray.ping,
              "mlflow": tracking.ping}
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as err:
            checks[name] = f"{type(err).__name__}: {str(err)[:200]}"
    return checks
