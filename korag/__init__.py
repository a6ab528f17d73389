"""korag: Korean-first document ingestion and retrieval.

The distribution ships four top-level packages: ``korag`` (settings, shared types, the
Qdrant store, the CLI), ``ingest`` (parse, chunk, embed, upsert), ``retrieval`` (search,
prompt context, LangChain adapters) and ``workers`` (the Celery app and its tasks).
"""

__version__ = "0.1.0"
