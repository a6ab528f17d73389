"""Retrieval: embed a query, return the top-k chunks with their sources, ready for a prompt."""

from retrieval.context import format_context
from retrieval.search import Retriever

__all__ = ["Retriever", "format_context"]
