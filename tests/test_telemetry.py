"""korag.services.telemetry: the Prometheus exposition a scraper reads, fed by a real pipeline run with
the offline model, searches, HTTP requests and a queue-depth callback."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import documents as docs
from ingest.pipeline import Pipeline
from korag.services.telemetry import STAGES, Metrics
from korag.storage.store import QdrantStore, open_client
from tests.conftest import make_settings


def _samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_a_pipeline_run_shows_documents_stages_chunks_and_tokens(tmp_path, minilm):
    settings = make_settings(tmp_path)
    client = open_client(settings)
    metrics = Metrics()
    steps: list[str] = []
    try:
        pipeline = Pipeline.build(metrics.embedder(minilm), QdrantStore(client, settings.collection), settings)
        pipeline.on_step = metrics.step_hook(then=steps.append)
        path = docs.make_text(tmp_path / "공지.txt", text=docs.long_korean_text(6))
        result = pipeline.ingest_path(path, source="공지.txt")
        metrics.record_result(result)
        again = pipeline.ingest_path(path, source="공지.txt")
        metrics.record_result(again)
    finally:
        client.close()
    assert result.status == "indexed" and result.chunks >= 1 and again.status == "unchanged"
    assert steps[:2] == ["parsing", "embedding"]  # the chained hook still runs
    got = _samples(metrics)
    assert got[("korag_documents_total", (("outcome", "indexed"),))] == 1
    assert got[("korag_documents_total", (("outcome", "unchanged"),))] == 1
    assert got[("korag_chunks_embedded_total", ())] == result.chunks  # the unchanged run embedded nothing
    assert got[("korag_tokens_embedded_total", ())] >= result.chunks * 10
    for stage in ("parse", "embed", "record", "cleanup"):
        assert got[("korag_stage_duration_seconds_count", (("stage", stage),))] == 1, stage
        assert got[("korag_stage_duration_seconds_sum", (("stage", stage),))] > 0


def test_a_batch_times_the_model_call_its_record_and_each_documents_cleanup(tmp_path, minilm):
    from ingest.batch import BatchIngest

    settings = make_settings(tmp_path, parse_isolated=False)
    client = open_client(settings)
    metrics = Metrics()
    try:
        pipeline = Pipeline.build(metrics.embedder(minilm), QdrantStore(client, settings.collection), settings)
        pipeline.on_step = metrics.step_hook()
        paths = [(docs.make_text(tmp_path / f"{n}.txt", text=docs.long_korean_text(3 + n)), f"{n}.txt")
                 for n in range(2)]
        results = list(BatchIngest(pipeline, workers=1).run(paths))
    finally:
        client.close()
    assert [r.status for r in results] == ["indexed", "indexed"]
    got = _samples(metrics)
    assert got[("korag_stage_duration_seconds_count", (("stage", "embed"),))] == 1  # one model call for both
    # both documents' versions are recorded by one registry write (finish_many): one record stage
    assert got[("korag_stage_duration_seconds_count", (("stage", "record"),))] == 1
    assert got[("korag_stage_duration_seconds_count", (("stage", "cleanup"),))] == 2
    assert ("korag_stage_duration_seconds_count", (("stage", "parse"),)) not in got  # parsed in a batch: not timed
    assert got[("korag_chunks_embedded_total", ())] == sum(r.chunks for r in results)


def test_search_and_http_are_counted_by_mode_route_and_code():
    metrics = Metrics()
    with metrics.search_timer("hybrid"):
        pass
    metrics.observe_search("dense", 0.2)
    metrics.observe_http("POST", "/v1/search", 200, 0.03)
    metrics.observe_http("GET", "/v1/documents/{doc_id}", 404, 0.001)
    metrics.observe_http("GET", "/v1/documents/{doc_id}", 404, 0.002)
    metrics.observe_http("GET", None, 404, 0.001)
    got = _samples(metrics)
    assert got[("korag_search_duration_seconds_count", (("mode", "hybrid"),))] == 1
    assert got[("korag_search_duration_seconds_bucket", (("le", "0.25"), ("mode", "dense")))] == 1
    assert got[("korag_search_duration_seconds_bucket", (("le", "0.1"), ("mode", "dense")))] == 0
    assert got[("korag_http_requests_total", (("code", "404"), ("method", "GET"),
                                              ("route", "/v1/documents/{doc_id}")))] == 2
    assert got[("korag_http_requests_total", (("code", "200"), ("method", "POST"), ("route", "/v1/search")))] == 1
    assert got[("korag_http_requests_total", (("code", "404"), ("method", "GET"), ("route", "unmatched")))] == 1
    assert got[("korag_http_request_duration_seconds_count", (("method", "GET"),
                                                              ("route", "/v1/documents/{doc_id}")))] == 2


def test_queue_depth_is_read_at_each_scrape_and_a_failing_callback_is_nan():
    depth = [3]
    metrics = Metrics(queue_depth=lambda: depth[0])
    assert _samples(metrics)[("korag_queue_depth", ())] == 3
    depth[0] = 7
    assert _samples(metrics)[("korag_queue_depth", ())] == 7

    def broken() -> int:
        raise ConnectionError("broker down")

    metrics.set_queue_depth(broken)
    assert math.isnan(_samples(metrics)[("korag_queue_depth", ())])
    metrics.set_queue_depth(None)
    assert _samples(metrics)[("korag_queue_depth", ())] == 0
    assert _samples(Metrics())[("korag_queue_depth", ())] == 0


def test_two_metrics_objects_are_independent():
    a, b = Metrics(), Metrics()  # the global registry would refuse the second one
    a.record_document("failed")
    a.record_document("deleted", 2)
    assert _samples(a)[("korag_documents_total", (("outcome", "deleted"),))] == 2
    assert ("korag_documents_total", (("outcome", "failed"),)) not in _samples(b)


def test_stage_timer_and_step_hook_ignore_out_of_order_steps():
    metrics = Metrics()
    with metrics.stage("queue"):
        pass
    hook = metrics.step_hook()
    for step in ("parsing", "failed", "embedding", "queued", "upserted",  # no state followed by its successor
                 "parsing", "parsing", "embedding", "embedding"):  # two documents parsing at once: not timed
        hook(step)
    got = _samples(metrics)
    assert got[("korag_stage_duration_seconds_count", (("stage", "queue"),))] == 1
    assert not any(name == "korag_stage_duration_seconds_count" and labels != (("stage", "queue"),)
                   for name, labels in got)


def test_stage_labels_are_one_documented_list():
    """Issue 18: the help text named parse/embed/record/cleanup while the service observed queue
    and ingest. Now the help text is made from STAGES and no other label can be observed."""
    metrics = Metrics()
    body, _ = metrics.render()
    [family] = [f for f in text_string_to_metric_families(body.decode()) if f.name == "korag_stage_duration_seconds"]
    for stage in ("queue", "ingest", "parse", "embed", "record", "cleanup"):
        assert stage in STAGES and f"{stage}: " in family.documentation, stage
    with pytest.raises(ValueError, match="'upload' is not one of korag.services.telemetry.STAGES"):
        metrics.observe_stage("upload", 1.0)
    assert ("korag_stage_duration_seconds_count", (("stage", "upload"),)) not in _samples(metrics)
