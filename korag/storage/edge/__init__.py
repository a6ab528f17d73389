"""Qdrant Edge behind the part of qdrant-client's API that korag speaks (``korag.storage.edge_client``).

One module per job: ``filters`` and ``queries`` translate qdrant-client models into Edge's,
``points`` translates points in and records out, ``catalog`` keeps the collections on disk.
"""

from korag.errors import StoreError


class EdgeUnsupportedError(StoreError):
    """A qdrant-client argument that the Edge adapter does not translate."""


class LocalModeDataError(StoreError):
    """The embedded store's directory holds data of qdrant-client's local mode: `korag migrate`."""
