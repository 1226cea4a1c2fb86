"""Domain errors of the service's core. Each carries the HTTP status it maps to, and
:func:`service.api.errors.domain_error`, the one exception handler, turns them into answers; the
core itself never speaks HTTP."""

from __future__ import annotations

__all__ = ["Busy", "Forbidden", "Invalid", "NotFound", "Refused", "Unavailable"]


class Refused(Exception):
    """A request the core refuses or cannot serve: ``str(err)`` is the answer's ``detail``,
    ``status`` its HTTP code, ``headers`` any headers it carries (``Retry-After``)."""

    status = 400

    def __init__(self, msg: str, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status or self.status
        self.headers = headers


class Invalid(Refused):
    """A request field the service refuses. ``field`` is its dotted path in the request
    (``config_upload.content.custom_hooks.0.type``), ``where`` the part of the request that
    holds it (``body``, ``query``, ``header``); ``status`` the HTTP code it maps to."""

    def __init__(self, field: str, msg: str, status: int = 422, where: str = "body") -> None:
        super().__init__(f"{field}: {msg}", status)
        self.field = field
        self.msg = msg
        self.where = where


class NotFound(Refused):
    """No such thing, or not the caller's: the same answer, so nothing leaks (404)."""

    status = 404


class Forbidden(Refused):
    """An admin's action asked with a user's token (403)."""

    status = 403


class Busy(Refused):
    """The caller holds as much of a shared resource as one owner may (429)."""

    status = 429


class Unavailable(Refused):
    """A dependency the request needs (Ray, MLflow) did not answer: HTTP 503 or 502."""

    status = 503
