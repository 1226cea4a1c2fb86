"""One router per concern, all under /v1."""

from fastapi import APIRouter

from service.routes import configs, experiments, health, jobs, runs

__all__ = ["api_router"]

api_router = APIRouter(prefix="/v1")
api_router.include_router(health.router)
api_router.include_router(jobs.router)
api_router.include_router(configs.router)
api_router.include_router(experiments.router)
api_router.include_router(runs.router)
