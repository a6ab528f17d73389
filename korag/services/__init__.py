"""Services: what korag does with its storage, for every way in. The document service (ingest,
search, list, delete), the document lifecycle (queueing, recovery, deletion, blob retention), the
ingest queue of an embedded service, the Celery queue client, webhooks, metrics, API keys and the
JSON schemas every entry point prints. Never imports an entry point (CLI, HTTP, workers)."""
