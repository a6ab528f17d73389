"""One task, many messages: a batch task takes further messages of its own kind from its queues,
so that the model sees the chunks of many documents per call.

The extra messages are taken the way a worker takes any message, with late acknowledgement
(kombu's unacked bookkeeping): a worker that dies leaves them unacknowledged, and the broker
hands them out again after the visibility timeout, like the message Celery itself delivered.
Each is settled as Celery settles a task: its result stored under its task id (so a client
waiting on it gets it), a ``Task ...[id] succeeded`` log line, the message acknowledged. A
message left unsettled (the batch ended early) goes back to the front of its queue when the
connection closes.

Monitors (Flower, ``celery events``) see every message of a batch as a task of its own: Celery
sends the events of the message it delivered, and the batch sends the same events for each
message it took (``task-received`` and ``task-started`` when taken, then ``task-succeeded``,
``task-retried``, ``task-failed`` or, handed back to its queue, ``task-rejected``), under the
message's own task id. In the worker's own process (solo or threads pool) they go through the
worker's event dispatcher, so they are sent exactly when the worker's are (``-E``, or
``enable_events`` as Flower sends it); a prefork pool's child process cannot see that switch and
always sends them (nobody listening costs a publish that is dropped).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery import Celery, Task, states
from celery.utils.log import get_task_logger
from celery.utils.saferepr import saferepr
from kombu import Queue

log = get_task_logger(__name__)

_worker: tuple[int, Any] | None = None  # (pid, the worker's consumer), see watch_worker


def watch_worker(consumer: Any) -> None:
    """Remember the worker's consumer (Celery's ``worker_ready`` signal): in its process, batch
    events go through its event dispatcher. A process forked later does not use it (its pid differs)."""
    global _worker
    _worker = (os.getpid(), consumer)


def _worker_dispatcher() -> Any:
    """The worker's own event dispatcher when this is the worker's process, else None."""
    if _worker is None or _worker[0] != os.getpid():
        return None
    return getattr(_worker[1], "event_dispatcher", None)


@dataclass
class Message:
    """A task message of the batch: the one Celery delivered (``raw`` None) or one taken here."""

    task_id: str
    kwargs: dict[str, Any]
    retries: int
    raw: Any = None
    settled: bool = False


def _decode(raw: Any) -> tuple[str, str, dict[str, Any], int, Any] | None:
    """``(task name, id, kwargs, retries, eta)`` of a Celery task message (protocol 2 or 1)."""
    headers = raw.headers or {}
    body = raw.decode()
    if "task" in headers and isinstance(body, (list, tuple)) and len(body) >= 2:
        return headers["task"], headers["id"], dict(body[1] or {}), int(headers.get("retries") or 0), headers.get("eta")
    if isinstance(body, dict) and "task" in body:  # protocol 1
        return body["task"], body["id"], dict(body.get("kwargs") or {}), int(body.get("retries") or 0), body.get("eta")
    return None


def _due(eta: Any) -> bool:
    if not eta:
        return True
    try:
        when = datetime.fromisoformat(str(eta))
    except ValueError:
        return True
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when <= datetime.now(timezone.utc)


class Batch:
    """``with Batch(app, task, kwargs) as batch: batch.take(queues, limit)`` then settle every
    message with :meth:`done`, :meth:`handed_on` or :meth:`again`."""

    def __init__(self, app: Celery, task: Task, kwargs: dict[str, Any]) -> None:
        self.app, self.task = app, task
        self.started = time.monotonic()
        self.messages = [Message(task.request.id, dict(kwargs), int(task.request.retries or 0))]
        self._connection = None

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection is None:
            return
        for message in self.messages[1:]:
            if not message.settled:
                self._event("task-rejected", message, requeue=True)
        try:
            self._connection.close()  # what was taken and not settled goes back to its queue
        except Exception as error:  # the broker is gone: the visibility timeout brings them back
            log.warning("could not hand back unsettled messages (%s); the broker redelivers them later", error)
        self._connection = None

    @property
    def lead(self) -> Message:
        return self.messages[0]

    def take(self, queues: list[str], limit: int, weight=None, budget: float | None = None) -> None:
        """Take up to ``limit`` more messages of this task from ``queues`` (in order). With
        ``weight`` (kwargs → a number) and ``budget``: stop before the total weight passes it.
        A message of another task, one not due yet (a retry's countdown) or one over the budget
        is left for the worker. The broker failing ends the taking, not the batch."""
        total = sum(weight(m.kwargs) for m in self.messages) if weight is not None else 0.0
        try:
            if self._connection is None:
                self._connection = self.app.connection_for_read()
            channel = self._connection.default_channel
            for name in queues:
                queue = Queue(name, channel=channel)
                while len(self.messages) - 1 < limit:
                    raw = queue.get(no_ack=False, accept=["json"])
                    if raw is None:
                        break
                    decoded = _decode(raw)
                    if decoded is None or decoded[0] != self.task.name or not _due(decoded[4]):
                        return  # unsettled: it goes back to the front of its queue on close
                    _, task_id, kwargs, retries, _ = decoded
                    if weight is not None and budget is not None and total + weight(kwargs) > budget:
                        return
                    total += weight(kwargs) if weight is not None else 0.0
                    self.messages.append(Message(task_id, kwargs, retries, raw))
                    self._received(self.messages[-1])
        except Exception as error:  # noqa: BLE001 - a batch of what was taken still runs
            log.warning("could not take more messages from %s: %s", ",".join(queues), error)

    # -- settling ---------------------------------------------------------------------------------
    def done(self, message: Message, result: dict[str, Any]) -> None:
        """The message's task finished with ``result``. The lead's result is Celery's to store."""
        if message.raw is None or message.settled:
            return
        runtime = time.monotonic() - self.started
        try:
            self.app.backend.store_result(message.task_id, result, states.SUCCESS)
            message.raw.ack()
            message.settled = True
        except Exception as error:  # the broker or backend is gone: redelivered later, then "unchanged"
            log.warning("task %s: could not record its result (%s); it will be delivered again", message.task_id, error)
            return
        log.info("Task %s[%s] succeeded in %.3fs: %r", self.task.name, message.task_id, runtime, result)
        self._event("task-succeeded", message, result=saferepr(result, self.task.resultrepr_maxsize), runtime=runtime)

    def handed_on(self, message: Message) -> None:
        """The message's work went on under the same task id (another task reports the result)."""
        if message.raw is None or message.settled:
            return
        try:
            message.raw.ack()
            message.settled = True
        except Exception as error:  # noqa: BLE001 - kombu raises the transport's own errors: redelivered later
            log.warning("task %s: could not acknowledge it (%s); it will be delivered again", message.task_id, error)

    def again(self, message: Message, error: BaseException, countdown: float) -> None:
        """Send the message's task again as its next retry (a new attempt, not a crash), as
        Celery's autoretry would; past the task's ``max_retries``, store the failure instead."""
        if message.raw is None or message.settled:
            return
        try:
            failed = message.retries >= (self.task.max_retries if self.task.max_retries is not None else 3)
            if failed:
                self.app.backend.mark_as_failure(message.task_id, error)
            else:
                self.app.send_task(self.task.name, kwargs=message.kwargs, task_id=message.task_id,
                                   retries=message.retries + 1, countdown=countdown)
            message.raw.ack()
            message.settled = True
        except Exception as broker_error:  # noqa: BLE001 - the transport's own errors: redelivered later
            log.warning("task %s: could not send it again (%s); it will be delivered again", message.task_id,
                        broker_error)
            return
        self._event("task-failed" if failed else "task-retried", message, exception=saferepr(error), traceback=None)

    # -- events for monitors ----------------------------------------------------------------------
    def _received(self, message: Message) -> None:
        """``task-received`` and ``task-started`` for a message taken here, with the fields Celery
        sends for the message it delivers."""
        headers = message.raw.headers or {}
        self._event("task-received", message, name=self.task.name, args=headers.get("argsrepr", "()"),
                    kwargs=headers.get("kwargsrepr", saferepr(message.kwargs)), root_id=headers.get("root_id"),
                    parent_id=headers.get("parent_id"), retries=message.retries, eta=headers.get("eta"),
                    expires=headers.get("expires"))
        self._event("task-started", message)

    def _event(self, kind: str, message: Message, **fields: Any) -> None:
        """Celery's task event ``kind`` for a message taken here, under its own task id (see the
        module's docstring for when it is sent). Events serve monitors: failing to send one is logged."""
        if message.raw is None or not self.task.send_events:
            return
        try:
            dispatcher = _worker_dispatcher()
            if dispatcher is not None:
                if dispatcher.enabled:
                    dispatcher.send(kind, uuid=message.task_id, **fields)
                return
            with self.app.events.default_dispatcher(hostname=self.task.request.hostname) as own:
                own.send(kind, uuid=message.task_id, **fields)
        except Exception as error:  # noqa: BLE001 - a monitor's view is not worth a document
            log.warning("task %s: could not send its %s event (%s)", message.task_id, kind, error)
