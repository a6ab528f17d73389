"""``POST /v1/retrieval``: Dify's External Knowledge API (retrieval/dify.py) with Dify's own error
bodies (``{"error_code", "error_msg"}``, request validation included), so a Dify app can use
korag as its knowledge base. In Dify: endpoint ``http://<korag>/v1``, a korag key as the API key,
KORAG_COLLECTION as the knowledge id. An endpoint registered with a trailing slash
(``http://<korag>/v1/``) makes Dify call ``/v1//retrieval``: served too."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from starlette.exceptions import HTTPException

from api.auth import TENANT_HEADER, bearer_scheme
from api.errors import responses, validation_detail
from api.routes_documents import service_of
from korag.services.keys import ADMIN_TENANT, KeyRingError, check_named_tenant
from retrieval.dify import DifyError, DifyErrorBody, DifyRequest, DifyResponse, bearer_key, retrieve


class DifyRoute(APIRoute):
    """A request korag cannot read is Dify's error body (3001: 422 for a field missing or invalid
    or a body that is not JSON, 400 for one FastAPI cannot parse at all), not the service's
    problem+json: Dify shows ``error_msg`` to its user."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise DifyError.invalid_request(validation_detail(exc)) from None
            except HTTPException as exc:  # FastAPI's 400 for a body it cannot even parse
                if exc.status_code != 400:
                    raise
                raise DifyError(400, 3001, f"invalid request: {exc.detail}") from None

        return route


router = APIRouter(tags=["dify"], route_class=DifyRoute)


def dify_tenant(request: Request, authorization: str | None = Header(None, include_in_schema=False),
                _declared: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> str | None:
    """The caller's tenant, with Dify's errors: 1001 malformed header, 1002 unknown key (403 both).
    (``_declared`` puts the bearer key in the OpenAPI schema; the raw header is read here.)"""
    keys = request.app.state.keys
    try:
        configured = keys.configured
    except KeyRingError as exc:
        raise DifyError(503, 1002, f"keys unavailable: {exc}") from None
    if not configured:
        if not request.app.state.open_allowed:
            raise DifyError.authorization_failed()
        tenant = ADMIN_TENANT  # an open service acts as an admin key
    else:
        tenant = keys.tenant_for(bearer_key(authorization))
        if tenant is None:
            raise DifyError.authorization_failed()
    if tenant != ADMIN_TENANT:
        return tenant
    named = request.headers.get(TENANT_HEADER) or None
    if named is None:
        return None
    try:
        return check_named_tenant(named)
    except KeyRingError as exc:
        raise DifyError(400, 1002, f"{TENANT_HEADER}: {exc}") from None


def _responses() -> dict:
    """Dify's error bodies (application/json); while starting, the service's problem+json too."""
    out = {}
    for code, why in ((400, "1002 a bad X-Korag-Tenant; 3001 a body that cannot be parsed"),
                      (401, "1001 no Authorization header"),
                      (403, "1001 malformed Authorization header, 1002 authorization failed"),
                      (404, "2001 unknown knowledge_id"),
                      (422, "3001 a request korag cannot read or apply: not JSON, a missing or invalid field, "
                            "a metadata condition korag cannot apply"),
                      (503, "keys unavailable (1002), or not ready (problem+json)")):
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/DifyErrorBody"}}}
        if code == 503:
            content.update(responses(code)[code]["content"])
        out[code] = {"model": DifyErrorBody, "description": why, "content": content}
    return out


@router.post("/v1/retrieval", response_model=DifyResponse, responses=_responses(),
             summary="Dify External Knowledge API: records for a query")
@router.post("/v1//retrieval", response_model=DifyResponse, include_in_schema=False)  # endpoint ".../v1/"
def dify_retrieval(body: DifyRequest, request: Request, tenant: str | None = Depends(dify_tenant)) -> DifyResponse:
    service = service_of(request)

    def search(query: str, k: int, where):
        started = time.perf_counter()
        results = service.retriever.search(query, k, tenant=tenant, where=where)
        if service.metrics is not None:
            service.metrics.observe_search(service.retriever.mode, time.perf_counter() - started)
        return results

    return retrieve(body, search, knowledge_ids={service.settings.collection})


def install(app: FastAPI) -> None:
    @app.exception_handler(DifyError)
    async def _dify_error(request: Request, exc: DifyError):
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)

    app.include_router(router)
