"""``KoragRetriever``: korag's search as a LangChain retriever, with search parameters at invoke
time as LangChain's convention has it: ``retriever.invoke("질문", k=3, filter={...}, mode="dense")``;
``context="section"`` returns the section runs the matching chunks belong to (:mod:`retrieval.sections`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from korag.types import SearchResult
from retrieval.context import format_context
from retrieval.search import Retriever

SEARCH_KWARGS = ("k", "filter", "filters", "mode", "tenant", "context")
_LANGCHAIN_KWARGS = ("verbose",)  # BaseRetriever.invoke reads it and passes it on; not a search parameter


def to_document(result: SearchResult) -> Document:
    return Document(page_content=result.text, metadata={**result.metadata, "score": result.score, "id": result.id},
                    id=result.id)


def format_documents(documents: Sequence[Document]) -> str:
    """korag's numbered, cited prompt context (``format_context``) for retrieved ``Document``s:
    ``[1] 규정.pdf, p. 3, 제2장\\n<text>``; the step between a retriever and a prompt in a chain."""
    return format_context([
        SearchResult(id=str(d.id), score=float(d.metadata.get("score", 0.0)), text=d.page_content, metadata=d.metadata)
        for d in documents
    ])


class KoragRetriever(BaseRetriever):
    """``retriever.invoke("질문")`` → top-k ``Document``s with korag metadata plus ``score`` and ``id``.

    The fields are the defaults; ``invoke``/``ainvoke`` take ``k``, ``filter`` (or ``filters``),
    ``mode``, ``tenant`` and ``context`` (chunk or section) per call. A tenant set here is a boundary: a call may repeat it but
    never name another one. ``ainvoke`` runs the search (model and store) in a worker thread.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = 5
    filters: dict[str, Any] | None = Field(default=None)
    mode: str | None = Field(default=None, description="dense, sparse or hybrid; default: the retriever's")
    tenant: str | None = None
    context: str | None = Field(default=None, description="chunk or section; default: the retriever's")

    def search_params(self, **kwargs: Any) -> dict[str, Any]:
        """The arguments of ``Retriever.search`` for one call: invoke-time values over the fields."""
        unknown = sorted(set(kwargs) - set(SEARCH_KWARGS) - set(_LANGCHAIN_KWARGS))
        if unknown:
            raise TypeError(f"KoragRetriever does not take {', '.join(unknown)}; "
                            f"search parameters are {', '.join(SEARCH_KWARGS)}")
        if kwargs.get("filter") is not None and kwargs.get("filters") is not None:
            raise TypeError("KoragRetriever: give filter or filters, not both")
        tenant = kwargs.get("tenant")
        if self.tenant is not None and tenant is not None and tenant != self.tenant:
            raise PermissionError(f"KoragRetriever is bound to tenant {self.tenant!r}; a call cannot search "
                                  f"tenant {tenant!r}: build a retriever for that tenant instead")
        k = kwargs.get("k")
        filters = kwargs.get("filter") if kwargs.get("filter") is not None else kwargs.get("filters")
        mode = kwargs.get("mode")
        context = kwargs.get("context")
        return {
            "k": k if k is not None else self.k,
            "filters": filters if filters is not None else self.filters,
            "mode": mode if mode is not None else self.mode,
            "tenant": tenant if tenant is not None else self.tenant,
            "context": context if context is not None else self.context,
        }

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return [to_document(r) for r in self.retriever.search(query, **self.search_params(**kwargs))]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        params = self.search_params(**kwargs)  # argument errors are raised here, not in the thread
        results = await asyncio.to_thread(self.retriever.search, query, **params)
        return [to_document(r) for r in results]
