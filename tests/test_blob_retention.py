"""Uploaded bytes live exactly as long as a record refers to them (issue 18, items 3 and 7).

A blob goes when no record of any status refers to its digest any more (a deletion, a new version,
an upload refused after its body was read); bytes two documents share stay while one of them
does; an unterminated multipart body is a 400 that leaves nothing behind; what a killed service
left (temp files, pins, prepared files, blobs of deleted records) is removed at the next start.

The retention rules run over the real registry (qdrant-client's engine) and the real blob
directory; the HTTP cases over a real `korag serve` (tests/api_server.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from korag.services.lifecycle import delete_document, queue_request, release_blob, release_upload, sweep_blobs
from korag.storage.blobs import BlobStore
from korag.storage.registry import DocumentRegistry, this_process
from korag.storage.store import QdrantStore, open_client
from korag.storage.uploads import BlobWriter
from tests.api_server import serve
from tests.conftest import korag_env, make_settings

V1 = "제1조 (목적) 이 규정은 연차휴가에 관한 사항을 정한다.\n\n제2조 (연차휴가) 근로자는 1년에 15일의 연차휴가를 받는다.\n"
V2 = "제1조 (목적) 이 규정은 출장비 정산에 관한 사항을 정한다.\n\n제2조 (숙박비) 출장 숙박비는 1박에 12만원까지 지급한다.\n"
V3 = "제1조 (목적) 이 규정은 재택근무에 관한 사항을 정한다.\n\n제2조 (신청) 재택근무는 전날까지 신청한다.\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stored(blob_dir: Path) -> set[str]:
    """Every file under the blob directory but the lock, as paths relative to it."""
    if not blob_dir.exists():
        return set()
    return {str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def _blobs_of(blob_dir: Path) -> set[str]:
    return {Path(p).name for p in _stored(blob_dir) if len(Path(p).name) == 64}


def _dead_owner() -> str:
    """host:pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


@pytest.fixture
def parts(tmp_path):
    settings = make_settings(tmp_path)
    store = QdrantStore(open_client(settings), settings.collection)
    registry = DocumentRegistry(store.client, store.collection)
    registry.ensure()
    yield store, registry, BlobStore(settings.blobs_path)
    store.client.close()


def _upload(blobs: BlobStore, registry: DocumentRegistry, doc_id: str, text: str) -> str:
    """What korag serve does per uploaded file: written, in place and pinned, record claimed, pin released."""
    writer = BlobWriter(blobs, 10**6, this_process())
    writer.write(text.encode())
    digest = writer.finish()
    writer.place()
    assert queue_request(registry, doc_id, doc_id, f"{doc_id}.txt", digest, None, {}, blobs=blobs) is not None
    release_upload(blobs, registry, digest, writer.pin)
    return digest


# -- the rule, over the real registry ---------------------------------------------------------------
def test_a_deleted_documents_blob_goes_unless_another_document_has_the_same_bytes(parts):
    store, registry, blobs = parts
    shared = _upload(blobs, registry, "a", V1)
    assert _upload(blobs, registry, "b", V1) == shared  # same bytes, two sources: one blob
    own = _upload(blobs, registry, "c", V2)
    assert _blobs_of(blobs.root) == {shared, own}

    delete_document(store, registry, "a", blobs=blobs)
    assert blobs.has(shared)  # b still refers to it
    delete_document(store, registry, "b", blobs=blobs)
    assert not blobs.has(shared)
    delete_document(store, registry, "c", blobs=blobs)
    assert _stored(blobs.root) == set()  # no blob, no pin, no temp file


def test_a_new_version_replaces_the_old_versions_blob(parts):
    _, registry, blobs = parts
    old = _upload(blobs, registry, "a", V1)
    new = _upload(blobs, registry, "a", V2)  # queued newer version: the old bytes are nobody's now
    assert _blobs_of(blobs.root) == {new} and not blobs.has(old)


def test_a_blob_a_queued_request_or_a_failed_record_refers_to_stays(parts):
    _, registry, blobs = parts
    digest = _upload(blobs, registry, "a", V1)
    record = registry.get("a")
    record.status, record.error = "failed", "unsupported"
    registry.write(record)
    assert not release_blob(blobs, registry, digest) and blobs.has(digest)


def test_a_pinned_blob_is_kept_until_its_writer_has_claimed_its_record(parts):
    """The race of an upload with a deletion of the same bytes: the upload's blob is in place and
    pinned, its record not claimed yet, when the other document's deletion releases the digest."""
    store, registry, blobs = parts
    digest = _upload(blobs, registry, "a", V1)
    again = blobs.put(V1.encode(), owner=this_process())  # an upload of the same bytes, record not claimed yet
    [(pin, _)] = list(blobs.pins(again))
    delete_document(store, registry, "a", blobs=blobs)
    assert blobs.has(digest)  # the pin held it
    queue_request(registry, "b", "b", "b.txt", digest, None, {}, blobs=blobs)
    release_upload(blobs, registry, digest, pin)
    assert blobs.has(digest)  # b refers to it now
    delete_document(store, registry, "b", blobs=blobs)
    assert not blobs.has(digest)


