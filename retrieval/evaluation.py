"""`korag eval`: ingest a BEIR-layout dataset through the real pipeline into a scratch collection,
ask every query in each mode, report quality and latency; optionally tune the fusion weights.

A passage may become several chunks; a passage's rank is that of its best chunk. Under
``KORAG_SEARCH_CONTEXT=section`` the results are section runs (:mod:`retrieval.sections`), each
within one passage, so a passage still ranks by its best chunk; what changes is the text a result
carries (``context_chars``).
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.batch import BatchIngest
from ingest.embedder import Embedder
from ingest.pipeline import Pipeline
from korag.settings import Settings
from korag.storage.store import Fusion, QdrantStore, convex_scores, open_client
from korag.types import SearchResult
from retrieval.metrics import evaluate
from retrieval.search import Retriever

CHUNKS_PER_PASSAGE = 5  # chunks fetched per wanted passage, so k passages survive de-duplication
TEXT_START = 80  # characters of the top hit's text a miss shows


@dataclass
class Dataset:
    name: str
    corpus: list[dict]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def load(cls, folder: Path, split: str = "test") -> "Dataset":
        folder = Path(folder)
        for required in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"{folder}: not a BEIR-layout dataset (missing {required})")
        corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
        queries = {
            q["_id"]: q["text"]
            for q in (json.loads(line) for line in (folder / "queries.jsonl").open(encoding="utf-8") if line.strip())
        }
        qrels: dict[str, dict[str, int]] = {}
        with (folder / f"qrels/{split}.tsv").open(encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                if len(row) < 3 or row[0] == "query-id":
                    continue
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
        qrels = {q: rel for q, rel in qrels.items() if q in queries}
        return cls(folder.name, corpus, queries, qrels)


@dataclass
class Miss:
    """A gold passage that did not reach the top k: what quality work starts from."""

    query_id: str
    question: str
    gold_id: str
    rank: int | None  # 1-based rank among the passages fetched (k x CHUNKS_PER_PASSAGE results); None: not fetched
    top_id: str | None
    top_text: str | None

    def to_json(self) -> dict:
        return {"query_id": self.query_id, "question": self.question, "gold_id": self.gold_id, "rank": self.rank,
                "top_id": self.top_id, "top_text": self.top_text}


@dataclass
class ModeReport:
    metrics: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)

    context_chars: list[int] = field(default_factory=list)  # per passage in a top k: its best result's text
    short: int = 0  # queries whose results held fewer than k passages (small chunks: passages fetched too few)

    def to_json(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ms)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        chars = round(statistics.mean(self.context_chars), 1) if self.context_chars else 0.0
        return {**{k: round(v, 4) for k, v in self.metrics.items()},
                "p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2), "context_chars": chars,
                "short": self.short}


def _passage_ranking(sources: Iterable[str], k: int | None = None) -> list[str]:
    """Chunk sources best first → the first k distinct passages (a passage ranks by its best chunk);
    every distinct passage when k is None."""
    seen: list[str] = []
    for source in sources:
        if source not in seen:
            seen.append(source)
        if k is not None and len(seen) == k:
            break
    return seen


def _text_start(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_START else flat[:TEXT_START] + "…"


def find_misses(qid: str, question: str, results: Sequence[SearchResult], relevant: dict[str, int], k: int) -> list[Miss]:
    """One :class:`Miss` per relevant passage of ``qid`` outside the top ``k`` of ``results``
    (chunks best first), with the rank it got among every passage fetched."""
    ranking = _passage_ranking(r.metadata["source"] for r in results)
    top = results[0] if results else None
    return [
        Miss(qid, question, gold, ranking.index(gold) + 1 if gold in ranking else None,
             top.metadata["source"] if top is not None else None, _text_start(top.text) if top is not None else None)
        for gold, rel in relevant.items()
        if rel > 0 and gold not in ranking[:k]
    ]


class Evaluation:
    """Holds the scratch collection so several modes and fusion settings reuse one ingest."""

    def __init__(self, dataset: Dataset, embedder: Embedder, settings: Settings, scratch: bool = True) -> None:
        """``scratch``: a throwaway in-memory qdrant-client collection; False: the store the
        settings name (e.g. the embedded Qdrant Edge under a scratch KORAG_DATA_DIR)."""
        self.dataset = dataset
        self.settings = (settings.model_copy(update={"qdrant_url": ":memory:", "collection": "korag-eval"})
                         if scratch else settings)
        self.store = QdrantStore(open_client(self.settings), self.settings.collection, self.settings.upsert_batch_size)
        self.pipeline = Pipeline.build(embedder, self.store, self.settings)
        self.retriever = Retriever.from_settings(embedder, self.store, self.settings)
        self.ingest_seconds = 0.0
        self.chunks = 0
        self._query_cache: dict[str, tuple] = {}

    def ingest(self) -> None:
        """Every passage as one ``.txt`` document through the batch ingest `korag ingest` runs
        (warm parser processes, model calls across documents)."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="korag-eval-") as tmp:
            documents = []
            for i, passage in enumerate(p for p in self.dataset.corpus if p.get("text", "").strip()):
                path = Path(tmp) / f"{i:06d}.txt"
                path.write_bytes(passage["text"].encode("utf-8"))
                documents.append((path, passage["_id"]))
            for result in BatchIngest.from_settings(self.pipeline, self.settings).run(documents):
                if result.status != "indexed":
                    raise RuntimeError(f"passage {result.source!r} failed: {result.error}")
                self.chunks += result.chunks
        self.ingest_seconds = time.perf_counter() - start

    def run_mode(self, mode: str, k: int, fusion: Fusion | None = None, context: str | None = None) -> ModeReport:
        """Every query in ``mode`` (and ``context``, default: the settings'), its passages ranked."""
        run: dict[str, list[str]] = {}
        latencies = []
        misses: list[Miss] = []
        chars: list[int] = []
        retriever = self.retriever
        if fusion is not None:
            retriever = Retriever(retriever.embedder, self.store, retriever.sparse, mode, fusion, retriever.reranker,
                                  retriever.context)
        for qid, relevant in self.dataset.qrels.items():
            question = self.dataset.queries[qid]
            start = time.perf_counter()
            results = retriever.search(question, k=k * CHUNKS_PER_PASSAGE, mode=mode, context=context)
            latencies.append((time.perf_counter() - start) * 1000)
            run[qid] = _passage_ranking((r.metadata["source"] for r in results), k)
            misses.extend(find_misses(qid, question, results, relevant, k))
            best = {}
            for result in results:
                best.setdefault(result.metadata["source"], result)
            chars.extend(len(best[source].text) for source in run[qid])
        short = sum(len(ranking) < k for ranking in run.values())
        return ModeReport(evaluate(run, self.dataset.qrels, k), latencies, misses, chars, short)

    def tune(self, k: int, dense_weights: Sequence[float], rrf_ks: Sequence[int]) -> list[tuple[Fusion, float]]:
        """nDCG@k of hybrid for each fusion method and setting, sparse weight fixed at 1; best first:
        rrf for each (dense weight, RRF k), convex for each dense weight.

        Each channel is queried once per query; the fusion is then recomputed here for every
        setting with the formulas the store uses (Qdrant's weighted RRF, ``rrf_score``; korag's
        ``convex_scores``), so a grid costs two searches per query, not two per query and setting."""
        base = Fusion.from_settings(self.settings)
        channels: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        sources: dict[str, str] = {}
        for qid in self.dataset.qrels:
            query = self.dataset.queries[qid]
            dense = self.retriever.search(query, k=base.prefetch, mode="dense", context="chunk")
            sparse = self.retriever.search(query, k=base.prefetch, mode="sparse", context="chunk")
            for hit in (*dense, *sparse):
                sources[hit.id] = hit.metadata["source"]
            channels[qid] = ({h.id: h.score for h in dense}, {h.id: h.score for h in sparse})
        settings = [Fusion(weight, 1.0, rrf_k, base.prefetch, "rrf") for weight, rrf_k in itertools.product(dense_weights, rrf_ks)]
        settings += [Fusion(weight, 1.0, base.k, base.prefetch, "convex") for weight in dense_weights]
        scores = []
        for fusion in settings:
            run = {}
            for qid, (dense, sparse) in channels.items():
                fused = fused_scores(fusion, dense, sparse)
                run[qid] = _passage_ranking((sources[pid] for pid in sorted(fused, key=lambda pid: -fused[pid])), k)
            scores.append((fusion, evaluate(run, self.dataset.qrels, k)[f"ndcg@{k}"]))
        return sorted(scores, key=lambda item: -item[1])


def fused_scores(fusion: Fusion, dense: dict[str, float], sparse: dict[str, float]) -> dict[str, float]:
    """Chunk id → hybrid score of two channels' hits (id → score, best first) under ``fusion``."""
    if fusion.method == "convex":
        return convex_scores([(dense, fusion.dense_weight), (sparse, fusion.sparse_weight)])
    fused: dict[str, float] = {}
    for ids, weight in ((dense, fusion.dense_weight), (sparse, fusion.sparse_weight)):
        for pos, pid in enumerate(ids):
            fused[pid] = fused.get(pid, 0.0) + rrf_score(pos, weight, fusion.k)
    return fused


def rrf_score(pos: int, weight: float, k: int) -> float:
    """Qdrant's weighted reciprocal-rank fusion term for the hit at 0-based ``pos``:
    1 / ((pos + 1) / weight + k - 1); a channel of weight 0 contributes nothing."""
    return 0.0 if weight <= 0 else 1.0 / ((pos + 1.0) / weight + k - 1.0)
