"""Celery workers: the app, thin tasks over :mod:`ingest.pipeline`, and the client that enqueues."""
