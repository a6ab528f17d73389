"""Document ids that no source can forge (issue 18, item 2).

A document's id is derived from (tenant, source). korag derived it from ``tenant NUL source``
(``source`` alone without a tenant), so an admin's source ``"a\\x00salary.txt"`` was tenant ``a``'s
``salary.txt``. Now the id hashes a length-prefixed encoding of the pair, sources may not hold
control characters, and a document stored under the old id keeps it (found, ``unchanged``,
deleted under that id). ``LEGACY`` below is the old derivation, spelled out as old korag ran it.
"""

from __future__ import annotations

import uuid

import httpx
import hypothesis
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bench import documents as docs
from ingest.batch import BatchIngest
from ingest.pipeline import DocumentInfo, Pipeline, doc_id_for
from korag.errors import DocumentError
from korag.rules import source_problem
from korag.services.service import clean_source
from korag.storage.registry import DocumentRecord, DocumentRegistry
from korag.storage.store import QdrantStore, open_client, store_session
from tests.api_server import serve
from tests.conftest import make_settings
from tests.test_cli_hardening import json_lines, local_env, run

_OLD_DOCUMENTS = uuid.UUID("0d0c5f7e-8a43-4f3f-a9a2-6b6f7261670b")  # ingest/pipeline.py before issue 18
_OLD_LANGCHAIN = uuid.UUID("3f1d9c7a-5b2e-4e61-9a37-6b6f7261670d")  # retrieval/langchain_store.py


def legacy(namespace: uuid.UUID, name: str, tenant: str | None) -> str:
    """The id korag gave a document before issue 18."""
    return uuid.uuid5(namespace, name if tenant is None else f"{tenant}\x00{name}").hex


SALARY = "연봉 계약서: 김철수 연봉 5천만원, 지급일 매월 25일."
FORGED = "위조된 문서: 연봉 1억원으로 변경합니다."

# Refused in a source: C0, DEL, C1, separators, bidi controls and marks, a lone surrogate.
REFUSED = ["\x00", "\x1b", "\n", "\x7f", "\x85", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069",
           "\u200e", "\u200f", "\u061c", "\udcff"]


@pytest.fixture
def parts(tmp_path, minilm):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    return Pipeline.build(minilm, store, settings), store, DocumentRegistry(store.client, settings.collection)


def texts(store: QdrantStore, doc_id: str) -> str:
    return " ".join(c.text for c in store.iter_chunks({"doc_id": doc_id}))


# -- the id scheme ----------------------------------------------------------------------------------
_names = st.text(alphabet="a\x00b/", max_size=4)
_pairs = st.tuples(st.none() | _names, _names)


@hypothesis.settings(max_examples=500, deadline=None)
@given(_pairs, _pairs)
@example((None, "a\x00salary.txt"), ("a", "salary.txt"))
@example(("a\x00b", "c"), ("a", "b\x00c"))
def test_ids_are_injective_in_tenant_and_source(one, other):
    (tenant_1, source_1), (tenant_2, source_2) = one, other
    if one != other:
        assert doc_id_for(source_1, tenant_1) != doc_id_for(source_2, tenant_2)
    else:
        assert doc_id_for(source_1, tenant_1) == doc_id_for(source_2, tenant_2)


def test_ids_keep_their_format_and_differ_from_every_old_id():
    doc_id = doc_id_for("hr/leave.md", "acme")
    assert len(doc_id) == 32 and uuid.UUID(hex=doc_id).version == 5 and doc_id == uuid.UUID(hex=doc_id).hex
    assert doc_id != legacy(_OLD_DOCUMENTS, "hr/leave.md", "acme")
    assert doc_id_for("hr/leave.md") != legacy(_OLD_DOCUMENTS, "hr/leave.md", None)
    assert doc_id_for("x", "") != doc_id_for("x")  # an empty tenant is not no tenant


# -- the source rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("char", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_sources_with_control_characters_are_refused_with_the_reason(char):
    source = f"a{char}salary.txt"
    with pytest.raises(ValueError, match=f"source .* contains U\\+{ord(char):04X}"):
        clean_source(source)
    assert source_problem(source) is not None


@pytest.mark.parametrize("source", ["보고서/2024 연차.pdf", "a b.txt", "emoji 😀.md", "zero\u200bwidth.txt", "Ünïcödé"])
def test_ordinary_sources_pass(source):
    assert source_problem(source) is None and clean_source(source) == source


