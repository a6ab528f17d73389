"""`korag serve` core, over real HTTP: a real uvicorn on a free loopback port (tests/api_server.py),
the offline model, the embedded store, httpx as the client.

Upload → indexed → found by search; the same bytes → unchanged; new bytes → replaced (never a
mix); delete → 404; every error is problem+json with the real status; keys decide the tenant.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys

import httpx
import pytest

from tests.api_server import serve
from tests.conftest import korag_env

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
LIMIT = 20_000  # KORAG_MAX_FILE_BYTES of the open server, so a 413 is cheap to provoke
V1 = "제1조 (목적) 이 규정은 연차휴가에 관한 사항을 정한다.\n\n제2조 (연차휴가) 근로자는 1년에 15일의 연차휴가를 받는다.\n"
V2 = "제1조 (목적) 이 규정은 출장비 정산에 관한 사항을 정한다.\n\n제2조 (숙박비) 출장 숙박비는 1박에 12만원까지 지급한다.\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("serve-core"), {"KORAG_MAX_FILE_BYTES": str(LIMIT)}) as running:
        yield running


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and "type" in body and "detail" in body
    return body


def _upload(url: str, name: str, text: str, headers=None, wait: bool = True, wait_s: float = 120,
            **form) -> httpx.Response:
    return httpx.post(f"{url}/v1/documents", params={"wait": wait, "timeout": wait_s}, headers=headers,
                      files={"file": (name, text.encode("utf-8"), "text/plain")}, data=form, timeout=180)


def _search(url: str, query: str, headers=None, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": query, **body}, headers=headers, timeout=120)


def test_document_lifecycle_over_http(server):
    url = server.url
    first = _upload(url, "휴가규정.txt", V1, source="hr/leave", metadata=json.dumps({"team": "hr", "year": 2024}))
    assert first.status_code == 200, first.text
    [doc] = first.json()["documents"]
    assert doc["status"] == "indexed" and doc["chunks"] >= 1 and doc["source"] == "hr/leave" and doc["error"] is None
    doc_id = doc["doc_id"]

    found = _search(url, "연차휴가는 며칠인가요?", k=3, explain=True,
                    filter={"and": [{"key": "year", "op": "gte", "value": 2020}, {"team": "hr"}]}).json()
    assert found["results"][0]["metadata"]["doc_id"] == doc_id and "15일" in found["results"][0]["text"]
    assert found["took_ms"] >= 0 and found["notice"] is None
    assert "연차" in found["explain"]["terms"] and found["results"][0]["ranks"]["sparse"] == 1
    assert _search(url, "연차휴가", filter={"key": "year", "op": "lt", "value": 2020}).json()["results"] == []

    again = _upload(url, "휴가규정.txt", V1, source="hr/leave", metadata=json.dumps({"team": "hr", "year": 2024}))
    assert again.status_code == 200 and again.json()["documents"][0]["status"] == "unchanged"

    queued = _upload(url, "휴가규정.txt", V2, source="hr/leave", wait=False,
                     metadata=json.dumps({"team": "hr", "year": 2024}))
    assert queued.status_code == 202 and queued.json()["documents"][0]["status"] == "queued"
    replaced = _upload(url, "휴가규정.txt", V2, source="hr/leave", metadata=json.dumps({"team": "hr", "year": 2024}))
    assert replaced.status_code == 200 and replaced.json()["documents"][0]["status"] in ("indexed", "unchanged")

    status = httpx.get(f"{url}/v1/documents/{doc_id}").json()
    assert status["status"] == "indexed" and status["version"] == 2 and status["stage"] is None
    chunks = httpx.get(f"{url}/v1/documents/{doc_id}/chunks", params={"limit": 1}).json()
    assert "출장비" in chunks["chunks"][0]["text"] and chunks["chunks"][0]["metadata"]["chunk_index"] == 0
    texts = " ".join(r["text"] for r in _search(url, "연차휴가 출장비", k=10, filter={"source": "hr/leave"}).json()["results"])
    assert "출장비" in texts and "연차휴가" not in texts  # the new version only, never a mix

    listing = httpx.get(f"{url}/v1/documents", params={"source_prefix": "hr/", "status": "indexed"}).json()
    assert [d["doc_id"] for d in listing["documents"]] == [doc_id] and listing["next_cursor"] is None

    deleted = httpx.delete(f"{url}/v1/documents/{doc_id}")
    assert deleted.status_code == 200 and deleted.json() == {"doc_id": doc_id, "deleted_chunks": chunks_total(chunks)}
    _problem(httpx.get(f"{url}/v1/documents/{doc_id}"), 404)
    _problem(httpx.delete(f"{url}/v1/documents/{doc_id}"), 404)
    assert _search(url, "출장비", filter={"source": "hr/leave"}).json()["results"] == []


def chunks_total(page: dict) -> int:
    return page["chunks"][0]["metadata"]["chunk_count"]


def test_errors_are_problem_json(server):
    url = server.url
    _problem(httpx.get(f"{url}/v1/nothing"), 404)
    _problem(httpx.put(f"{url}/v1/search"), 405)
    errors = _problem(_search(url, "x", k=0), 422)["errors"]
    assert errors[0]["loc"] == ["body", "k"]
    _problem(_search(url, "가" * 2001), 422)
    assert _search(url, "가" * 2000).status_code == 200
    assert "'like'" in _problem(_search(url, "x", filter={"key": "a", "op": "like", "value": 1}), 422)["detail"]
    assert "year.x" in _problem(_search(url, "x", filter={"year.x": 1}), 422)["detail"]
    _problem(httpx.post(f"{url}/v1/documents", content=b"{}", headers={"content-type": "application/json"}), 415)
    _problem(_upload(url, "a.txt", V1, metadata="{not json"), 422)
    assert "source" in _problem(_upload(url, "a.txt", V1, metadata=json.dumps({"source": "fake"})), 422)["detail"]
    _problem(httpx.get(f"{url}/v1/documents", params={"cursor": "garbage!"}), 400)

    # A bad document is not an HTTP error: it is failed with its reason.
    bad = _upload(url, "scan.pdf", "this is not a PDF at all")
    assert bad.status_code == 200 and bad.json()["documents"][0]["status"] == "failed"
    assert bad.json()["documents"][0]["error"]

    # Over the size limit while reading, and before reading when Content-Length says so.
    assert "KORAG_MAX_FILE_BYTES" in _problem(_upload(url, "big.txt", "가" * LIMIT), 413)["detail"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"POST /v1/documents HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 99999999999\r\n\r\n")
        head = raw.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413") and PROBLEM in head
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}  # still serving


# JSON that Python reads but no store can hold; 1e30 is within a float but not the 64-bit range
# korag keeps numbers to (JSON does not tell it from an integer). Each was a 500 or a silent float.
@pytest.mark.parametrize("metadata, key", [
    ('{"score": NaN}', "score"), ('{"score": Infinity}', "score"), ('{"score": -Infinity}', "score"),
    ('{"score": 1e400}', "score"), ('{"big": 123456789012345678901234567890}', "big"), ('{"big": 1e30}', "big"),
    ('{"team": "\\ud800"}', "team"), ('{"\\udcff": "x"}', "\\udcff"), ('{"tags": ["a"]}', "tags"),
])
def test_metadata_korag_cannot_store_is_422_naming_the_key(server, metadata, key):
    source = "meta/" + secrets.token_hex(4)
    refused = _upload(server.url, "a.txt", V1, source=source, metadata=metadata)
    body = _problem(refused, 422)
    assert body["title"] == "Invalid metadata" and f"metadata '{key}'" in body["detail"], body
    listed = httpx.get(f"{server.url}/v1/documents", params={"source_prefix": source}).json()
    assert listed["documents"] == []  # nothing registered, nothing queued


def test_bad_search_values_are_422_and_a_whole_float_k_is_an_integer(server):
    url = server.url
    for flt, says in (({"team": "\ud800"}, "lone surrogate"), ({"\ud800": "x"}, "lone surrogate"),
                      ({"key": "team", "op": "in", "value": ["a", "\udfff"]}, "lone surrogate"),
                      ({"key": "n", "op": "eq", "value": 2**64}, "64-bit")):
        raw = json.dumps({"query": "연차휴가", "filter": flt})  # json.dumps escapes the surrogates
        refused = httpx.post(f"{url}/v1/search", content=raw, headers={"content-type": "application/json"}, timeout=60)
        assert says in _problem(refused, 422)["detail"], flt  # was 500 (TypeError in the store)
    assert _search(url, "연차휴가", k=3.0).status_code == 200  # 3.0 is an integer in JSON, as Dify's top_k
    assert _problem(_search(url, "연차휴가", k=3.5), 422)["errors"][0]["loc"] == ["body", "k"]
    assert _problem(_search(url, "연차휴가", k="3"), 422)["errors"][0]["loc"] == ["body", "k"]


def test_cli_refuses_meta_korag_cannot_store_naming_the_key(tmp_path, monkeypatch, capsys):
    """`korag ingest --meta` takes its values from argv, where a name that is not UTF-8 arrives as
    lone surrogates: exit 2 naming the key, before the store or the model is touched."""
    from bench import documents as docs
    from tests.test_cli_hardening import local_env, run

    docs.make_markdown(tmp_path / "a.md")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(monkeypatch, capsys, ["ingest", "a.md", "--meta", "team=\udcff"], **local_env(tmp_path))
    assert code == 2 and out == "" and "metadata 'team'" in err and "lone surrogate" in err
    assert not (tmp_path / "data").exists()


def test_langchain_retriever_dify_and_metrics_over_http(server):
    from retrieval.langchain_http import KoragHttpError, KoragHttpRetriever

    url = server.url
    assert _upload(url, "출장규정.txt", V2, source="travel").json()["documents"][0]["status"] == "indexed"
    docs = KoragHttpRetriever(url=url, k=2).invoke("출장 숙박비", filter={"source": "travel"})
    assert docs and "숙박비" in docs[0].page_content
    assert docs[0].metadata["source"] == "travel" and isinstance(docs[0].metadata["score"], float)
    with pytest.raises(KoragHttpError) as bad:
        KoragHttpRetriever(url=url).invoke("x", filter={"key": "a", "op": "like", "value": 1})
    assert bad.value.status == 422 and "like" in bad.value.detail

    ask = {"knowledge_id": "korag", "query": "출장 숙박비", "retrieval_setting": {"top_k": 2, "score_threshold": 0},
           "metadata_condition": {"logical_operator": "and",
                                  "conditions": [{"name": ["source"], "comparison_operator": "is", "value": "travel"}]}}
    records = httpx.post(f"{url}/v1/retrieval", json=ask, timeout=60).json()["records"]
    assert records[0]["title"] == "출장규정.txt" and "숙박비" in records[0]["content"]
    unknown = httpx.post(f"{url}/v1/retrieval", json={**ask, "knowledge_id": "nope"}, timeout=60)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 2001

    metrics = httpx.get(f"{url}/metrics").text
    assert 'route="/v1/search"' in metrics and 'route="/v1/documents"' in metrics
    assert "korag_search_duration_seconds_bucket" in metrics and 'outcome="indexed"' in metrics


def test_keys_decide_the_tenant(tmp_path):
    acme, beta, admin = "acme-key-0123456789", "beta-key-0123456789", "admin-key-0123456789"
    with serve(tmp_path / "keys", {"KORAG_API_KEYS": f"{acme}=acme,{beta}=beta,{admin}=*"}) as server:
        url, auth = server.url, server.auth
        assert httpx.get(f"{url}/healthz").status_code == 200
        missing = httpx.get(f"{url}/v1/info")
        _problem(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        _problem(httpx.get(f"{url}/v1/info", headers=auth("wrong-key-0123456789")), 401)
        _problem(_upload(url, "a.txt", V1), 401)
        assert httpx.get(f"{url}/v1/info", headers=auth(acme)).json()["tenant"] == "acme"

        doc = _upload(url, "leave.txt", V1, headers=auth(acme)).json()["documents"][0]
        assert doc["status"] == "indexed"
        # The tenant comes from the key: a header naming another one is refused for a tenant key.
        _problem(httpx.get(f"{url}/v1/documents", headers=auth(acme, "beta")), 400)
        _problem(httpx.get(f"{url}/v1/documents/{doc['doc_id']}", headers=auth(beta)), 404)
        _problem(httpx.delete(f"{url}/v1/documents/{doc['doc_id']}", headers=auth(beta)), 404)
        _problem(httpx.get(f"{url}/v1/documents/{doc['doc_id']}/chunks", headers=auth(beta)), 404)
        assert httpx.get(f"{url}/v1/documents", headers=auth(beta)).json()["documents"] == []
        assert _search(url, "연차휴가", headers=auth(beta)).json()["results"] == []
        assert _search(url, "연차휴가", headers=auth(acme)).json()["results"]
        for tenant, expected in ((None, 1), ("acme", 1), ("beta", 0)):
            found = _search(url, "연차휴가", headers=auth(admin, tenant)).json()["results"]
            assert len({r["metadata"]["doc_id"] for r in found}) == expected, tenant
        assert httpx.get(f"{url}/v1/documents/{doc['doc_id']}", headers=auth(admin)).json()["tenant"] == "acme"

        ask = {"knowledge_id": "korag", "query": "연차휴가", "retrieval_setting": {"top_k": 3, "score_threshold": 0}}
        # Dify's statuses (issue 18, item 9): 403 for a malformed header or a wrong key, which its
        # setup check catches; 401 only for a request with no Authorization at all.
        for headers, status, code in (({}, 401, 1001), (auth("wrong-key-0123456789"), 403, 1002),
                                      ({"Authorization": "Token x"}, 403, 1001)):
            refused = httpx.post(f"{url}/v1/retrieval", json=ask, headers=headers, timeout=60)
            assert (refused.status_code, refused.json()["error_code"]) == (status, code), refused.text
        assert httpx.post(f"{url}/v1/retrieval", json=ask, headers=auth(beta), timeout=60).json()["records"] == []
        assert httpx.post(f"{url}/v1/retrieval", json=ask, headers=auth(acme), timeout=60).json()["records"]


def test_a_restart_finishes_what_a_killed_service_left(tmp_path):
    """SIGKILL right after the uploads were accepted (queued, some mid-parse); the next start
    on the same data directory ingests them from the blob store: every one ends indexed."""
    import os
    import signal
    import time

    from tests.api_server import ApiServer

    workdir = tmp_path / "restart"
    files = [("file", (f"공지-{i}.txt", f"공지 {i}번: 제{i}조 시행일은 {i}월 1일이다.\n\n".encode() * (5 + i)))
             for i in range(6)]
    first = ApiServer(workdir).start()
    try:
        accepted = httpx.post(f"{first.url}/v1/documents", files=files, timeout=60)
        os.killpg(first.proc.pid, signal.SIGKILL)  # no shutdown at all
    finally:
        first.stop()
    assert accepted.status_code == 202, accepted.text
    ids = [d["doc_id"] for d in accepted.json()["documents"]]
    with serve(workdir) as again:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = [httpx.get(f"{again.url}/v1/documents/{i}").json()["status"] for i in ids]
            if all(s in ("indexed", "failed") for s in states):
                break
            time.sleep(0.5)
        assert states == ["indexed"] * len(ids), states
        assert "a previous run left unfinished" in again.log.read_text()  # not finished before the kill
        for doc_id in ids:  # one version's chunks, none left over from the killed run
            page = httpx.get(f"{again.url}/v1/documents/{doc_id}/chunks").json()["chunks"]
            found = _search(again.url, "공지 시행일", k=100, filter={"doc_id": doc_id}).json()["results"]
            assert len(found) == len(page) == page[0]["metadata"]["chunk_count"]


def test_no_keys_refuses_a_public_address(tmp_path):
    result = subprocess.run([sys.executable, "-m", "korag.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                            env=korag_env({"KORAG_DATA_DIR": str(tmp_path / "data")}), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "korag keys add" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_distributed_mode_queues_uploads_for_the_workers(tmp_path, redis_server):
    """Distributed mode with a real Redis and no worker: an upload is stored as a blob, recorded
    queued and sent to the queue. No Qdrant server can run here, so the service's store is
    qdrant-client's in-memory engine (the workers could not see it; none is started)."""
    import base64

    import redis

    env = {"KORAG_BROKER_URL": redis_server.url, "KORAG_QDRANT_URL": ":memory:"}
    with serve(tmp_path / "distributed", env) as server:
        url = server.url
        assert httpx.get(f"{url}/readyz").json()["checks"]["broker"] == "ok"
        assert httpx.get(f"{url}/v1/info").json()["mode"] == "distributed"
        sent = _upload(url, "leave.txt", V1, wait=True, wait_s=1.5, source="hr/leave")  # nobody ingests it: still queued
        assert sent.status_code == 202
        doc = sent.json()["documents"][0]
        assert doc["status"] == "queued"
        status = httpx.get(f"{url}/v1/documents/{doc['doc_id']}").json()
        assert status["status"] == "queued" and status["stage"] == "queued" and status["blob"]
        assert (server.data_dir / "blobs" / status["blob"][:2] / status["blob"]).read_bytes() == V1.encode()

        client = redis.Redis.from_url(redis_server.url)
        messages = [json.loads(m) for key in client.keys() if client.type(key) == b"list"
                    for m in client.lrange(key, 0, -1)]
        kwargs = [json.loads(base64.b64decode(m["body"]))[1] for m in messages]
        assert [(k["doc_id"], k["source"], k["blob"]) for k in kwargs] == [(doc["doc_id"], "hr/leave", status["blob"])]
