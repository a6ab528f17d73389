"""``POST /v1/search`` and ``POST /v1/retrieval`` (Dify's External Knowledge API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request

from api.auth import Caller, caller
from api.errors import ApiError, responses
from api.routes_documents import service_of
from korag.services.schemas import SearchRequest, SearchResponse
from korag.storage.query_filter import FilterError, json_schemas

router = APIRouter(tags=["search"])


@router.post("/v1/search", response_model=SearchResponse, responses=responses(400, 401, 422, 503),
             summary="Top-k chunks for a query (the CLI's search JSON plus took_ms)")
def search(body: SearchRequest, request: Request, who: Caller = Depends(caller)) -> SearchResponse:
    service = service_of(request)
    try:
        return service.search(body, who.tenant)
    except FilterError as exc:
        raise ApiError(422, "Invalid filter", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "Invalid search", str(exc)) from None


def describe_filter(app: FastAPI) -> None:
    """The filter language's schemas (korag.storage.query_filter.json_schemas, which SearchRequest's
    ``filter`` refers to) in the app's OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generate().setdefault("components", {}).setdefault("schemas", {}).update(json_schemas())
        return app.openapi_schema

    app.openapi = openapi
