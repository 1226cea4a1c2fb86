"""The one place where the core's domain errors (:mod:`service.core.errors`) become HTTP."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from service.core.errors import Invalid, Refused

__all__ = ["domain_error"]


async def domain_error(request: Request, err: Refused) -> JSONResponse:
    """An :class:`Invalid` field in FastAPI's own validation shape (``detail[0].loc`` names
    it); any other refusal as ``{"detail": message}``, as an ``HTTPException`` answers."""
    if isinstance(err, Invalid):
        where = "header" if err.field == "Idempotency-Key" else err.where
        return JSONResponse({"detail": [{"loc": [where, *err.field.split(".")],
                                         "msg": f"{err.field}: {err.msg}",
                                         "type": "value_error"}]}, status_code=err.status)
    return JSONResponse({"detail": str(err)}, status_code=err.status, headers=err.headers)
