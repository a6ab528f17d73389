"""The worker's composition root: the objects a worker's tasks use, built from the settings of
the Celery app they run under.

``korag worker`` (and ``celery -A workers.app worker``) builds its app with
:func:`workers.app.create_app` from the worker's own :class:`~korag.settings.Settings`; every task
takes its settings, model, store and webhooks from ``root_of(task.app)``, a :class:`WorkerRoot`
kept with that app. Before, the tasks read the settings of a second app that ``workers.app`` built
from the environment at import, so a worker started with other settings ran its tasks with the
environment's.

Nothing is built at import, nor when the app is made: the model, the store and the webhook
sender are built on first use, once per process (a prefork worker's children build their own).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery

from ingest.embedder import Embedder
from ingest.stages import STORE_WAIT_S, Stage
from korag.services.events import Webhooks
from korag.settings import Settings
from korag.storage.store import StoreKeeper

ROOT_KEY = "korag_root"  # the app's configuration entry that keeps its WorkerRoot
SETTINGS_KEY = "korag_settings"  # set by workers.app.create_app

T = TypeVar("T")
_roots_lock = threading.Lock()


class WorkerRoot:
    """One worker's objects, all from one Settings, each built on first use and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()  # a threads pool: two first tasks must not load the model twice

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    @property
    def embedder(self) -> Embedder:
        return self._once("embedder", lambda: Embedder.load(self.settings))

    @property
    def stores(self) -> StoreKeeper:
        """A Qdrant server's client opened once and kept; the embedded directory opened per task,
        since the CLI and other workers share it in turn."""
        return self._once("stores", lambda: StoreKeeper(self.settings, wait_s=STORE_WAIT_S))

    @property
    def webhooks(self) -> Webhooks | None:
        """Document events from this worker process (its own delivery thread and the shared outbox)."""
        return self._once("webhooks", lambda: Webhooks.from_settings(self.settings))

    def stage(self) -> Stage:
        return Stage(self.settings, self.embedder, stores=self.stores)


def root_of(app: Celery) -> WorkerRoot:
    """The root of the app a task runs under, made from that app's settings on first use."""
    with _roots_lock:
        root = app.conf.get(ROOT_KEY)
        if root is None:
            settings = app.conf.get(SETTINGS_KEY)
            if settings is None:
                raise RuntimeError("this Celery app has no korag settings: build it with workers.app.create_app")
            root = app.conf[ROOT_KEY] = WorkerRoot(settings)
        return root
