"""``korag.edge_client``, the documented path of the Qdrant Edge client: it lives in
:mod:`korag.storage.edge_client`."""

from korag.storage.edge_client import EdgeClient

__all__ = ["EdgeClient"]
