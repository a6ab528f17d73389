"""``/v1/documents``: upload, status, listing, chunks, deletion. Thin over korag.services.service."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, caller
from api.errors import ApiError, responses
from api.multipart import receive, release
from korag.rules import NESTING_CHARS, NOT_IN_SOURCE, RESERVED_FIELDS, not_blank_without
from korag.services.schemas import (
    ChunkList,
    Deleted,
    DocumentList,
    DocumentState,
    DocumentStatus,
    IngestOutcome,
    IngestResponse,
)
from korag.services.service import BadRequest, Service, Submitted, Upload, clean_source
from korag.storage.disk import MIB

router = APIRouter(prefix="/v1/documents", tags=["documents"], responses=responses(400, 401, 503))

DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 600.0
DocId = Annotated[str, Path(min_length=1, max_length=200, description="the document's id (from an upload)")]

_META_VALUE = {"anyOf": [{"type": "string"}, {"type": "boolean"},
                         {"type": "number", "minimum": -(2**63), "maximum": 2**63 - 1}]}


def upload_body(max_files: int) -> dict[str, Any]:
    """The upload's OpenAPI request body, saying what the service enforces: 1 to ``max_files``
    files; `source` not blank and without control characters; `metadata` one JSON object (a
    part of type application/json) whose keys korag.rules.check_key and values
    ingest.pipeline's DocumentInfo accept; no other field. JSON Schema cannot say "no `source`,
    or as many as files" (one anyOf branch per count did, but schemathesis can neither generate
    from it nor cover 100 branches in time): the description says it."""
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "additionalProperties": False,
            "properties": {
                "file": {"type": "array", "minItems": 1, "maxItems": max_files,
                         "items": {"type": "string", "format": "binary"},
                         "description": f"one or more documents (repeat the part), at most {max_files}"},
                "source": {"type": "array", "maxItems": max_files,
                           "items": {"type": "string", "maxLength": 1024,
                                     "pattern": not_blank_without(NOT_IN_SOURCE)},
                           "description": "the caller's stable id per file (default: the file name): none, or "
                                          "one per file in order; not blank, no control characters"},
                "metadata": {"type": "object", "additionalProperties": _META_VALUE,
                             "properties": {field: False for field in sorted(RESERVED_FIELDS)},  # korag's own
                             "propertyNames": {"pattern": not_blank_without(NESTING_CHARS)},
                             "description": 'one JSON object stored with every chunk, e.g. {"team": "legal", '
                                            '"year": 2024}: strings, booleans and numbers within the 64-bit '
                                            "integer range; keys without . [ ] \" and not korag's own fields"},
            },
        },
        "encoding": {"metadata": {"contentType": "application/json"}},
    }}}


def describe_upload(app: FastAPI, max_files: int) -> None:
    """:func:`upload_body` for this service's KORAG_API_MAX_FILES in the app's OpenAPI schema (the
    route reads its body itself, so FastAPI has none to describe; the router serves every app)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generate()["paths"][router.prefix]["post"]["requestBody"] = upload_body(max_files)
        return app.openapi_schema

    app.openapi = openapi


# A next_cursor as the service gives it out: unpadded base64url (korag.services.service._encode_cursor).
CURSOR_PATTERN = "^[A-Za-z0-9_-]+$"


def _cursor(cursor: str | None) -> str | None:
    """``cursor`` if it has the form of one (Python's base64 would skip other characters, so a
    cursor with them could still read as a position); a 400 otherwise, as for one never given out."""
    if cursor is not None and re.fullmatch(CURSOR_PATTERN, cursor) is None:
        raise BadRequest(f"cursor {cursor[:40]!r} is not one this service gave out (base64url)")
    return cursor


def service_of(request: Request) -> Service:
    service = request.app.state.service
    if service is None:
        raise ApiError(503, "Starting", "the service is still loading the model and opening the store",
                       headers={"Retry-After": "5"})
    return service


