"""``KoragHttpRetriever``: a LangChain retriever over a running ``korag serve`` (``POST /v1/search``),
for an app that does not load the model or open the store itself.

    retriever = KoragHttpRetriever(url="http://localhost:8000", api_key="korag_...", k=5)
    docs = retriever.invoke("연차휴가는 며칠인가요?", filter={"team": "hr"})

Documents are the same as :class:`retrieval.langchain.KoragRetriever`'s (korag metadata plus
``score`` and ``id``), so ``format_documents`` gives the same cited context. An error answer of
the service raises :class:`KoragHttpError` with its problem details.
"""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, SecretStr

from korag.errors import KoragError
from korag.types import SearchResult
from retrieval.langchain_retriever import to_document

SEARCH_KWARGS = ("k", "filter", "mode", "context")
_LANGCHAIN_KWARGS = ("verbose",)


class KoragHttpError(KoragError):
    """The service answered with an error (problem+json): ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"korag service answered {status}: {detail}")
        self.status = status
        self.detail = detail


class KoragHttpRetriever(BaseRetriever):
    """The fields are defaults; ``invoke``/``ainvoke`` take ``k``, ``filter`` (the service's filter
    language: ``{"key": value}`` or ``{"and"|"or"|"not": [...]}``), ``mode`` and ``context`` (chunk or
    section: the service's ``context``) per call.
    ``tenant``: for an admin key, the tenant to search (``X-Korag-Tenant``)."""

    url: str = Field(description="the service's base URL, e.g. http://localhost:8000")
    api_key: SecretStr | None = None
    k: int = 5
    filter: dict[str, Any] | None = None
    mode: str | None = Field(default=None, description="dense, sparse or hybrid; default: the service's")
    context: str | None = Field(default=None, description="chunk or section; default: the service's")
    tenant: str | None = None
    timeout: float = 30.0

    def _request(self, query: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
        unknown = sorted(set(kwargs) - set(SEARCH_KWARGS) - set(_LANGCHAIN_KWARGS))
        if unknown:
            raise TypeError(f"KoragHttpRetriever does not take {', '.join(unknown)}; "
                            f"search parameters are {', '.join(SEARCH_KWARGS)}")
        body: dict[str, Any] = {"query": query, "k": kwargs.get("k") if kwargs.get("k") is not None else self.k}
        where = kwargs.get("filter") if kwargs.get("filter") is not None else self.filter
        if where is not None:
            body["filter"] = where
        for name in ("mode", "context"):
            value = kwargs.get(name) if kwargs.get(name) is not None else getattr(self, name)
            if value is not None:
                body[name] = value
        headers = {}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        if self.tenant is not None:
            headers["X-Korag-Tenant"] = self.tenant
        return self.url.rstrip("/") + "/v1/search", body, headers

    @staticmethod
    def _documents(response: httpx.Response) -> list[Document]:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.json().get("title")
            except ValueError:
                detail = response.text[:200]
            raise KoragHttpError(response.status_code, str(detail))
        return [to_document(SearchResult(id=r["id"], score=float(r["score"]), text=r["text"], metadata=r["metadata"]))
                for r in response.json()["results"]]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        url, body, headers = self._request(query, kwargs)
        return self._documents(httpx.post(url, json=body, headers=headers, timeout=self.timeout))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        url, body, headers = self._request(query, kwargs)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return self._documents(await client.post(url, json=body, headers=headers))
