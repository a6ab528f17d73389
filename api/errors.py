"""Every error as ``application/problem+json`` (RFC 9457) with the real HTTP status: korag's own,
FastAPI's validation errors, and Starlette's 404/405."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from api.headers import add_response_headers, scope_request_id
from korag.services.schemas import Problem

log = logging.getLogger("korag.serve")

PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")  # what a route of this service can take


class ApiError(Exception):
    """Raise anywhere in a route: becomes a problem response."""

    def __init__(self, status: int, title: str, detail: str | None = None, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.headers, self.errors = status, title, detail, headers, errors


def problem(status: int, title: str | None = None, detail: str | None = None, headers: dict[str, str] | None = None,
            errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    title = title if title is not None else _phrase(status)
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": _jsonable(list(e.get("loc", ()))), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()]


def validation_detail(exc: RequestValidationError) -> str:
    """The first five validation errors in one line: ``body.k: Input should be ...; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in validation_errors(exc)[:5])


def allowed_methods(request: Request) -> str | None:
    """The ``Allow`` header for the request's path: every method some route at that path takes (a
    path has one route per method, and the route that answers 405 lists only its own), HEAD with
    GET (api.app answers HEAD as GET); None when no route has that path (a mount lists its own)."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    allowed = {method for method in _METHODS for route in routes
               if route.matches({**request.scope, "method": method})[0] == Match.FULL}
    if not allowed:
        return None
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))


def install(app: FastAPI) -> None:
    _declare_problem(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return problem(exc.status, exc.title, exc.detail, exc.headers, exc.errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}"
        headers = dict(exc.headers) if exc.headers is not None else {}
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
            allow = allowed_methods(request)
            if allow is not None:  # the route that answered lists only its own methods
                headers["Allow"] = allow
        return problem(exc.status_code, None, detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return problem(422, "Invalid request", validation_detail(exc), errors=validation_errors(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        rid = scope_request_id(request.scope)
        named = f" (request {rid})" if rid is not None else ""
        response = problem(500, "Internal Server Error", f"{type(exc).__name__}: the service failed on this request; "
                           f"see its log{named}")
        add_response_headers(response.headers, rid, 500)  # made outside the middleware that adds them
        return response


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give: application/problem+json only.
    (A ``model`` would declare application/json as well, which no error is sent as; the Problem
    schema is put in the components by :func:`_declare_problem`.)"""
    return {code: {"description": _phrase(code), "content": {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}}}
            for code in codes}


def _declare_problem(app: FastAPI) -> None:
    """``#/components/schemas/Problem`` in the app's OpenAPI schema, which :func:`responses` refers to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        return app.openapi_schema

    app.openapi = openapi