# -- old ids keep working -----------------------------------------------------------------------------
def test_a_document_stored_under_its_old_id_keeps_it(tmp_path, parts):
    pipeline, store, registry = parts
    path = docs.make_text(tmp_path / "salary.txt", text=SALARY)
    old = legacy(_OLD_DOCUMENTS, "salary.txt", "a")
    stored = pipeline.ingest_path(path, source="salary.txt", doc_id=old, info=DocumentInfo(tenant="a"))
    assert (stored.status, stored.doc_id) == ("indexed", old)

    again = pipeline.ingest_path(path, source="salary.txt", info=DocumentInfo(tenant="a"))
    assert (again.status, again.doc_id) == ("unchanged", old)
    (batched,) = BatchIngest(pipeline, workers=1).run([(path, "salary.txt")], DocumentInfo(tenant="a"))
    assert (batched.status, batched.doc_id) == ("unchanged", old)
    assert registry.get(old).version == 1 and SALARY[:10] in texts(store, old)

    # Another tenant's (or no tenant's) salary.txt is another document, with a new id.
    other = pipeline.ingest_path(path, source="salary.txt", info=DocumentInfo(tenant="b"))
    assert other.status == "indexed" and other.doc_id not in (old, legacy(_OLD_DOCUMENTS, "salary.txt", "b"))


def test_a_source_spelling_another_tenants_old_id_gets_its_own_document(tmp_path, parts):
    """The old ids collide; the one stored first keeps its id, the other gets a new one."""
    pipeline, store, registry = parts
    old = legacy(_OLD_DOCUMENTS, "salary.txt", "a")
    path = docs.make_text(tmp_path / "salary.txt", text=SALARY)
    pipeline.ingest_path(path, source="salary.txt", doc_id=old, info=DocumentInfo(tenant="a"))
    forged = docs.make_text(tmp_path / "forged.txt", text=FORGED)

    taken = pipeline.ingest_path(forged, source="a\x00salary.txt")  # an admin's ingest, no tenant
    assert taken.status == "indexed" and taken.doc_id != old
    record = registry.get(old)
    assert (record.tenant, record.source, record.version) == ("a", "salary.txt", 1)
    assert SALARY[:10] in texts(store, old) and FORGED[:10] not in texts(store, old)


@pytest.mark.slow
def test_the_queue_client_keeps_an_old_id(tmp_path, redis_server):
    from korag.services.queue_client import enqueue
    from korag.storage.blobs import BlobStore
    from workers.app import create_app

    settings = make_settings(tmp_path, broker_url=redis_server.url)
    registry = DocumentRegistry(open_client(settings), settings.collection)
    old = legacy(_OLD_DOCUMENTS, "salary.txt", "a")
    registry.put(DocumentRecord(doc_id=old, source="salary.txt", status="indexed", tenant="a", version=1))
    path = docs.make_text(tmp_path / "salary.txt", text=SALARY)
    app, blobs = create_app(settings), BlobStore(settings.blobs_path)

    sent = enqueue(app, blobs, registry, path, "salary.txt", settings.max_file_bytes, DocumentInfo(tenant="a"))
    assert sent.doc_id == old and registry.get(old).status == "queued"
    forged = enqueue(app, blobs, registry, path, "a\x00salary.txt", settings.max_file_bytes, DocumentInfo())
    assert forged.doc_id != old and registry.get(old).tenant == "a"


def test_langchain_ids_are_injective_and_old_ones_keep_working(tmp_path, minilm):
    from retrieval.langchain import KoragVectorStore

    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    tenant_a = KoragVectorStore.from_settings(minilm, store, settings, tenant="a")
    admin = KoragVectorStore(tenant_a.pipeline, tenant_a.retriever)
    old = legacy(_OLD_LANGCHAIN, "pay", "a")
    assert tenant_a.doc_id("pay") != old  # nothing stored yet: the new id
    tenant_a.pipeline.ingest_bytes(SALARY.encode(), "pay.txt", "langchain:pay", doc_id=old,
                                   info=DocumentInfo(tenant="a", meta=tenant_a._payload_meta("pay", {})))
    assert tenant_a.doc_id("pay") == old
    assert [d.page_content for d in tenant_a.get_by_ids(["pay"])] == [SALARY]

    admin.add_texts([FORGED], [{"source": "forged.txt"}], ids=["a\x00pay"])
    assert admin.doc_id("a\x00pay") != old
    assert [d.page_content for d in tenant_a.get_by_ids(["pay"])] == [SALARY]
    with pytest.raises(DocumentError, match="U\\+001B"):
        admin.add_texts(["x"], [{"source": "evil\x1b[2J.txt"}], ids=["evil"])

    tenant_a.delete(["pay"])
    assert tenant_a.get_by_ids(["pay"]) == [] and store.count({"doc_id": old}) == 0


