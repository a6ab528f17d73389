"""The queue's two task messages, typed: every sender builds one of these and every receiver
reads one, so a field cannot be left out on one path (the sweeper's re-sent embed messages
once dropped ``tenant``, and their webhooks said ``"tenant": null``).

The wire format is the task's keyword arguments, unchanged: ``korag.ingest_document(blob,
filename, source, doc_id, tenant, meta, request, seq)`` and ``korag.embed_document(prepared,
doc_id, source, chunks, seq, tenant)``. :meth:`to_kwargs` writes them; :meth:`from_kwargs` reads
them, including messages an older korag left in Redis (without ``request``/``seq``/``tenant``).

Ground: imports nothing of korag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INGEST_TASK = "korag.ingest_document"
EMBED_TASK = "korag.embed_document"


def _text(kwargs: Mapping[str, Any], name: str) -> str:
    """A required text field; ValueError naming it when it is missing (a malformed message)."""
    value = kwargs.get(name)
    if not isinstance(value, str):
        raise ValueError(f"a {name!r} is required in the task message, got {value!r}")
    return value


def _number(kwargs: Mapping[str, Any], name: str) -> int:
    value = kwargs.get(name)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise ValueError(f"{name!r} must be a number in the task message, got {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class IngestMessage:
    """``korag.ingest_document``: a document whose bytes are in the blob store, to parse (and embed).
    ``request``/``seq``: the queued request that owns the document (None from an older client)."""

    blob: str
    filename: str
    source: str
    doc_id: str
    tenant: str | None
    meta: tuple[tuple[str, Any], ...] = ()
    request: str | None = None
    seq: int | None = None

    def to_kwargs(self) -> dict[str, Any]:
        return {"blob": self.blob, "filename": self.filename, "source": self.source, "doc_id": self.doc_id,
                "tenant": self.tenant, "meta": dict(self.meta), "request": self.request, "seq": self.seq}

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "IngestMessage":
        """The message a task received; ValueError when it is malformed."""
        meta = kwargs.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise ValueError(f"'meta' must be an object in the task message, got {meta!r}")
        seq = kwargs.get("seq")
        return cls(blob=_text(kwargs, "blob"), filename=_text(kwargs, "filename"), source=_text(kwargs, "source"),
                   doc_id=_text(kwargs, "doc_id"), tenant=kwargs.get("tenant"), meta=tuple(meta.items()),
                   request=kwargs.get("request"), seq=_number(kwargs, "seq") if seq is not None else None)


@dataclass(frozen=True, kw_only=True)
class EmbedMessage:
    """``korag.embed_document``: a parsed document (its prepared file, named by its request) for an
    embed worker, with its size in chunks for batching. ``tenant`` has no default: every sender
    says whose document it is (the document's events carry it)."""

    prepared: str  # the request id: the prepared file's name
    doc_id: str
    source: str
    tenant: str | None
    chunks: int = 0
    seq: int = 0  # the request's sequence number

    def to_kwargs(self) -> dict[str, Any]:
        return {"prepared": self.prepared, "doc_id": self.doc_id, "source": self.source, "chunks": self.chunks,
                "seq": self.seq, "tenant": self.tenant}

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "EmbedMessage":
        """The message a task received (one from an older korag has no ``tenant``); ValueError
        when it is malformed."""
        return cls(prepared=_text(kwargs, "prepared"), doc_id=_text(kwargs, "doc_id"), source=_text(kwargs, "source"),
                   tenant=kwargs.get("tenant"), chunks=_number(kwargs, "chunks"), seq=_number(kwargs, "seq"))
