"""``korag.events``, the documented path of webhook signatures: it lives in :mod:`korag.services.events`."""

from korag.services.events import verify_signature

__all__ = ["verify_signature"]
