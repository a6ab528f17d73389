"""One error root per layer. Messages say what failed, for which file or model, and how to fix it."""

from __future__ import annotations


class KoragError(Exception):
    """Root of every error korag raises on purpose."""


class DocumentError(KoragError):
    """A document cannot be ingested. Permanent: retrying the same bytes fails the same way."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class UnsupportedFormatError(DocumentError):
    pass


class EmptyDocumentError(DocumentError):
    pass


class ModelLoadError(KoragError):
    """The embedding model could not be loaded."""


class InputTooLongError(KoragError):
    """An input exceeds the embedding model's token limit; korag refuses instead of truncating."""


class StoreError(KoragError):
    """The vector store refused an operation."""


class StoreBusyError(StoreError):
    """The embedded store's directory is held by another process. Transient: retry later."""


class ModelMismatchError(StoreError):
    """The collection was filled by a different embedding model."""
