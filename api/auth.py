"""Who is calling: the tenant comes from the key (``Authorization: Bearer <key>``), never from
the request; an admin key (tenant ``*``) may name one with ``X-Korag-Tenant``, or none to see all.

Open mode (no key: every caller is an admin) is decided when the service starts: it runs open
only when it was allowed to (``create_app(open_allowed=True)``: ``korag serve`` on a loopback
address) and no key existed then, and it stops being open for good once a key appears.
:attr:`korag.services.keys.KeyRing.configured` carries that decision: it never turns false again.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from korag.services.keys import ADMIN_TENANT, KeyRing, KeyRingError, check_named_tenant

TENANT_HEADER = "X-Korag-Tenant"
bearer_scheme = HTTPBearer(auto_error=False, description="an API key from `korag keys add` or KORAG_API_KEYS")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_BAD_KEY_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}  # RFC 6750 section 3.1
_NO_KEYS_LEFT = ("no API key is configured any more (the last one was revoked or keys.json removed), and a "
                 "service that started with keys never runs open: add one with `korag keys add --tenant T`")


@dataclass(frozen=True)
class Caller:
    tenant: str | None  # None: every tenant (open service, or an admin key without X-Korag-Tenant)
    admin: bool = False


def _unauthorized(detail: str, challenge: dict[str, str] = _CHALLENGE) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers=challenge)


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Caller:
    keys: KeyRing = request.app.state.keys
    named = request.headers.get(TENANT_HEADER) or None
    try:
        if not keys.configured:
            if request.app.state.open_allowed:  # an open service acts as an admin key
                return Caller(_named(named), admin=True)
            raise _unauthorized("no API key is configured and the service is not on a loopback address: add one "
                                "with `korag keys add --tenant T`")
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise _unauthorized(_NO_KEYS_LEFT if not keys.list() else "send an API key: Authorization: Bearer <key>")
        tenant = keys.tenant_for(credentials.credentials)
        if tenant is None:
            raise _unauthorized(_NO_KEYS_LEFT if not keys.list() else "unknown API key", _BAD_KEY_CHALLENGE)
    except KeyRingError as exc:
        raise ApiError(503, "Keys unavailable", str(exc)) from None
    if tenant == ADMIN_TENANT:
        return Caller(_named(named), admin=True)
    if named is not None and named != tenant:
        raise ApiError(400, "Bad tenant", f"{TENANT_HEADER} is for admin keys; this key's tenant comes from the key")
    return Caller(tenant)


def admin_caller(who: Caller = Depends(caller)) -> Caller:
    """An admin key (or an open service): for what shows every tenant at once, such as ``/metrics``."""
    if not who.admin:
        raise ApiError(403, "Forbidden", f"this needs an admin key (tenant {ADMIN_TENANT}, `korag keys add --tenant "
                       f"'{ADMIN_TENANT}'`): it shows every tenant's counts, and this key is one tenant's")
    return who


def _named(named: str | None) -> str | None:
    if named is None:
        return None
    try:
        return check_named_tenant(named)
    except KeyRingError as exc:
        raise ApiError(400, "Bad tenant", f"{TENANT_HEADER}: {exc}") from None
