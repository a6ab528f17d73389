"""``POST /v1/retrieval``: Dify's External Knowledge API (retrieval/dify.py) with Dify's own error
bodies (``{"error_code", "error_msg"}``), so a Dify app can use korag as its knowledge base.
In Dify: endpoint ``http://<korag>/v1``, a korag key as the API key, KORAG_COLLECTION as the
knowledge id."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import TENANT_HEADER, bearer_scheme
from api.errors import responses
from api.routes_documents import service_of
from korag.keys import ADMIN_TENANT, KeyRingError, check_tenant_name
from retrieval.dify import DifyError, DifyErrorBody, DifyRequest, DifyResponse, bearer_key, retrieve

router = APIRouter(tags=["dify"])


def dify_tenant(request: Request, authorization: str | None = Header(None, include_in_schema=False),
                _declared: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> str | None:
    """The caller's tenant, with Dify's errors: 1001 malformed header, 1002 unknown key.
    (``_declared`` puts the bearer key in the OpenAPI schema; the raw header is read here.)"""
    keys = request.app.state.keys
    try:
        configured = keys.configured
    except KeyRingError as exc:
        raise DifyError(503, 1002, f"keys unavailable: {exc}") from None
    named = request.headers.get(TENANT_HEADER) or None
    if not configured:
        if request.app.state.open_allowed:
            return named
        raise DifyError.authorization_failed()
    tenant = keys.tenant_for(bearer_key(authorization))
    if tenant is None:
        raise DifyError.authorization_failed()
    if tenant != ADMIN_TENANT:
        return tenant
    if named is None:
        return None
    try:
        return check_tenant_name(named)
    except KeyRingError as exc:
        raise DifyError(400, 1002, f"{TENANT_HEADER}: {exc}") from None


def _responses() -> dict:
    """Dify's error bodies; the service's own problem+json for a malformed request or while starting."""
    out = {}
    for code, why in ((400, "a bad X-Korag-Tenant, or a body that is not JSON (problem+json)"),
                      (401, "1001 malformed Authorization header, 1002 authorization failed"),
                      (404, "2001 unknown knowledge_id"),
                      (422, "3001 a metadata condition korag cannot apply; or a malformed request (problem+json)"),
                      (503, "not ready")):
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/DifyErrorBody"}}}
        if code in (400, 422, 503):
            content.update(responses(code)[code]["content"])
        out[code] = {"model": DifyErrorBody, "description": why, "content": content}
    return out


@router.post("/v1/retrieval", response_model=DifyResponse, responses=_responses(),
             summary="Dify External Knowledge API: records for a query")
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
        return JSONResponse(exc.to_json(), status_code=exc.status)

    app.include_router(router)
