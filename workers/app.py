"""The Celery app: Redis as broker and result backend, settings tuned for long ingest tasks.

``celery -A workers.app worker`` and ``korag worker`` both use :data:`app`, configured from the
environment (``KORAG_*``) when this module is imported.
"""

from __future__ import annotations

from celery import Celery

from korag.settings import Settings


def create_app(settings: Settings) -> Celery:
    if settings.broker_url is None:
        raise ValueError("KORAG_BROKER_URL is not set; without a broker korag ingests in-process")
    app = Celery("korag", broker=settings.broker_url, backend=settings.backend_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task is acknowledged after it finished: a worker that dies mid-document leaves the
        # message to be redelivered (deterministic point ids make the rerun rewrite, not add).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        # Must exceed the time limit, or Redis hands a running task to a second worker.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_expires=7 * 24 * 3600,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
    )
    app.conf.korag_settings = settings
    return app


def _app_from_environment() -> Celery:
    settings = Settings()
    if settings.broker_url is None:
        # Importable without a broker (tests, in-process use); sending fails with a clear error.
        return Celery("korag", include=["workers.tasks"])
    return create_app(settings)


app = _app_from_environment()
