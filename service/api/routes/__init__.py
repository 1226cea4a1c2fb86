"""One router per concern, all mounted here under /v1: health, jobs, configs, experiments, runs,
datasets, quotas, watch (``/v1/me``, ``/v1/jobs/{id}/view``); the job page itself is
``page_router`` (``/watch``, outside /v1)."""

from fastapi import APIRouter

from service.api.routes import configs, datasets, experiments, health, jobs, quotas, runs, watch
from service.api.routes.datasets import ARCHIVE_PATH

__all__ = ["ARCHIVE_PATH", "api_router", "page_router"]

api_router = APIRouter(prefix="/v1")
api_router.include_router(health.router)
api_router.include_router(jobs.router)
api_router.include_router(configs.router)
api_router.include_router(experiments.router)
api_router.include_router(runs.router)
api_router.include_router(datasets.router)
api_router.include_router(quotas.router)
api_router.include_router(watch.router)
page_router = watch.page_router
