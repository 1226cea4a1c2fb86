"""Domain errors of the service's core; ``service.main`` alone turns them into HTTP answers."""

from __future__ import annotations

__all__ = ["Invalid", "Unavailable"]


class Invalid(Exception):
    """A request field the service refuses. ``field`` is its dotted path in the request
    (``config_upload.content.custom_hooks.0.type``); ``status`` the HTTP code it maps to."""

    def __init__(self, field: str, msg: str, status: int = 422) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg
        self.status = status


class Unavailable(Exception):
    """A dependency the request needs (Ray, MLflow) did not answer: HTTP 503 or 502."""

    def __init__(self, msg: str, status: int = 503) -> None:
        super().__init__(msg)
        self.status = status
