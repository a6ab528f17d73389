"""A real `korag serve` for the HTTP tests: a subprocess on a free loopback port, with its own
KORAG_DATA_DIR and the offline model, ready when /readyz says so.

    with serve(tmp_path, {"KORAG_API_KEYS": "k1=acme"}) as server:
        httpx.get(f"{server.url}/v1/info", headers=server.auth("k1"))

or, with the open (no keys) service, the module-scoped fixture ``api_url`` (import it into the
test module: ``from tests.api_server import api_url  # noqa: F401``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port, korag_env, offline_model_path


class ApiServer:
    """One `korag serve` process. ``env`` adds or overrides KORAG_* variables; ``args``: more
    `korag serve` options (e.g. ``["--open"]``)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.args = list(args) if args is not None else []
        self.data_dir = workdir / "data"
        self.log = workdir / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = korag_env({
            "KORAG_EMBEDDING_MODEL": offline_model_path(),
            "KORAG_EMBEDDING_DEVICE": "cpu",
            "KORAG_DATA_DIR": str(self.data_dir),
            **(env or {}),
        })
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not running"
        return self.proc.pid

    def start(self, timeout: float = 300) -> "ApiServer":
        import httpx

        self.workdir.mkdir(parents=True, exist_ok=True)
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "korag.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            env=self.env, cwd=self.workdir, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"korag serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"korag serve was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL to the whole process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any parser child left behind
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_bytes(self) -> int:
        """The server process's own peak resident memory (VmHWM; forked parsers not counted)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    @staticmethod
    def auth(key: str | None, tenant: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        if tenant is not None:
            headers["X-Korag-Tenant"] = tenant
        return headers


@contextmanager
def serve(workdir: Path, env: dict[str, str] | None = None, timeout: float = 300,
          args: list[str] | None = None) -> Iterator[ApiServer]:
    server = ApiServer(workdir, env, args).start(timeout)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory) -> Iterator[str]:
    """The base URL of an open (no keys, loopback) `korag serve` shared by one test module."""
    with serve(tmp_path_factory.mktemp("serve")) as server:
        yield server.url
