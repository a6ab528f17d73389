"""``korag.telemetry``, the documented path of the metrics' stage names: it lives in
:mod:`korag.services.telemetry`."""

from korag.services.telemetry import STAGES

__all__ = ["STAGES"]