def test_a_pin_of_a_dead_process_holds_nothing(parts):
    _, registry, blobs = parts
    digest = blobs.put(V1.encode(), owner=_dead_owner())
    assert release_blob(blobs, registry, digest) and not blobs.has(digest)
    assert _stored(blobs.root) == set()


def test_uploads_racing_deletions_of_the_same_bytes_never_lose_a_blob(parts):
    """Many rounds of: one thread deletes document a (bytes X) while another uploads the same
    bytes as document b. Whatever the interleaving, b's blob must be there afterwards."""
    store, registry, blobs = parts
    for round_ in range(15):
        _upload(blobs, registry, "a", V1)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def deleting():
            start.wait()
            delete_document(store, registry, "a", blobs=blobs)

        def uploading():
            start.wait()
            try:
                _upload(blobs, registry, "b", V1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=deleting), threading.Thread(target=uploading)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert blobs.has(_digest(V1)), f"round {round_}: b's blob was removed by a's deletion"
        delete_document(store, registry, "b", blobs=blobs)
        assert not blobs.has(_digest(V1))


def test_the_start_up_sweep_removes_what_no_record_refers_to(parts):
    _, registry, blobs = parts
    kept = _upload(blobs, registry, "a", V1)
    orphan = blobs.put(V2.encode())  # no record (a deletion by a korag before this one)
    live_pin = blobs.put(V3.encode(), owner=this_process())  # an upload in flight in a live process
    dead = _dead_owner()
    fd, stale_temp = blobs.temp_file(dead)  # an upload a killed service was receiving
    os.close(fd)
    fd, old_temp = blobs.temp_file(None)  # an old-style temp file, untouched for two hours
    os.close(fd)
    os.utime(old_temp, (time.time() - 7200, time.time() - 7200))
    fd, fresh_temp = blobs.temp_file(this_process())  # being written right now
    os.close(fd)
    blobs.prepared.mkdir(parents=True)
    (blobs.prepared / f"{'e' * 32}.json").write_text("{}")  # prepared chunks of a request that owns nothing
    owned = registry.get("a").request
    (blobs.prepared / f"{owned}.json").write_text("{}")  # of the queued request that owns a

    swept = sweep_blobs(blobs, registry)
    assert _blobs_of(blobs.root) == {kept, live_pin}
    assert not blobs.has(orphan)
    assert not stale_temp.exists() and not old_temp.exists() and fresh_temp.exists()
    assert [p.name for p in blobs.prepared.iterdir()] == [f"{owned}.json"]
    assert (swept.blobs, swept.prepared, swept.temp_files) == (1, 1, 2)


def test_deleting_a_queued_document_removes_its_prepared_chunks(parts):
    store, registry, blobs = parts
    _upload(blobs, registry, "a", V1)
    request = registry.get("a").request
    blobs.prepared.mkdir(parents=True)
    prepared = blobs.prepared / f"{request}.json"
    prepared.write_text('{"chunks": [{"text": "제2조 (연차휴가) 근로자는 1년에 15일"}]}')
    delete_document(store, registry, "a", blobs=blobs)
    assert not prepared.exists() and _stored(blobs.root) == set()


@pytest.mark.slow
def test_a_version_queued_through_the_broker_replaces_the_old_blob_and_leaves_no_pin(tmp_path, redis_server):
    """Distributed ``korag ingest`` (korag.services.queue_client.enqueue, a real Redis): the new version's bytes
    stay, the replaced version's go, and the upload's pin is dropped once its record is claimed."""
    from bench import documents as docs
    from ingest.pipeline import DocumentInfo
    from korag.services.queue_client import enqueue
    from workers.app import create_app

    settings = make_settings(tmp_path, broker_url=redis_server.url)
    registry = DocumentRegistry(open_client(settings), settings.collection)
    registry.ensure()
    app, blobs = create_app(settings), BlobStore(settings.blobs_path)
    path = tmp_path / "규정.txt"
    for text in (V1, V2):
        sent = enqueue(app, blobs, registry, docs.make_text(path, text=text), "규정.txt", settings.max_file_bytes,
                       DocumentInfo(tenant="a"))
        assert sent.failure is None and registry.get(sent.doc_id).status == "queued"
    assert _blobs_of(blobs.root) == {_digest(V2)}
    assert list(blobs.pins()) == []


# -- over HTTP ---------------------------------------------------------------------------------------
LIMIT = 20_000


def _post(url: str, files, wait: bool = True, **form) -> httpx.Response:
    return httpx.post(f"{url}/v1/documents", params={"wait": wait, "timeout": 120}, files=files, data=form,
                      timeout=180)


