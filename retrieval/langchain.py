"""LangChain adapters, the only place korag subclasses LangChain classes.

- ``KoragRetriever``: korag's search as a retriever, ``format_documents``: its results as korag's
  numbered, cited prompt context (``langchain_retriever``).
- ``KoragEmbeddings``: the embedding model with korag's prefixes (``langchain_embeddings``).
- ``KoragSparseEmbeddings`` and ``korag_fusion``: the Kiwi BM25 keyword channel and korag's fusion
  for langchain-qdrant's hybrid mode (``langchain_sparse``).
- ``KoragVectorStore``: a ``VectorStore`` whose writes go through korag's pipeline (``langchain_store``).
"""

from retrieval.langchain_embeddings import KoragEmbeddings
from retrieval.langchain_retriever import KoragRetriever, format_documents, to_document
from retrieval.langchain_sparse import KoragSparseEmbeddings, korag_fusion
from retrieval.langchain_store import KoragVectorStore

__all__ = ["KoragEmbeddings", "KoragRetriever", "KoragSparseEmbeddings", "KoragVectorStore", "format_documents",
           "korag_fusion", "to_document"]
