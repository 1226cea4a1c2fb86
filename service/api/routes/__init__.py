"""One router per concern, all mounted here under /v1: health, jobs, configs, experiments, runs,
datasets."""

from fastapi import APIRouter

from service.api.routes import configs, datasets, experiments, health, jobs, runs
from service.api.routes.datasets import ARCHIVE_PATH

__all__ = ["ARCHIVE_PATH", "api_router"]

api_router = APIRouter(prefix="/v1")
api_router.include_router(health.router)
api_router.include_router(jobs.router)
api_router.include_router(configs.router)
api_router.include_router(experiments.router)
api_router.include_router(runs.router)
api_router.include_router(datasets.router)
