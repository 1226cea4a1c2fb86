"""ASGI middleware of the app: the body limit and the docs pages' content policy."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

from service.settings import get_settings

__all__ = ["BodyLimit", "DocsPolicy"]


class BodyLimit:
    """Refuse a request body over ``BCKD_MAX_BODY_BYTES`` with 413, whether announced or
    streamed; paths matching ``exempt`` have caps of their own (a data set's archive)."""

    def __init__(self, app, exempt: re.Pattern):
        # Starlette builds the middleware when the app starts (its lifespan), not at import
        self.app, self.exempt = app, exempt
        self.limit = get_settings().max_body_bytes

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