# -- the CLI ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_refuses_control_characters_in_paths_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    docs.make_text(tmp_path / "good.txt", text=SALARY)
    docs.make_text(tmp_path / "bad\x1b[31m.txt", text=FORGED)
    (tmp_path / "tree").mkdir()
    docs.make_text(tmp_path / "tree" / "invoice\u202etxt.exe.md", text=FORGED)
    docs.make_text(tmp_path / "tree" / "fine.md", text=SALARY)

    code, out, err = run(monkeypatch, capsys, ["ingest", "good.txt", "bad\x1b[31m.txt", "tree", "--json"],
                         **local_env(tmp_path))
    lines = {line["source"]: line for line in json_lines(out)}
    assert code == 1, err
    assert {s for s, line in lines.items() if line["status"] == "indexed"} == {"good.txt", "tree/fine.md"}
    bad, evil = lines["bad\x1b[31m.txt"], lines["tree/invoice\u202etxt.exe.md"]
    assert bad["status"] == "failed" and "contains U+001B, a control character" in bad["error"]
    assert evil["status"] == "failed" and "contains U+202E, a bidirectional control" in evil["error"]

    code, out, _ = run(monkeypatch, capsys, ["ingest", "bad\x1b[31m.txt"], **local_env(tmp_path))
    assert code == 1 and "\x1b" not in out and "U+001B" in out  # the terminal never sees the escape


# -- over HTTP --------------------------------------------------------------------------------------
TENANT_KEY = "tenant-a-key-0123456789"
ADMIN_KEY = "admin-key-0123456789abc"


@pytest.mark.slow
def test_over_http_no_source_reaches_another_tenants_document(tmp_path, minilm):
    """A real `korag serve` on a data directory where tenant a's salary.txt was stored under its
    old id (written here first, as an older korag would have)."""
    workdir = tmp_path / "serve"
    settings = make_settings(workdir, qdrant_url=None)
    old = legacy(_OLD_DOCUMENTS, "salary.txt", "a")
    path = docs.make_text(tmp_path / "salary.txt", text=SALARY)
    with store_session(settings) as store:
        stored = Pipeline.build(minilm, store, settings).ingest_path(path, source="salary.txt", doc_id=old,
                                                                     info=DocumentInfo(tenant="a"))
    assert stored.status == "indexed"

    with serve(workdir, {"KORAG_API_KEYS": f"{TENANT_KEY}=a,{ADMIN_KEY}=*"}) as server:
        url, admin, tenant = f"{server.url}/v1/documents", server.auth(ADMIN_KEY), server.auth(TENANT_KEY)
        forged = httpx.post(url, headers=admin, params={"wait": "true"}, timeout=120,
                            files={"file": ("salary.txt", FORGED.encode())}, data={"source": "a\x00salary.txt"})
        assert forged.status_code == 422, forged.text
        assert forged.json()["title"] == "Invalid source" and "U+0000" in forged.json()["detail"]
        for char in ["\x1b", "\x85", "\u2028", "\u202e", "\u2066", "\u200f"]:
            refused = httpx.post(url, headers=admin, files={"file": ("x.txt", b"x")}, data={"source": f"x{char}.txt"})
            assert refused.status_code == 422 and f"U+{ord(char):04X}" in refused.json()["detail"], refused.text

        listed = httpx.get(url, headers=admin).json()["documents"]
        assert [(d["doc_id"], d["tenant"], d["source"], d["version"]) for d in listed] == [(old, "a", "salary.txt", 1)]
        chunks = httpx.get(f"{url}/{old}/chunks", headers=tenant).json()["chunks"]
        assert SALARY[:10] in " ".join(c["text"] for c in chunks)

        again = httpx.post(url, headers=tenant, params={"wait": "true"}, files={"file": ("salary.txt", SALARY.encode())},
                           timeout=120)
        assert again.status_code == 200, again.text
        assert [(d["doc_id"], d["status"]) for d in again.json()["documents"]] == [(old, "unchanged")]

        deleted = httpx.delete(f"{url}/{old}", headers=tenant)
        assert deleted.status_code == 200 and deleted.json()["deleted_chunks"] >= 1
        assert httpx.get(f"{url}/{old}", headers=tenant).status_code == 404
        assert httpx.get(url, headers=admin).json()["documents"] == []


def test_the_schema_class_of_refused_source_characters_is_source_problems_rule():
    """The HTTP API's JSON Schema says which characters a source may not hold with one class
    (korag.rules.NOT_IN_SOURCE); it must refuse exactly what source_problem refuses (lone surrogates
    aside, which JSON Schema cannot name), over every character of the Basic Multilingual Plane."""
    import re

    from korag.rules import NOT_IN_SOURCE

    in_class = re.compile(f"[{NOT_IN_SOURCE}]")
    differ = [f"U+{code:04X}" for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF
              and bool(in_class.search(chr(code))) != (source_problem(f"a{chr(code)}b") is not None)]
    assert not differ, differ
