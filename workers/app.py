"""The Celery app: Redis as broker and result backend, settings tuned for long ingest tasks.

``korag worker`` builds its app with :func:`create_app` from the settings its command read (the
worker's composition root); the tasks take their objects from that app (:mod:`workers.root`).
Importing this module builds nothing: ``celery -A workers.app worker`` finds :data:`app`, an app
built from the environment (``KORAG_*``) when it is first asked for.

Two queues: ``parse`` (``korag.ingest_document``: read, parse, chunk, keyword terms — CPU work)
and ``embed`` (``korag.embed_document``: the model, upsert, registry — GPU work). A worker that
consumes both (the default) takes a document from parsing to the end itself; a parse-only worker
hands each parsed document to the ``embed`` queue. ``celery`` is Celery's default queue, where
messages queued by a korag before the split wait: parse workers consume it too.

Each queue is bound to Celery's default exchange (``celery``, direct) under its own name as the
routing key, so a message reaches exactly one queue. A korag before issue 18 bound all three under
the routing key ``celery``: a message published to that exchange with it was copied into every
queue (each document ingested three times over). Those bindings outlive the korag that made them
(Redis keeps them in a set per exchange), so a worker removes them as it starts
(:func:`drop_stale_bindings`).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from korag.settings import Settings

PARSE_QUEUE = "parse"
EMBED_QUEUE = "embed"
LEGACY_QUEUE = "celery"
ROLES = {"parse": (PARSE_QUEUE, LEGACY_QUEUE), "embed": (EMBED_QUEUE,)}
EXCHANGE = Exchange("celery", type="direct")  # Celery's default exchange (task_default_exchange)
QUEUES = tuple(Queue(name, EXCHANGE, routing_key=name) for name in (LEGACY_QUEUE, PARSE_QUEUE, EMBED_QUEUE))
# (queue, routing key) bindings on EXCHANGE that a korag before issue 18 declared
STALE_BINDINGS = ((PARSE_QUEUE, LEGACY_QUEUE), (EMBED_QUEUE, LEGACY_QUEUE))


def queues_for(roles: str) -> list[str]:
    """``parse,embed`` → the queues a worker with those roles consumes. Raises ``ValueError``."""
    names = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = [r for r in names if r not in ROLES]
    if unknown or not names:
        raise ValueError(f"unknown worker role(s) {', '.join(unknown) or repr(roles)}: use parse, embed or parse,embed")
    return [queue for role in names for queue in ROLES[role]]


def create_app(settings: Settings) -> Celery:
    """The Celery app for these settings: broker, queues, routes. The one way every process kind
    (the service, the CLI, the worker) makes it; nothing connects until a message is sent."""
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
        task_queues=list(QUEUES),
        task_default_queue=LEGACY_QUEUE,
        task_default_exchange=EXCHANGE.name,
        task_default_routing_key=LEGACY_QUEUE,
        task_routes={"korag.ingest_document": {"queue": PARSE_QUEUE}, "korag.embed_document": {"queue": EMBED_QUEUE}},
    )
    app.conf.korag_settings = settings  # the worker's own: its tasks' objects come from them (workers.root)
    return app


def drop_stale_bindings(app: Celery) -> int:
    """Remove the bindings an older korag left (:data:`STALE_BINDINGS`); how many were there.

    Redis (kombu's virtual transport) keeps an exchange's bindings as members of a set, which
    kombu's ``queue_unbind`` does not touch, so they are removed from the set; a broker with real
    bindings (RabbitMQ) is asked to unbind."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if not hasattr(channel, "keyprefix_queue"):  # AMQP: the broker keeps the bindings
            for queue, routing_key in STALE_BINDINGS:
                channel.queue_unbind(queue, exchange=EXCHANGE.name, routing_key=routing_key)
            return 0
        members = [channel.sep.join([routing_key, "", queue]) for queue, routing_key in STALE_BINDINGS]
        removed = channel.client.srem(channel.keyprefix_queue % EXCHANGE.name, *members)
        permanent = getattr(channel, "keyprefix_binding_permanent", None)  # kombu >= 5.6 keeps a copy
        if permanent is not None:
            channel.client.srem(permanent % EXCHANGE.name, *members)
        return int(removed)


def __getattr__(name: str) -> Celery:
    """``workers.app.app`` (what ``celery -A workers.app`` looks for): the app of the environment's
    settings, built on first access, never at import (PEP 562)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = globals()["app"] = create_app(Settings())
    return app
