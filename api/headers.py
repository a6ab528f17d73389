"""What every response of ``korag serve`` carries, and what a browser client needs.

- ``X-Request-Id``: the client's own (``[A-Za-z0-9._:@+=/-]``, 1 to 128 characters), else a new
  one; echoed on every response, errors included, and written into the service's log lines for
  that request (:func:`install_log_context`), so a user's report can be matched to the log.
- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a Content-Security-Policy on
  every response: the console (``api/static/``) loads only its own script and style files, so
  ``'self'`` is all it needs; nothing may frame a page of the service. A route that needs more
  (the API docs' inline start-up script) sets its own policy, which is kept.
- ``WWW-Authenticate: Bearer`` on every 401 that does not carry a challenge already (RFC 9110
  section 11.6.1 requires one), whichever code produced it.
- CORS (``KORAG_CORS_ORIGINS``): off unless origins are configured.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
request_id: ContextVar[str | None] = ContextVar("korag_request_id", default=None)

CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
CORS_HEADERS = ["Authorization", "Content-Type", "X-Korag-Tenant", REQUEST_ID_HEADER]
CORS_EXPOSED = [REQUEST_ID_HEADER, "Location", "Retry-After", "WWW-Authenticate"]


def request_id_from(value: str | None) -> str:
    """The client's id when it is a sane one (it goes into log lines and headers verbatim), else a new one."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def add_response_headers(headers: MutableHeaders, rid: str | None, status: int) -> None:
    """The headers of the module docstring, onto one response's headers."""
    if rid is not None:
        headers[REQUEST_ID_HEADER] = rid
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")


def scope_request_id(scope: Scope) -> str | None:
    """The id :class:`ResponseHeaders` gave this request (for a response made outside it: a 500)."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


class ResponseHeaders:
    """Pure ASGI middleware (no extra task per request): names the request, then adds the headers
    to whatever response the app sends. The outermost of korag's own middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = rid
        # Not reset afterwards: uvicorn runs each request in a task of its own, so the value ends
        # with it, and the 500 handler outside this middleware still logs with it.
        request_id.set(rid)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_response_headers(MutableHeaders(scope=message), rid, message["status"])
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: Any, cors_origins: list[str]) -> None:
    """CORS (when origins are given) inside :class:`ResponseHeaders`, so preflight answers carry
    the request id too. Call after every other middleware is added: the last added is outermost."""
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED, max_age=600)
    app.add_middleware(ResponseHeaders)


def install_log_context() -> None:
    """Every log record gets ``request_id`` (``-`` outside a request), for :data:`LOG_FORMAT` and
    uvicorn's access log (:func:`uvicorn_log_config`). A record factory, not a filter: it reaches
    every handler, uvicorn's included."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "korag_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        current = request_id.get()
        record.request_id = current if current is not None else "-"
        return record

    factory.korag_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup, its lines ending with the request id."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"] + " [%(request_id)s]"
    return config

