"""Ingestion: parse a document, cut it into model-sized chunks, embed them, upsert them."""
