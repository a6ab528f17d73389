"""The FastAPI app of ``korag serve``: ``create_app(settings, service=...)``.

Routes are thin over :class:`korag.services.service.Service`; errors are problem+json (api.errors); the
caller's tenant comes from its key (api.auth). ``/healthz`` answers as soon as the process is up
(503 once it cannot serve again without a restart: its store process exited), ``/readyz`` once
the model is loaded and the store (and broker) answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import docs, errors, headers
from api.auth import Caller, admin_caller, caller
from api.errors import ApiError, responses
from api.routes_dify import install as install_dify
from api.routes_documents import describe_upload, service_of
from api.routes_documents import router as documents_router
from api.routes_search import describe_filter
from api.routes_search import router as search_router
from ingest.parsing import SUPPORTED_SUFFIXES
from korag.services.keys import KeyRing, KeyRingError
from korag.services.schemas import Health, Info, Limits, Ready
from korag.services.service import Service
from korag.services.telemetry import Metrics
from korag.settings import Settings

log = logging.getLogger("korag.serve")
STATIC = Path(__file__).resolve().parent / "static"


def _version() -> str:
    try:
        return version("korag")
    except PackageNotFoundError:
        return "0"


def create_app(settings: Settings, service: Service | None = None, *, keys: KeyRing | None = None,
               open_allowed: bool = True, metrics: Metrics | None = None,
               open_service: Callable[[], Service] | None = None) -> FastAPI:
    """``service``: an opened :class:`korag.services.service.Service` (``korag serve`` opens it before
    listening, so setup errors end the command); or ``open_service``, the service's root (e.g.
    :func:`korag.cli.serve.open_service` with its parts), called at start-up, and the service it
    returns closed at shutdown. The app builds no service of its own: until one is there, routes
    answer 503. ``open_allowed``: run without keys (only when listening on a loopback address); decided here,
    once: open only when allowed and no key exists now, and closed for good once a key appears."""
    if metrics is None and service is not None:
        metrics = service.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = None
        if app.state.service is None and open_service is not None:
            owned = await run_in_threadpool(open_service)
            app.state.service = owned
        try:
            yield
        finally:
            if owned is not None:
                await run_in_threadpool(owned.close)
                app.state.service = None

    app = FastAPI(title="korag", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,  # api/docs.py
                  description="Korean-first document ingestion and retrieval. Errors are application/problem+json.")
    app.state.settings = settings
    app.state.service = service
    app.state.keys = keys if keys is not None else KeyRing.from_settings(settings)
    app.state.open_allowed = open_allowed
    _decide_open_mode(app.state.keys)
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(_HeadAsGet)
    _install_metrics_middleware(app)
    headers.install(app, settings.cors_origin_list)  # outermost: after every other middleware
    docs.install(app)  # /docs and /redoc from packaged assets

    app.include_router(documents_router)
    describe_upload(app, settings.api_max_files)
    app.include_router(search_router)
    describe_filter(app)  # the filter language's schemas
    install_dify(app)  # POST /v1/retrieval

    @app.get("/healthz", response_model=Health, tags=["service"], summary="The process is up",
             responses={503: {"description": "the process cannot serve again until it is restarted (its store "
                              "process exited)", "content": {errors.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}})
    def healthz(request: Request):
        service = request.app.state.service
        reason = service.broken() if service is not None else None
        if reason is not None:
            return errors.problem(503, "Broken", reason)
        return Health()

    not_ready = {503: {"description": "not ready: the failing check, or a problem while starting", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Ready"}},
        errors.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}}

    @app.get("/readyz", response_model=Ready, tags=["service"], responses=not_ready,
             summary="Model loaded, store open, broker reachable when configured")
    def readyz(request: Request):
        service = request.app.state.service
        if service is None:
            return errors.problem(503, "Starting", "loading the model and opening the store",
                                  headers={"Retry-After": "5"})
        checks = service.checks()
        if all(v.startswith("ok") for v in checks.values()):
            return Ready(ready=True, checks=checks)
        return JSONResponse(Ready(ready=False, checks=checks).model_dump(), status_code=503)

    @app.get("/v1/info", response_model=Info, tags=["service"], responses=responses(400, 401, 503),
             summary="Model, dimension, token limit, file types and limits")
    def info(request: Request, who: Caller = Depends(caller)) -> Info:
        service = service_of(request)
        s = service.settings
        embedder = service.embedder.info
        return Info(
            version=_version(), mode=service.mode, model=embedder.name, dimension=embedder.dimension,
            max_input_tokens=embedder.max_input_tokens, search_modes=["dense", "sparse", "hybrid"],
            default_search_mode=s.search_mode, default_search_context=s.search_context, file_types=sorted(SUPPORTED_SUFFIXES),
            limits=Limits(max_file_bytes=s.max_file_bytes,
                          max_upload_bytes=s.max_upload_bytes if s.max_upload_bytes is not None
                          else s.max_file_bytes + 2**20,
                          max_files=s.api_max_files, max_wait_s=600.0),
            backend=service.store.backend, tenant=who.tenant, ocr=service.ocr())

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse,  # the only 200 type it sends
             responses=responses(400, 401, 403, 503),
             summary="Prometheus metrics (an admin key when keys are configured: they count every tenant)")
    def prometheus(request: Request, who: Caller = Depends(admin_caller)):
        metrics = request.app.state.metrics
        if metrics is None:
            raise ApiError(503, "No metrics", "this service was started without metrics")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    _mount_console(app)
    return app


def _decide_open_mode(keys: KeyRing) -> None:
    """Read the keys once now: a key that exists at start keeps the service keyed for good
    (KeyRing.configured never turns false again). An unreadable key file is answered 503 per request."""
    try:
        _ = keys.configured
    except KeyRingError:
        pass


def _install_metrics_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics = request.app.state.metrics
            if metrics is not None:
                route = request.scope.get("route")
                template = getattr(route, "path", None)
                metrics.observe_http(request.method, template, status, time.perf_counter() - started)


def _mount_console(app: FastAPI) -> None:
    """The console (api/static/) at ``/``, for the paths of its own files only: mounted for every
    path, it answered every method the routes did not take (405 ``Allow: GET, HEAD`` on POST-only
    routes, 404 for ``GET /v1/search``). Starlette reaches the mount after the routes, so a path
    the console does not serve gets the routes' own 405 (api.errors) or 404."""
    if not (STATIC / "index.html").is_file():
        return
    served = frozenset({"/"} | {"/" + f.relative_to(STATIC).as_posix() for f in STATIC.rglob("*") if f.is_file()})
    app.router.routes.append(_Console(served, StaticFiles(directory=STATIC, html=True)))


class _Console(Mount):
    def __init__(self, served: frozenset[str], files: ASGIApp) -> None:
        super().__init__("/", app=files, name="console")
        self.served = served

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"][len(scope.get("root_path", "")):] not in self.served:
            return Match.NONE, {}
        return super().matches(scope)


class _HeadAsGet:
    """HEAD on every GET route (RFC 9110: a GET's headers, no body): FastAPI routes take only the
    methods they declare, so HEAD /healthz was 404. The app sees a GET; the body is dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
