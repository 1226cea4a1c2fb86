"""The FastAPI app: ``uvicorn service.main:app`` (settings from ``BCKD_*`` env variables)."""

from __future__ import annotations

import gc
import os
import threading
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service.adapters.db import migrate
from service.api.errors import domain_error
from service.api.middleware import BodyLimit, DocsPolicy
from service.api.routes import ARCHIVE_PATH, api_router, page_router
from service.core.errors import Refused
from service.core.reconciler import Reconciler, Submitter
from service.core.validation import warm_up
from service.settings import get_settings

__all__ = ["app", "create_app"]


def _warm_up_and_freeze() -> None:
    """Import what checking a request needs (``service.core.validation.warm_up``), then freeze.

    Everything imported by then (torch and mmdet among it: about half a million objects) lives
    as long as the process. Frozen, it is out of the collector's sight; a full collection,
    whenever one comes, would walk it all: 0.2-0.4 s on 2 cores, which every request waits for.
    """
    warm_up()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    # the sync routes' threads; the database pool keeps a connection for each of them
    to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    # beside the first requests, not inside the first submit, and not before the API answers
    # (about 8 s CPU: a start under load would outlast its callers' health checks)
    threading.Thread(target=_warm_up_and_freeze, name="bckd-warm-up", daemon=True).start()
    reconciler = Reconciler(settings) if settings.run_reconciler else None
    if reconciler is not None:
        reconciler.start()
    app.state.submitter = Submitter(settings)
    yield
    app.state.submitter.stop()
    if reconciler is not None:
        reconciler.stop()


def create_app() -> FastAPI:
    # An MLflow server that is down must fail a request in seconds, not after minutes of retry.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    # /docs and /redoc from the Swagger UI and ReDoc files that fastapi-offline ships (mounted at
    # /static-offline-docs, favicon too, no Google fonts): FastAPI's defaults load them from a
    # CDN, and the pages stay blank on a machine without internet.
    app = FastAPIOffline(title="bckd", version="1", lifespan=lifespan,
                  description="BCKD distillation jobs on Ray, tracked in MLflow.",
                  # operationId = the route function's name: stable, short, and what the
                  # OpenAPI links of POST /v1/jobs name
                  generate_unique_id_function=lambda route: route.name)
    app.include_router(api_router)
    app.include_router(page_router)  # /watch, the job page
    app.add_exception_handler(Refused, domain_error)
    app.add_middleware(BodyLimit, exempt=ARCHIVE_PATH)
    app.add_middleware(DocsPolicy, paths=("/docs", "/redoc"))
    return app


app = create_app()
