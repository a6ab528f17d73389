"""Identities korag derives: document ids (injective in tenant and source, with the id an older
korag derived kept for stored documents) and the sequence numbers that order requests. Pure
functions, part of the ground: :mod:`korag.storage.registry` and the shared value types use them.
"""

from __future__ import annotations

import hashlib
import time
import uuid

DOCUMENT_NAMESPACE = uuid.UUID("0d0c5f7e-8a43-4f3f-a9a2-6b6f7261670b")
# 0xFF never occurs in UTF-8, so no legacy name (a UTF-8 string) can spell a structured one.
_STRUCTURED = b"\xffkorag-id/2\x00"


def structured_id(namespace: uuid.UUID, *fields: str | None) -> str:
    """A uuid5-style id (hex) of ``fields`` in a length-prefixed encoding: per field a marker for
    None or a value, then the value's UTF-8 length and bytes. Different field tuples are different
    inputs to the hash, whatever characters they hold (the id of ``(None, "a\\x00b")`` is not that of
    ``("a", "b")``), and none is a legacy id's input. Lone surrogates are encoded, not refused."""
    data = bytearray(_STRUCTURED)
    for value in fields:
        if value is None:
            data += b"\x00"
        else:
            encoded = value.encode("utf-8", "surrogatepass")
            data += b"\x01" + len(encoded).to_bytes(8, "big") + encoded
    return uuid.UUID(bytes=hashlib.sha1(namespace.bytes + bytes(data)).digest()[:16], version=5).hex


def legacy_id(namespace: uuid.UUID, tenant: str | None, name: str) -> str | None:
    """The id korag derived before :func:`structured_id`: ``uuid5(name)`` or ``uuid5(tenant NUL
    name)``. Not injective: only ever reused for a stored record that matches exactly
    (:meth:`DocumentRegistry.keep_legacy`). None where it cannot exist (a lone surrogate)."""
    try:
        return uuid.uuid5(namespace, name if tenant is None else f"{tenant}\x00{name}").hex
    except UnicodeEncodeError:
        return None


def document_id(source: str, tenant: str | None = None) -> str:
    """The id of a new document: injective in (tenant, source)."""
    return structured_id(DOCUMENT_NAMESPACE, tenant, source)


_last_seq = 0


def new_seq() -> int:
    """The sequence number of a new request: later requests get larger numbers. Wall-clock
    microseconds (so requests made on different machines order by when they were made), strictly
    increasing within a process, and exact as a float (Qdrant's range filters compare floats)."""
    global _last_seq
    _last_seq = max(time.time_ns() // 1000, _last_seq + 1)
    return _last_seq
