"""The FastAPI app: ``uvicorn service.main:app`` (settings from ``BCKD_*`` env variables)."""

from __future__ import annotations

import gc
import os
import re
import threading
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from service.db import migrate
from service.errors import Invalid
from service.reconciler import Reconciler, Submitter
from service.routes import api_router, datasets
from service.settings import get_settings
from service.validation import warm_up

__all__ = ["app", "create_app"]


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app, limit: int, exempt: re.Pattern):
        self.app, self.limit, self.exempt = app, limit, exempt  # exempt: paths with own caps

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.exempt.match(scope["path"]):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        resp = JSONResponse({"detail": [{"loc": ["body"], "type": "too_large",
                                         "msg": f"body: larger than {self.limit} bytes"}]},
                            status_code=413)
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


# The docs pages may load from their own origin only. The assets are local (fastapi-offline), but
# ReDoc's bundle still draws its footer logo from a CDN; the policy keeps the browser from
# asking, so nothing of the docs leaves the machine. Inline: the pages' own start-up script and
# the styles the bundles inject; blob: ReDoc's search worker.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:")


class DocsPolicy:
    """Add ``DOCS_POLICY`` as the Content-Security-Policy of the responses under ``paths``."""

    def __init__(self, app, paths: tuple[str, ...]):
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            return await self.app(scope, receive, send)

        async def with_policy(msg):
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", []),
                                  (b"content-security-policy", DOCS_POLICY.encode())]
            await send(msg)

        await self.app(scope, receive, with_policy)


async def invalid_field(request: Request, err: Invalid) -> JSONResponse:
    """A refused field in FastAPI's own validation shape: ``detail[0].loc`` names it."""
    where = "header" if err.field == "Idempotency-Key" else "body"
    return JSONResponse({"detail": [{"loc": [where, *err.field.split(".")],
                                     "msg": f"{err.field}: {err.msg}", "type": "value_error"}]},
                        status_code=err.status)


def _warm_up_and_freeze() -> None:
    """Import what checking a request needs (``service.validation.warm_up``), then freeze.

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
    app.include_router(datasets.router, prefix="/v1")
    app.add_exception_handler(Invalid, invalid_field)
    app.add_middleware(BodyLimit, limit=get_settings().max_body_bytes,
                       exempt=datasets.ARCHIVE_PATH)
    app.add_middleware(DocsPolicy, paths=("/docs", "/redoc"))
    return app


app = create_app()
