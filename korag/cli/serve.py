"""``korag serve [--host 127.0.0.1] [--port 8000] [--open]``: the HTTP service (api/), run by uvicorn,
and the service's composition root (:func:`open_service`).

The model is loaded and the store opened *before* listening, so a setup error ends the command
with one line and exit code 2, like every other command. Open mode (no keys: every caller is an
admin) is decided here, once: only on a loopback address, and only when no key exists at start
(``--open`` says so explicitly; without it a keyless start on loopback is open too, with a
warning). A service that starts with keys never turns open; an open one closes for good when a
key is added (api/auth.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys

from korag.cli.common import EXIT_ERROR
from korag.cli.root import load_model, service_queue
from korag.services.events import Webhooks
from korag.services.keys import KeyRing
from korag.services.service import Service
from korag.services.telemetry import Metrics
from korag.settings import Settings
from korag.storage.disk import check_disk
from korag.storage.store import QdrantStore, open_client

log = logging.getLogger("korag.serve")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def open_mode_refusal(explicit: bool, keyed: bool, loopback: bool, host: str) -> str | None:
    """Why ``korag serve`` must not start (``--open`` given or not), or None."""
    if explicit and keyed:
        return ("--open runs without keys, but keys are configured (KORAG_API_KEYS or `korag keys list`): leave "
                "out --open, or revoke them")
    if explicit and not loopback:
        return f"--open is for a loopback address only (127.0.0.1, ::1, localhost), not {host}"
    if not keyed and not loopback:
        return (f"no API key is configured, so the service only listens on a loopback address, not {host}: add "
                "one with `korag keys add --tenant T` or set KORAG_API_KEYS")
    return None


def open_service(settings: Settings, metrics: Metrics | None = None, webhooks: Webhooks | None = None) -> Service:
    """The service's composition root: with KORAG_BROKER_URL the Celery app (its broker must
    answer), then the model and the store (opened once, for the service's lifetime), handed to a
    started :class:`Service`. Raises KoragError/ValueError on setup errors."""
    distributed = settings.broker_url is not None
    if distributed and settings.qdrant_url is None:
        raise ValueError("KORAG_BROKER_URL is set but KORAG_QDRANT_URL is not: the service and the workers must "
                         "share a Qdrant server (or unset KORAG_BROKER_URL to ingest in the service)")
    if distributed and settings.qdrant_url == ":memory:":
        log.warning("KORAG_QDRANT_URL=:memory: with a broker: the workers cannot see this store (tests only)")
    celery = service_queue(settings) if distributed else None
    embedder = load_model(settings)
    client = open_client(settings, serving=True)  # embedded: in a store process unless KORAG_EDGE_STORE_PROCESS=false
    try:
        store = QdrantStore(client, settings.collection, settings.upsert_batch_size)
        service = Service(settings, embedder, store, celery=celery, metrics=metrics, webhooks=webhooks)
        service.start()
    except BaseException:
        client.close()
        raise
    return service


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.headers import LOG_FORMAT, install_log_context, uvicorn_log_config  # lazy: Starlette, for serve only

    install_log_context()  # every line a request logs names its X-Request-Id
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    keys = KeyRing.from_settings(settings)
    loopback = is_loopback(args.host)
    keyed = keys.configured  # the decision: read once, here (see the module docstring)
    refusal = open_mode_refusal(args.open, keyed, loopback, args.host)
    if refusal is not None:
        print(f"korag serve: {refusal}", file=sys.stderr)
        return EXIT_ERROR
    if not keyed:
        hint = "" if args.open else "; say so with `korag serve --open`"
        log.warning("no API key configured: the service is OPEN to anyone who can reach %s:%d (loopback only) "
                    "until a key is added with `korag keys add --tenant T`, and then keyed for good%s",
                    args.host, args.port, hint)

    check_disk(settings)  # before the store opens: a full disk kills it (SIGBUS); one line, exit 2

    import uvicorn  # lazy: the web server, for `korag serve` only

    from api.app import create_app  # lazy: FastAPI, for `korag serve` only

    metrics = Metrics()
    webhooks = Webhooks.from_settings(settings)
    try:
        service = open_service(settings, metrics=metrics, webhooks=webhooks)
    except BaseException:
        if webhooks is not None:
            webhooks.close()
        raise
    try:
        app = create_app(settings, service, keys=keys, open_allowed=not keyed, metrics=metrics)
        log.info("korag serve: %s mode, model %s, on http://%s:%d", service.mode, service.embedder.info.name,
                 args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                    log_config=uvicorn_log_config(), timeout_graceful_shutdown=30)
    finally:
        service.close()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (FastAPI + uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1); any other than "
                   "loopback needs API keys")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--open", action="store_true", help="run without API keys (every caller is an admin): loopback "
                   "only, refused when keys are configured; closes for good when a key is added")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    p.set_defaults(func=cmd_serve)
