"""``korag serve [--host 127.0.0.1] [--port 8000]``: the HTTP service (api/), run by uvicorn.

The model is loaded and the store opened *before* listening, so a setup error ends the command
with one line and exit code 2, like every other command. Without API keys the service runs open,
and only on a loopback address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys

from korag.cli_common import EXIT_ERROR
from korag.settings import Settings

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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from korag.keys import KeyRing

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = KeyRing.from_settings(settings)
    loopback = is_loopback(args.host)
    if not keys.configured:
        if not loopback:
            print(f"korag serve: no API key is configured, so the service only listens on a loopback address, not "
                  f"{args.host}: add one with `korag keys add --tenant T` or set KORAG_API_KEYS", file=sys.stderr)
            return EXIT_ERROR
        log.warning("no API key configured: the service is OPEN to anyone who can reach %s:%d (loopback only); "
                    "add keys with `korag keys add --tenant T`", args.host, args.port)

    import uvicorn

    from api.app import create_app
    from korag.events import Webhooks
    from korag.service import Service
    from korag.telemetry import Metrics

    metrics = Metrics()
    webhooks = Webhooks.from_settings(settings)
    try:
        service = Service.open(settings, metrics=metrics, webhooks=webhooks)
    except BaseException:
        if webhooks is not None:
            webhooks.close()
        raise
    try:
        app = create_app(settings, service, keys=keys, open_allowed=loopback, metrics=metrics)
        log.info("korag serve: %s mode, model %s, on http://%s:%d", service.mode, service.embedder.info.name,
                 args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                    timeout_graceful_shutdown=30)
    finally:
        service.close()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (FastAPI + uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1); any other than "
                   "loopback needs API keys")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    p.set_defaults(func=cmd_serve)
