"""Who is calling: the tenant comes from the key (``Authorization: Bearer <key>``), never from
the request; an admin key (tenant ``*``) may name one with ``X-Korag-Tenant``, or none to see all.
With no key configured the service is open (tenant None), on a loopback address only."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from korag.keys import ADMIN_TENANT, KeyRing, KeyRingError, check_tenant_name

TENANT_HEADER = "X-Korag-Tenant"
bearer_scheme = HTTPBearer(auto_error=False, description="an API key from `korag keys add` or KORAG_API_KEYS")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Caller:
    tenant: str | None  # None: every tenant (open service, or an admin key without X-Korag-Tenant)
    admin: bool = False


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers=_CHALLENGE)


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Caller:
    keys: KeyRing = request.app.state.keys
    try:
        configured = keys.configured
    except KeyRingError as exc:
        raise ApiError(503, "Keys unavailable", str(exc)) from None
    named = request.headers.get(TENANT_HEADER) or None
    if not configured:
        if request.app.state.open_allowed:  # an open service acts as an admin key
            return Caller(_named(named), admin=True)
        raise _unauthorized("no API key is configured and the service is not on a loopback address: add one with "
                            "`korag keys add --tenant T`")
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("send an API key: Authorization: Bearer <key>")
    tenant = keys.tenant_for(credentials.credentials)
    if tenant is None:
        raise _unauthorized("unknown API key")
    if tenant == ADMIN_TENANT:
        return Caller(_named(named), admin=True)
    if named is not None and named != tenant:
        raise ApiError(400, "Bad tenant", f"{TENANT_HEADER} is for admin keys; this key's tenant comes from the key")
    return Caller(tenant)


def _named(named: str | None) -> str | None:
    if named is None:
        return None
    try:
        return check_tenant_name(named)
    except KeyRingError as exc:
        raise ApiError(400, "Bad tenant", f"{TENANT_HEADER}: {exc}") from None