def _text(name: str, text: str):
    return ("file", (name, text.encode(), "text/plain"))


@pytest.mark.slow
def test_uploaded_bytes_are_gone_after_delete_new_version_refusal_and_korag_delete(tmp_path):
    env = {"KORAG_MAX_FILE_BYTES": str(LIMIT), "KORAG_MAX_UPLOAD_BYTES": str(10 * LIMIT)}
    blob_dir = tmp_path / "serve" / "data" / "blobs"
    with serve(tmp_path / "serve", env) as server:
        url = server.url
        a, b, c = (_post(url, [_text("x.txt", text)], source=source).json()["documents"][0]
                   for source, text in (("hr/a", V1), ("hr/b", V1), ("hr/c", V2)))
        assert {a["status"], b["status"], c["status"]} == {"indexed"}
        assert _stored(blob_dir) == {f"{_digest(V1)[:2]}/{_digest(V1)}", f"{_digest(V2)[:2]}/{_digest(V2)}"}

        assert httpx.delete(f"{url}/v1/documents/{a['doc_id']}").status_code == 200
        assert _blobs_of(blob_dir) == {_digest(V1), _digest(V2)}  # hr/b has the same bytes
        assert httpx.delete(f"{url}/v1/documents/{b['doc_id']}").status_code == 200
        assert _blobs_of(blob_dir) == {_digest(V2)}

        assert _post(url, [_text("x.txt", V3)], source="hr/c").json()["documents"][0]["status"] == "indexed"
        assert _stored(blob_dir) == {f"{_digest(V3)[:2]}/{_digest(V3)}"}  # the new version replaced V2's bytes

        # refused after the body was read: nothing of it stays
        refused = [
            _post(url, [_text("new.txt", V1)], metadata="{not json"),  # 422
            _post(url, [_text("new.txt", V1)], extra="field"),  # 422 unknown form field
            _post(url, [_text("small.txt", V2), _text("big.txt", "가" * LIMIT)]),  # 413 at the second file
        ]
        assert [r.status_code for r in refused] == [422, 422, 413], [r.text for r in refused]
        assert _stored(blob_dir) == {f"{_digest(V3)[:2]}/{_digest(V3)}"}
    result = subprocess.run([sys.executable, "-m", "korag.cli", "delete", c["doc_id"]], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path,
                            env=korag_env({"KORAG_DATA_DIR": str(tmp_path / "serve" / "data")}))
    assert result.returncode == 0, result.stderr
    assert _stored(blob_dir) == set()


def _unterminated(boundary: str, text: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\n{text}").encode()


@pytest.mark.slow
def test_an_unterminated_multipart_body_is_a_400_that_leaves_nothing(tmp_path):
    blob_dir = tmp_path / "serve" / "data" / "blobs"
    with serve(tmp_path / "serve") as server:
        headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
        cases = [
            _unterminated("XyZ", V1),  # cut inside the file's data
            _unterminated("XyZ", V1) + b"\r\n--XyZ",  # a boundary, but not the closing one
            _unterminated("XyZ", V1) + b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nx",
        ]
        for body in cases:
            response = httpx.post(f"{server.url}/v1/documents", content=body, headers=headers, timeout=60)
            assert response.status_code == 400, response.text
            problem = response.json()
            assert problem["title"] == "Bad multipart body" and "closing boundary" in problem["detail"]
        assert _stored(blob_dir) == set()
        whole = _unterminated("XyZ", V1) + b"\r\n--XyZ--\r\n"
        accepted = httpx.post(f"{server.url}/v1/documents", params={"wait": True}, content=whole, headers=headers,
                              timeout=120)
        assert accepted.status_code == 200 and accepted.json()["documents"][0]["status"] == "indexed"


@pytest.mark.slow
def test_a_restart_removes_what_a_killed_service_left(tmp_path):
    """A service killed mid-upload leaves its temp file; deleted records' blobs (a korag before
    this one) stay without a record. The next start removes both, and keeps what records refer to."""
    blob_dir = tmp_path / "serve" / "data" / "blobs"
    with serve(tmp_path / "serve") as server:
        kept = _post(server.url, [_text("a.txt", V1)], source="a").json()["documents"][0]
        assert kept["status"] == "indexed"
        boundary = "KiLl"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            head = _unterminated(boundary, "가" * 4000)
            sock.sendall((f"POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Length: {len(head) + 100_000}\r\n"
                          f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode() + head)
            deadline = time.monotonic() + 30
            while not [p for p in _stored(blob_dir) if ".incoming-" in p] and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(server.pid, 9)
        server.proc.wait()
    left = _stored(blob_dir)
    assert any(".incoming-" in p for p in left), left
    orphan = BlobStore(blob_dir).put(V2.encode())
    with serve(tmp_path / "serve"):
        assert _stored(blob_dir) == {f"{_digest(V1)[:2]}/{_digest(V1)}"}
    assert not BlobStore(blob_dir).has(orphan)
