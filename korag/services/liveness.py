"""Is the worker process that holds a document still alive? Every ``korag worker`` process
beats (:mod:`workers.heartbeat`): every ``HEARTBEAT_S`` seconds it stores the time under
``korag:alive:<host:pid>`` in the broker's Redis. A document a worker is parsing or embedding
names that process as its ``owner`` (with the delivery's ``attempt``), so anyone who can reach the
broker (the workers' sweep, ``korag status``, ``GET /v1/documents``, the metrics) can tell a
document a live worker is working on, however long it takes, from one whose worker is gone.

A process on this machine is asked directly (:func:`korag.storage.registry.process_alive`); one
elsewhere is dead once its last beat is older than ``DEAD_AFTER_S``. No beat at all (a broker
that is not Redis, or a Redis restarted empty before the worker's next beat) means "cannot tell":
such documents are left to the age rule (``KORAG_SWEEP_AFTER_S``), never taken from a worker that
may be alive."""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

from korag.storage.registry import process_alive

log = logging.getLogger("korag.liveness")

HEARTBEAT_S = 10.0  # how often a worker process beats
DEAD_AFTER_S = 30.0  # three beats missed: the process is gone
KEEP_S = 24 * 3600  # a beat is kept this long (a dead worker's key then goes by itself)
KEY = "korag:alive:{owner}"
TURN_KEY = "korag:turn:{name}"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Liveness:
    """The workers' beats in the broker's Redis."""

    def __init__(self, client: Any) -> None:  # a redis.Redis
        self.client = client

    @classmethod
    def from_url(cls, broker_url: str | None) -> "Liveness | None":
        """For a Redis broker; None for none or another kind (liveness is then told on this machine only)."""
        client = redis_client(broker_url)
        return cls(client) if client is not None else None

    def beat(self, owner: str, now: float | None = None) -> None:
        self.client.set(KEY.format(owner=owner), repr(now if now is not None else time.time()), ex=KEEP_S)

    def last_beat(self, owner: str) -> float | None:
        value = self.client.get(KEY.format(owner=owner))
        return float(value) if value is not None else None

    def alive(self, owner: str, now: float | None = None) -> bool | None:
        """True, False, or None when it cannot be told (no beat recorded, or the broker does not answer)."""
        local = process_alive(owner)
        if local is not None:
            return local
        try:
            last = self.last_beat(owner)
        except (redis_module().RedisError, ValueError) as error:
            log.warning("cannot tell whether %s is alive: %s", owner, error)
            return None
        if last is None:
            return None
        return (now if now is not None else time.time()) - last < DEAD_AFTER_S

    def take_turn(self, name: str, seconds: float) -> bool:
        """One process in the cluster gets the turn for ``seconds`` (``SET NX``): so that
        workers sweeping on a timer do not sweep at the same moment."""
        return bool(self.client.set(TURN_KEY.format(name=name), "1", nx=True, px=max(1, int(seconds * 1000))))

    def close(self) -> None:
        self.client.close()


def redis_module() -> ModuleType:
    """The redis client library, loaded on first use: only a Redis broker needs it, and its import
    (asyncio included) would cost every CLI command that has none."""
    import redis  # lazy: only with a Redis broker

    return redis


def redis_client(broker_url: str | None) -> Any:
    """A client of a Redis broker (short timeouts: a caller asks in passing); None for no broker
    or one of another kind."""
    if broker_url is None or not broker_url.startswith(REDIS_SCHEMES):
        return None
    return redis_module().Redis.from_url(broker_url, socket_timeout=2.0, socket_connect_timeout=2.0)


def owner_alive(liveness: Liveness | None, owner: str) -> bool | None:
    """:meth:`Liveness.alive`, or on this machine only when there is no Redis broker."""
    return liveness.alive(owner) if liveness is not None else process_alive(owner)
