"""``korag.store``, the documented path of the chunk store: it lives in :mod:`korag.storage.store`."""

from korag.storage.store import DENSE, SPARSE, Fusion, QdrantStore, StoreKeeper, open_client, store_session

__all__ = ["DENSE", "SPARSE", "Fusion", "QdrantStore", "StoreKeeper", "open_client", "store_session"]