def _metadata(values: list[str]) -> dict[str, Any]:
    if not values:
        return {}
    if len(values) > 1:
        raise ApiError(422, "Invalid metadata", "give `metadata` once, as one JSON object")
    try:
        meta = json.loads(values[0])
    except ValueError as exc:
        raise ApiError(422, "Invalid metadata", f"metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ApiError(422, "Invalid metadata", "metadata must be a JSON object, e.g. {\"team\": \"legal\"}")
    return meta  # keys and values: checked by Service.submit (ingest.pipeline.DocumentInfo), 422 naming the key


def _uploads(received, sources: list[str]) -> list[Upload]:
    files = [f for f in received.files if f.field == "file"]
    if not files:
        raise ApiError(422, "No file", "send one or more `file` parts (curl -F file=@report.pdf)")
    if sources and len(sources) != len(files):
        raise ApiError(422, "Invalid source",
                       f"{len(sources)} `source` fields for {len(files)} files: give one per file, in order, or none")
    try:
        names = [clean_source(s) for s in (sources if sources else [f.filename for f in files])]
    except ValueError as exc:
        raise ApiError(422, "Invalid source", str(exc)) from None
    if any(len(n) > 1024 for n in names):
        raise ApiError(422, "Invalid source", "a source is longer than 1,024 characters")
    return [Upload(name, f.filename, f.blob, f.size) for name, f in zip(names, files)]


async def _wait(service: Service, items: list[Submitted], timeout: float) -> list:
    """Final results, or ``queued`` for what has none after ``timeout`` seconds in all: the
    embedded ingest's futures are awaited, a distributed upload's record is polled."""
    deadline = time.monotonic() + timeout
    futures = [asyncio.wrap_future(i.future) for i in items if i.future is not None and not i.future.done()]
    if futures:
        await asyncio.wait(futures, timeout=timeout)
    while True:
        results = await run_in_threadpool(lambda: [service.outcome(i) for i in items])
        if all(r.status != "queued" for r in results) or time.monotonic() >= deadline:
            return results
        await asyncio.sleep(0.25)


@router.post("", response_model=IngestResponse, status_code=202,  # request body: describe_upload
             responses={200: {"model": IngestResponse, "description": "every document is final"},
                        **responses(400, 413, 415, 422, 507)},
             summary="Upload documents (multipart): 202 while any is queued, 200 when all are final")
async def upload(
    request: Request,
    response: Response,
    who: Caller = Depends(caller),
    wait: bool = Query(False, description="wait for final statuses (up to `timeout` seconds)"),
    timeout: float = Query(DEFAULT_WAIT_S, gt=0, le=MAX_WAIT_S, description="seconds to wait with wait=true"),
) -> IngestResponse:
    service = service_of(request)
    settings = service.settings
    limit = settings.max_upload_bytes if settings.max_upload_bytes is not None else settings.max_file_bytes + 2**20
    received = await receive(request, service.blobs, settings.max_file_bytes, limit, settings.api_max_files,
                             settings.min_free_disk_mb * MIB)
    try:
        unknown = sorted(set(received.fields) - {"source", "metadata"} | {f.field for f in received.files} - {"file"})
        if unknown:
            raise ApiError(422, "Unknown form field", f"unknown form field(s) {', '.join(map(repr, unknown))}; "
                           "send `file`, `source` and `metadata`")
        uploads = _uploads(received, received.fields.get("source", []))
        meta = _metadata(received.fields.get("metadata", []))
        try:
            items = await run_in_threadpool(service.submit, uploads, who.tenant, meta)
        except ValueError as exc:  # a metadata key korag refuses
            raise ApiError(422, "Invalid metadata", str(exc)) from None
    finally:  # claimed blobs stay (their records refer to them); a refused request's go
        await run_in_threadpool(release, received, service.blobs, service.registry)
    if wait:
        results = await _wait(service, items, timeout)
    else:
        results = [i.result if i.result is not None else i.queued() for i in items]
    response.status_code = 202 if any(r.status == "queued" for r in results) else 200
    return IngestResponse(documents=[IngestOutcome.of(r) for r in results])


@router.get("", response_model=DocumentList, responses=responses(400, 422), summary="List documents")
def list_documents(
    request: Request,
    who: Caller = Depends(caller),
    status: DocumentState | None = Query(None, description="only documents in this state"),
    source_prefix: str | None = Query(None, max_length=1024, description="only sources starting with this"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page",
                               json_schema_extra={"pattern": CURSOR_PATTERN}),
    order: Literal["oldest", "newest"] = Query("oldest", description="oldest first (the default) or newest first; "
                                               "send the same order with a next_cursor it gave"),
) -> DocumentList:
    try:
        return service_of(request).documents(who.tenant, status, source_prefix, limit, _cursor(cursor),
                                             newest_first=order == "newest")
    except BadRequest as exc:
        raise ApiError(400, "Bad request", str(exc)) from None


@router.get("/{doc_id}", response_model=DocumentStatus, responses=responses(404, 422),
            summary="One document's status (the CLI's `status DOC_ID --json`) with its stage")
def get_document(request: Request, doc_id: DocId, who: Caller = Depends(caller)) -> DocumentStatus:
    found = service_of(request).document(doc_id, who.tenant)
    if found is None:
        raise ApiError(404, "Not Found", f"no document {doc_id}")
    return found


@router.delete("/{doc_id}", response_model=Deleted, responses=responses(404, 422),
               summary="Delete a document and every chunk of it")
def delete_document(request: Request, doc_id: DocId, who: Caller = Depends(caller)) -> Deleted:
    deleted = service_of(request).delete(doc_id, who.tenant)
    if deleted is None:
        raise ApiError(404, "Not Found", f"no document {doc_id}")
    return deleted


@router.get("/{doc_id}/chunks", response_model=ChunkList, responses=responses(400, 404, 422),
            summary="The indexed chunks of a document, in order (the CLI's chunk objects)")
def document_chunks(
    request: Request,
    doc_id: DocId,
    who: Caller = Depends(caller),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page",
                               json_schema_extra={"pattern": CURSOR_PATTERN}),
) -> ChunkList:
    try:
        found = service_of(request).chunks(doc_id, who.tenant, limit, _cursor(cursor))
    except BadRequest as exc:
        raise ApiError(400, "Bad request", str(exc)) from None
    if found is None:
        raise ApiError(404, "Not Found", f"no document {doc_id}")
    return found
