"""`korag serve` under load, across tenants, with hostile files, and its webhooks: one real
service process (uvicorn on a free loopback port, the offline model, the embedded store) shared
by the module, called over HTTP with httpx, and a real local HTTP server receiving its webhooks.

Keys: tenant ``alpha`` from KORAG_API_KEYS, tenant ``beta`` from the key file (``KeyRing.add``
before the start, as ``korag keys add`` writes it), and an admin key (``*``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bench import documents as docs
from tests.api_server import ApiServer
from tests.conftest import free_port, make_settings
from tests.test_lifecycle import _bad_inputs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ALPHA_KEY = "alpha_" + secrets.token_urlsafe(24)
ADMIN_KEY = "admin_" + secrets.token_urlsafe(24)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
FINAL = ("indexed", "failed")
MAX_FILE_BYTES = 1024 * 1024


# -- a webhook receiver: a real HTTP server in a thread ------------------------------------------
class Receiver:
    """Records every delivery (headers, body); answers 503 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 1) -> None:
        self.deliveries: list[dict] = []  # {"headers", "body", "status", "received"}
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 503 if len(receiver.deliveries) < receiver.fail_first else 200
                    receiver.deliveries.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                                "body": body, "status": status, "received": time.time()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/korag"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [d for d in self.deliveries if d["status"] == 200]

    def events(self, type_: str | None = None) -> list[dict]:
        """Bodies of accepted deliveries, one per event id."""
        seen: dict[str, dict] = {}
        for delivery in self.accepted():
            event = json.loads(delivery["body"])
            if type_ is None or event["type"] == type_:
                seen.setdefault(event["id"], event)
        return list(seen.values())

    def wait_for(self, predicate, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if predicate(e)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no webhook event matched within {timeout:.0f} s; got {self.events()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver(fail_first=1)
    yield r
    r.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, receiver):
    server = _service(tmp_path_factory.mktemp("service"), receiver)
    yield server
    server.stop()


@pytest.fixture
def fresh_service(tmp_path, receiver):
    """A service of its own: a test that bounds the process's peak memory measures its own work,
    not the peak the module's earlier tests (50 concurrent uploads) left in VmHWM."""
    server = _service(tmp_path / "fresh", receiver)
    yield server
    server.stop()


def _service(workdir, receiver) -> ApiServer:
    from korag.services.keys import FILE_NAME, KeyRing

    server = ApiServer(workdir, {
        "KORAG_API_KEYS": f"{ALPHA_KEY}=alpha,{ADMIN_KEY}=*",
        "KORAG_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "KORAG_WEBHOOK_URL": receiver.url,
        "KORAG_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "KORAG_WEBHOOK_BACKOFF_S": "0.2",
        "KORAG_WEBHOOK_BACKOFF_MAX_S": "1",
    })
    server.data_dir.mkdir(parents=True)
    _, beta_key = KeyRing(server.data_dir / FILE_NAME).add("beta")
    server.start()
    server.beta_key = beta_key
    return server


def client(service: ApiServer, key: str | None, tenant: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers=service.auth(key, tenant), timeout=300)


# -- HTTP helpers ---------------------------------------------------------------------------------
def upload(http: httpx.Client, files: list[tuple[str, bytes]], source: str | None = None, wait: bool = False,
           timeout: float = 240) -> httpx.Response:
    data = {"source": source} if source is not None else {}
    params = {"wait": "true", "timeout": str(timeout)} if wait else {}
    return http.post("/v1/documents", files=[("file", (name, body)) for name, body in files], data=data,
                     params=params)


def wait_final(http: httpx.Client, doc_ids, timeout: float = 300) -> dict[str, dict]:
    """Poll GET /v1/documents/{id} until every document is indexed or failed."""
    pending, done = set(doc_ids), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for doc_id in sorted(pending):
            response = http.get(f"/v1/documents/{doc_id}")
            assert response.status_code == 200, response.text
            if response.json()["status"] in FINAL:
                done[doc_id] = response.json()
        pending -= set(done)
        if pending:
            time.sleep(0.3)
    assert not pending, f"not final within {timeout:.0f} s: {sorted(pending)}"
    return done


def paged(http: httpx.Client, path: str, field: str, **params) -> list[dict]:
    """Every item of a paginated listing ({field: [...], "next_cursor"})."""
    items, cursor = [], None
    for _ in range(1000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body[field]
        cursor = body.get("next_cursor")
        if not cursor:
            return items
    raise AssertionError(f"{path}: more than 1000 pages")


def search(http: httpx.Client, query: str, **body) -> httpx.Response:
    return http.post("/v1/search", json={"query": query, **body})


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert problem["status"] == status and problem["title"], problem
    return problem


# -- 50 concurrent uploads ------------------------------------------------------------------------
WORDS = ["apple", "banana", "cherry", "durian", "elderberry", "fig", "grape", "honeydew", "kiwifruit", "lemon",
         "mango", "nectarine", "orange", "papaya", "quince", "raspberry", "strawberry", "tangerine", "ugli", "vanilla"]


def _load_documents(folder: Path) -> list[tuple[str, bytes, str]]:
    """20 distinct documents in six formats: (file name, bytes, a word only this one holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = [
        ("규정.pdf", docs.make_pdf(folder / "규정.pdf", [["제1장 총칙", f"{WORDS[0]} 이 규정은 시험용입니다."],
                                                       [docs.SECRET_SENTENCE]])),
        ("문서.docx", docs.make_docx(folder / "문서.docx")),
        ("발표.pptx", docs.make_pptx(folder / "발표.pptx")),
        ("성적.xlsx", docs.make_xlsx(folder / "성적.xlsx")),
        ("안내.html", docs.make_html(folder / "안내.html")),
        ("설치.md", docs.make_markdown(folder / "설치.md")),
    ]
    out = [(name, path.read_bytes(), WORDS[0] if i == 0 else "") for i, (name, path) in enumerate(made)]
    for i in range(6, 20):
        text = f"{WORDS[i]} 문서 {i}번입니다.\n\n" + docs.long_korean_text(1 + (i * 3) % 17)
        out.append((f"공지-{i:02d}.txt", text.encode("utf-8"), WORDS[i]))
    return out


def _expected_chunks(minilm, tmp_path: Path, documents) -> dict[str, int]:
    """Chunk counts from korag's own parser and chunker in this process, with the service's settings."""
    from ingest.parsing import parse_document
    from ingest.pipeline import chunker_for

    chunker = chunker_for(minilm, make_settings(tmp_path))
    return {name: len(chunker.chunk(parse_document(data, name, f"load/{name}"))) for name, data, _ in documents}


def test_50_concurrent_uploads_index_each_document_once_while_searches_are_answered(service, receiver, minilm,
                                                                                    tmp_path):
    documents = _load_documents(tmp_path / "load")
    expected = _expected_chunks(minilm, tmp_path, documents)
    sends = [d for i, d in enumerate(documents) for _ in range(3 if i < 10 else 2)]
    random.Random(11).shuffle(sends)
    assert len(sends) == 50 and len({name for name, _, _ in sends}) == 20

    searches: list[tuple[float, int]] = []  # (answered at, HTTP status)
    stop = threading.Event()

    def searcher() -> None:
        with client(service, ALPHA_KEY) as http:
            while not stop.is_set():
                response = search(http, "법원조직법 설명", k=5, mode=random.choice(["dense", "sparse", "hybrid"]))
                searches.append((time.monotonic(), response.status_code))

    def send(item) -> httpx.Response:
        name, data, _ = item
        with client(service, ALPHA_KEY) as http:
            return upload(http, [(name, data)], source=f"load/{name}")

    started = time.monotonic()
    watcher = threading.Thread(target=searcher, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(send, sends))
        ids: dict[str, str] = {}
        for (name, _, _), response in zip(sends, responses):
            assert response.status_code in (200, 202), (name, response.status_code, response.text)
            (doc,) = response.json()["documents"]
            assert doc["source"] == f"load/{name}" and doc["status"] in ("queued", "indexed", "unchanged"), doc
            assert ids.setdefault(name, doc["doc_id"]) == doc["doc_id"], f"{name}: two doc_ids"
            if doc["status"] == "queued":
                assert response.status_code == 202
        with client(service, ALPHA_KEY) as http:
            final = wait_final(http, ids.values())
        done = time.monotonic()
    finally:
        stop.set()
        watcher.join(timeout=120)

    assert {status for _, status in searches} == {200}, searches
    during = [t for t, _ in searches if started < t < done]
    assert len(during) >= 3, f"only {len(during)} searches answered in the {done - started:.1f} s of ingest"
    print(f"50 uploads of 20 documents ({sum(expected.values())} chunks) final in {done - started:.1f} s; "
          f"{len(during)} searches answered meanwhile")

    with client(service, ALPHA_KEY) as http:
        for name, doc_id in ids.items():
            record = final[doc_id]
            assert (record["status"], record["version"], record["chunks"]) == ("indexed", 1, expected[name]), record
            chunks = paged(http, f"/v1/documents/{doc_id}/chunks", "chunks")
            assert sorted(c["metadata"]["chunk_index"] for c in chunks) == list(range(expected[name])), name
            assert {c["metadata"]["doc_id"] for c in chunks} == {doc_id}
        listed = paged(http, "/v1/documents", "documents", source_prefix="load/", limit=7)
        assert sorted(d["source"] for d in listed) == sorted(f"load/{name}" for name in ids)
        for name, _, word in documents:
            if word:
                top = search(http, word, k=1, mode="sparse").json()["results"]
                assert top and top[0]["metadata"]["doc_id"] == ids[name], (word, top)

    # indexed exactly once: one document.indexed event per document (deliveries may repeat an event id)
    receiver.wait_for(lambda e: e["type"] == "document.indexed" and e["data"]["doc_id"] == ids[sends[-1][0]])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        indexed = [e["data"]["doc_id"] for e in receiver.events("document.indexed")]
        if set(ids.values()) <= set(indexed):
            break
        time.sleep(0.3)
    time.sleep(1)
    indexed = [e["data"]["doc_id"] for e in receiver.events("document.indexed")]
    assert {doc_id: indexed.count(doc_id) for doc_id in ids.values()} == {doc_id: 1 for doc_id in ids.values()}


# -- tenant isolation -----------------------------------------------------------------------------
SHARED_WORDS = ["연차휴가", "보증금", "임차인", "계약", "규정", "시행일", "회의", "예산"]


def _tenant_docs(tenant: str) -> list[tuple[str, bytes]]:
    """Small one-chunk documents: every chunk holds its tenant's marker word."""
    marker = f"{tenant}only"
    out = [("iso/공지.txt", f"{marker} 공지입니다. {' '.join(SHARED_WORDS)}에 관한 안내입니다.".encode())]
    for i in range(4):
        words = " ".join(random.Random(f"{tenant}{i}").sample(SHARED_WORDS, 4))
        out.append((f"iso/{tenant}-{i}.md", f"# {marker} 문서 {i}\n\n{marker} {words} 내용입니다.\n".encode()))
    return out


def _ingest_tenant(service: ApiServer, key: str, tenant: str) -> set[str]:
    ids = set()
    with client(service, key) as http:
        for source, data in _tenant_docs(tenant):
            response = upload(http, [(Path(source).name, data)], source=source, wait=True)
            assert response.status_code == 200, response.text
            (doc,) = response.json()["documents"]
            assert doc["status"] in ("indexed", "unchanged"), doc
            ids.add(doc["doc_id"])
    return ids


def test_tenants_never_see_each_others_documents_and_an_admin_sees_both(service):
    alpha = _ingest_tenant(service, ALPHA_KEY, "alpha")
    beta = _ingest_tenant(service, service.beta_key, "beta")
    assert not alpha & beta, "the same source under two tenants must be two documents"

    rng = random.Random(7)
    vocabulary = SHARED_WORDS + ["alphaonly", "betaonly", "공지", "문서 내용", "안내입니다"]
    for key, own, other, marker in ((ALPHA_KEY, alpha, beta, "betaonly"), (service.beta_key, beta, alpha, "alphaonly")):
        with client(service, key) as http:
            found_own = 0
            for _ in range(12):
                query = " ".join(rng.sample(vocabulary, rng.randint(1, 3)))
                for mode in ("dense", "sparse", "hybrid"):
                    response = search(http, query, k=rng.randint(1, 100), mode=mode)
                    assert response.status_code == 200, response.text
                    for result in response.json()["results"]:
                        assert result["metadata"]["doc_id"] not in other and marker not in result["text"], (query, result)
                        found_own += result["metadata"]["doc_id"] in own
            assert found_own > 0, "searches found nothing at all: isolation would be vacuous"

            # filters and headers cannot reach the other tenant
            for where in ({"tenant": "beta" if key == ALPHA_KEY else "alpha"},
                          {"or": [{"key": "source", "op": "eq", "value": "iso/공지.txt"},
                                  {"key": "tenant", "op": "exists", "value": True}]}):
                response = search(http, "공지", k=100, mode="sparse", filter=where)
                assert response.status_code in (200, 422), response.text
                if response.status_code == 200:
                    assert not {r["metadata"]["doc_id"] for r in response.json()["results"]} & other, where
            spoofed = http.post("/v1/search", json={"query": marker, "k": 100, "mode": "sparse"},
                                headers={"X-Korag-Tenant": "beta" if key == ALPHA_KEY else "alpha"})
            if spoofed.status_code == 200:
                assert not {r["metadata"]["doc_id"] for r in spoofed.json()["results"]} & other
            else:
                assert spoofed.status_code in (400, 401, 403), spoofed.text

            listed = {d["doc_id"] for d in paged(http, "/v1/documents", "documents", limit=50)}
            assert own <= listed and not listed & other
            assert {d["doc_id"] for d in paged(http, "/v1/documents", "documents", source_prefix="iso/")} == own
            for foreign in other:
                assert_problem(http.get(f"/v1/documents/{foreign}"), 404)
                assert_problem(http.get(f"/v1/documents/{foreign}/chunks"), 404)
                assert_problem(http.delete(f"/v1/documents/{foreign}"), 404)

            retrieval = http.post("/v1/retrieval", json={
                "knowledge_id": "korag", "query": marker + " 공지", "retrieval_setting": {"top_k": 20, "score_threshold": 0}})
            assert retrieval.status_code == 200, retrieval.text
            assert all(marker not in r["content"] for r in retrieval.json()["records"])

    # nothing was deleted by the other tenant's attempts
    with client(service, service.beta_key) as http:
        assert {d["doc_id"] for d in paged(http, "/v1/documents", "documents", source_prefix="iso/")} == beta

    with client(service, ADMIN_KEY) as http:
        for mode in ("dense", "sparse", "hybrid"):  # both tenants' iso/공지.txt
            response = search(http, "공지 alphaonly betaonly", k=10, mode=mode, filter={"source": "iso/공지.txt"})
            assert response.status_code == 200, response.text
            seen = {r["metadata"]["doc_id"] for r in response.json()["results"]}
            assert len(seen & alpha) == 1 and len(seen & beta) == 1, (mode, seen)
        everyone = {d["doc_id"] for d in paged(http, "/v1/documents", "documents", source_prefix="iso/")}
        assert alpha | beta <= everyone
    with client(service, ADMIN_KEY, tenant="beta") as http:
        assert {d["doc_id"] for d in paged(http, "/v1/documents", "documents", source_prefix="iso/")} == beta
        results = search(http, "alphaonly 공지", k=100, mode="sparse").json()["results"]
        assert results and {r["metadata"]["doc_id"] for r in results} <= beta

    for key in (None, "wrong_" + secrets.token_urlsafe(24)):
        with client(service, key) as http:
            assert_problem(search(http, "공지"), 401)
            assert_problem(http.get("/v1/documents"), 401)
            assert_problem(upload(http, [("x.txt", "안녕".encode())]), 401)


# -- hostile input over HTTP ----------------------------------------------------------------------
def test_bad_inputs_fail_with_their_reason_and_the_service_keeps_serving_in_bounded_memory(fresh_service, tmp_path):
    service = fresh_service
    expected = _bad_inputs(tmp_path / "in")
    folder = tmp_path / "in"
    batch = [name for name in expected if name != "huge.txt"]
    with client(service, ALPHA_KEY) as http:
        response = upload(http, [(name, (folder / name).read_bytes()) for name in batch], wait=True)
        assert response.status_code in (200, 202), response.text
        outcomes = {d["source"]: d for d in response.json()["documents"]}
        assert sorted(outcomes) == sorted(batch), "each file of the upload has its own outcome"
        queued = [d["doc_id"] for d in outcomes.values() if d["status"] == "queued"]
        if queued:
            final = wait_final(http, queued)
            for doc in outcomes.values():
                if doc["doc_id"] in final:
                    doc.update(status=final[doc["doc_id"]]["status"], error=final[doc["doc_id"]]["error"])
        for name in batch:
            doc, fragment = outcomes[name], expected[name]
            if fragment is None:
                assert doc["status"] in ("indexed", "unchanged"), (name, doc)
            else:
                assert doc["status"] == "failed" and fragment in doc["error"], (name, doc)

        # over the size limit: refused (413 problem) before or while reading, or failed with the reason
        huge = upload(http, [("huge.txt", (folder / "huge.txt").read_bytes())])
        if huge.status_code == 413:
            assert_problem(huge, 413)
        else:
            assert huge.status_code in (200, 202), huge.text
            (doc,) = huge.json()["documents"]
            doc = wait_final(http, [doc["doc_id"]])[doc["doc_id"]] if doc["status"] == "queued" else doc
            assert doc["status"] == "failed" and "over the limit" in doc["error"], doc

        # still serving: health, search (the CP949 file's own word), a good upload
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        found = search(http, "똠방각하", k=1, mode="sparse").json()["results"]
        assert found and "똠방각하" in found[0]["text"]
        again = upload(http, [("after.md", "# 복구\n\n서비스는 계속 동작합니다.".encode())], wait=True)
        assert again.status_code == 200 and again.json()["documents"][0]["status"] == "indexed", again.text
    assert service.alive()
    peak = service.peak_rss_bytes()
    assert 200 << 20 < peak < 2 << 30, f"service peak RSS {peak / 2**20:.0f} MiB"
    print(f"service peak RSS {peak / 2**20:.0f} MiB")


# -- webhooks -------------------------------------------------------------------------------------
def _signature_ok(delivery: dict, tolerance_s: float = 300) -> bool:
    headers = delivery["headers"]
    timestamp = headers["x-korag-timestamp"]
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + delivery["body"], hashlib.sha256)
    return (hmac.compare_digest(headers["x-korag-signature"], f"sha256={expected.hexdigest()}")
            and abs(delivery["received"] - float(timestamp)) <= tolerance_s)


def test_webhooks_are_delivered_signed_and_retried(service, receiver):
    with client(service, ALPHA_KEY) as http:
        good = upload(http, [("good.md", "# 웹훅\n\n색인되면 알림이 갑니다.".encode())], source="hook/good.md", wait=True)
        bad = upload(http, [("empty.pdf", b"")], source="hook/empty.pdf", wait=True)
        assert good.status_code == 200 and bad.status_code == 200, (good.text, bad.text)
        good_id, bad_id = good.json()["documents"][0]["doc_id"], bad.json()["documents"][0]["doc_id"]
        deleted = http.delete(f"/v1/documents/{good_id}")
        assert deleted.status_code == 200, deleted.text
        assert_problem(http.get(f"/v1/documents/{good_id}"), 404)

    (indexed,) = receiver.wait_for(lambda e: e["type"] == "document.indexed" and e["data"]["doc_id"] == good_id)
    (failed,) = receiver.wait_for(lambda e: e["type"] == "document.failed" and e["data"]["doc_id"] == bad_id)
    (gone,) = receiver.wait_for(lambda e: e["type"] == "document.deleted" and e["data"]["doc_id"] == good_id)
    assert "empty file" in json.dumps(failed["data"], ensure_ascii=False), failed
    assert len({indexed["id"], failed["id"], gone["id"]}) == 3

    for delivery in receiver.accepted():
        event = json.loads(delivery["body"])
        headers = delivery["headers"]
        assert set(event) >= {"id", "type", "created_at", "data"}, event
        assert (headers["x-korag-event-id"], headers["x-korag-event"]) == (event["id"], event["type"])
        assert _signature_ok(delivery), delivery
        tampered = dict(delivery, body=delivery["body"].replace(b'"data"', b'"Data"', 1))
        assert not _signature_ok(tampered)

    # the receiver refused the first delivery: the same event came again and was accepted
    first = receiver.deliveries[0]
    assert first["status"] == 503
    assert first["headers"]["x-korag-event-id"] in {d["headers"]["x-korag-event-id"] for d in receiver.accepted()}
