"""The embedding model: one instance per process, two calls so a prefix cannot be forgotten.

``embed_passages`` prepends the passage prefix, ``embed_queries`` the query prefix (KoE5 and the
E5 family need "passage: " / "query: "). Inputs over the model's token limit are refused, never
truncated: a truncated chunk silently loses its end.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ingest.engine import EmbeddingEngine, Tokens
from ingest.tokens import TokenBudget, compose_input
from korag.errors import InputTooLongError, ModelLoadError
from korag.types import Chunk

if TYPE_CHECKING:  # the embedder imports without pydantic-settings (bench/gpu_check.py on a bare GPU machine)
    from korag.settings import Settings


def _default_device() -> str:
    import torch  # lazy: torch, only where a model loads

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_error(name: str, exc: BaseException) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    is_path = Path(name).expanduser().exists() or name.startswith(("/", "./", "~"))
    how = (
        f"the directory {name!r} must hold a sentence-transformers model (modules.json, config.json, weights)"
        if is_path
        else (
            f"either download it once where a network is available (`hf download {name}`, which fills the "
            "Hugging Face cache under HF_HOME, then copy that cache here), or save it to a directory "
            "and set KORAG_EMBEDDING_MODEL to that path"
            + ("; HF_HUB_OFFLINE=1 is set, so only the local cache is searched" if offline else "")
        )
    )
    return ModelLoadError(f"cannot load embedding model {name!r}: {type(exc).__name__}: {exc}. To provide it, {how}.")


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: only for an offline cache lookup

        return isinstance(try_to_load_from_cache(name, "modules.json"), str)
    except Exception:  # an odd name: let the real load say what is wrong
        return True


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _fail_fast_if_unreachable(name: str) -> None:
    """Without this, a model that is neither local nor cached costs a minute of download
    retries on a closed network before the same error."""
    if Path(name).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE") == "1" or _cached(name):
        return
    if not _hub_reachable():
        raise _load_error(name, OSError("not in the Hugging Face cache, and the Hugging Face Hub cannot be reached"))


def model_name(name: str) -> str:
    """The name a collection records: a local directory without trailing separators, so
    ``models/KoE5/`` and ``models/KoE5`` are one model. Hub ids are left alone."""
    stripped = name.rstrip("/" + os.sep)
    if stripped and stripped != name and Path(stripped).expanduser().is_dir():
        return stripped
    return name


@dataclass(frozen=True)
class QueryFit:
    """A query as the dense channel embeds it: ``text`` fits the model; ``truncated`` says it was
    cut, from ``total_tokens`` to ``tokens`` (prefix and special tokens included)."""

    text: str
    truncated: bool
    tokens: int
    total_tokens: int

    def notice(self) -> str | None:
        if not self.truncated:
            return None
        return f"query cut to {self.tokens} of {self.total_tokens} tokens for the dense channel"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dimension: int
    max_input_tokens: int


class Embedder:
    """Wraps a loaded SentenceTransformer. Build it with :meth:`load`; pass it down."""

    def __init__(self, model: Any, name: str, settings: Settings) -> None:
        self.model = model
        limit = int(model.max_seq_length)
        if settings.chunk_max_tokens is not None:
            limit = min(limit, settings.chunk_max_tokens)
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.info = ModelInfo(name=name, dimension=int(dimension()), max_input_tokens=limit)
        self.passage_budget = TokenBudget(model.tokenizer, limit, settings.passage_prefix)
        self.query_budget = TokenBudget(model.tokenizer, limit, settings.query_prefix)
        # a section run (what a context="section" search returns) fills the model's own limit
        self.section_budget = TokenBudget(model.tokenizer, int(model.max_seq_length), settings.passage_prefix)
        self.batch_size = settings.embedding_batch_size
        self.engine = EmbeddingEngine.build(model, settings)
        # One call at a time: a fast tokenizer changes its truncation state per call and fails
        # ("Already borrowed") when two threads (a service's searches and its ingest, LangChain's
        # async calls) do so at once.
        self._lock = threading.RLock()

    @classmethod
    def load(cls, settings: Settings) -> "Embedder":
        name = model_name(settings.embedding_model)
        _fail_fast_if_unreachable(name)
        try:
            from sentence_transformers import SentenceTransformer  # lazy: torch, only where a model loads
            from transformers.utils import logging as hf_logging  # lazy: torch, only where a model loads

            hf_logging.disable_progress_bar()

            device = settings.embedding_device if settings.embedding_device is not None else _default_device()
            model = SentenceTransformer(name, device=device)
        except Exception as exc:  # OSError, ValueError, HF hub errors, missing weights ...
            raise _load_error(name, exc) from exc
        return cls(model, name, settings)

    # -- the two public calls ----------------------------------------------------------------
    def embed_passages(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, list[int]]:
        """Vectors for chunks (prefix + header + text), and the tokens each input used."""
        texts = [compose_input(self.passage_budget.prefix, c.header, c.text) for c in chunks]
        ids = [c.input_ids for c in chunks]
        # The chunker's token ids of these very inputs (same tokenizer, same prefix): no second
        # tokenization on the model's thread.
        known = Tokens(ids, None) if ids and self.engine.takes_ids and all(x is not None for x in ids) else None
        with self._lock:
            return self._encode(texts, self.passage_budget, known)

    def embed_passage_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for raw passages (prefix + text, no header), blank ones included."""
        inputs = [compose_input(self.passage_budget.prefix, None, t) for t in texts]
        with self._lock:
            return self._encode(inputs, self.passage_budget)[0]

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        texts = [compose_input(self.query_budget.prefix, None, q) for q in queries]
        with self._lock:
            return self._encode(texts, self.query_budget)[0]

    def fit_query(self, query: str) -> QueryFit:
        """The longest start of ``query`` the model takes (cut between words at tokenizer offsets),
        for the dense channel; keyword search still sees the whole query."""
        with self._lock:
            return self._fit_query(query)

    def _fit_query(self, query: str) -> QueryFit:
        budget = self.query_budget
        total = budget.input_tokens(compose_input(budget.prefix, None, query))
        if total <= budget.max_input_tokens:
            return QueryFit(query, False, total, total)
        room = budget.body_budget(None)
        while True:  # a slice can tokenize a little longer behind the prefix than alone
            pieces = budget.split(query, room)
            text = pieces[0] if pieces else query.strip()
            used = budget.input_tokens(compose_input(budget.prefix, None, text))
            if used <= budget.max_input_tokens or room <= 1:
                return QueryFit(text, True, used, total)
            room -= used - budget.max_input_tokens

    # -- internals -----------------------------------------------------------------------------
    def _encode(self, texts: list[str], budget: TokenBudget, tokens: Tokens | None = None) -> tuple[np.ndarray, list[int]]:
        if tokens is None:
            tokens = self.engine.tokenize(texts, truncate=False)  # one tokenization: the counts and the forward
        counts = [len(ids) for ids in tokens.input_ids]
        for text, count in zip(texts, counts):
            if count > budget.max_input_tokens:
                raise InputTooLongError(
                    f"input of {count} tokens exceeds {self.info.name}'s limit of {budget.max_input_tokens} "
                    f"tokens; korag refuses rather than truncates (starts with {text[:60]!r})"
                )
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32), []
        return self.engine.encode(texts, tokens), counts

    @property
    def precision(self) -> str:
        return self.engine.precision

    @cached_property
    def parameters(self) -> int:
        """The model's parameter count (MiniLM: 23M, KoE5: 560M)."""
        return sum(p.numel() for p in self.model.parameters()) if hasattr(self.model, "parameters") else 0

    @property
    def on_cpu(self) -> bool:
        """The forward runs on the CPU, on the cores the parsers use too."""
        return self.engine.device.type == "cpu"
