"""HTTP methods and Dify's client over real HTTP (a real `korag serve` with keys,
tests/api_server.py): each route answers its own methods, HEAD works on every GET route, a 405
names exactly the methods the path takes, the console keeps its files; Dify's statuses and error
bodies (issue 18, items 8 and 9).
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.api_server import ApiServer, serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEY = "methods_" + secrets.token_urlsafe(24)
ADMIN = "admin_" + secrets.token_urlsafe(24)
PROBLEM = "application/problem+json"
ASK = {"knowledge_id": "korag", "query": "연차휴가는 며칠인가요?", "retrieval_setting": {"top_k": 3, "score_threshold": 0}}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("methods"), {"KORAG_API_KEYS": f"{KEY}=acme,{ADMIN}=*"}) as server:
        with httpx.Client(base_url=server.url, headers=server.auth(KEY), timeout=180) as http:
            seeded = http.post("/v1/documents", params={"wait": "true", "timeout": "120"},
                               files=[("file", ("휴가.txt", "제2조 (연차휴가) 근로자는 1년에 15일의 연차휴가를 받는다.".encode()))])
            assert seeded.status_code == 200 and seeded.json()["documents"][0]["status"] == "indexed", seeded.text
        yield server


@pytest.fixture(scope="module")
def http(service: ApiServer):
    with httpx.Client(base_url=service.url, headers=service.auth(KEY), timeout=120) as client:
        yield client


@pytest.mark.parametrize("path, key", [
    ("/healthz", None), ("/readyz", None), ("/v1/info", KEY), ("/v1/documents", KEY), ("/metrics", ADMIN),
    ("/", None), ("/console.js", None),
])
def test_head_answers_every_get_route_with_its_headers_and_no_body(service, path, key):
    get = httpx.get(service.url + path, headers=service.auth(key), timeout=60)
    head = httpx.head(service.url + path, headers=service.auth(key), timeout=60)
    assert get.status_code == 200, get.text
    assert head.status_code == 200 and head.content == b"", (path, head.status_code)
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) == len(get.content) or path == "/metrics"  # counters move


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/healthz", "GET, HEAD"),
    ("DELETE", "/readyz", "GET, HEAD"),
    ("GET", "/v1/search", "POST"),          # the README's promise: 405, not 404
    ("PUT", "/v1/search", "POST"),
    ("GET", "/v1/retrieval", "POST"),
    ("PUT", "/v1/documents", "GET, HEAD, POST"),
    ("PATCH", "/v1/documents/0123", "DELETE, GET, HEAD"),
    ("OPTIONS", "/v1/documents/0123/chunks", "GET, HEAD"),
    ("POST", "/v1/info", "GET, HEAD"),
    ("QUERY", "/metrics", "GET, HEAD"),
    ("POST", "/index.html", "GET, HEAD"),   # a console file: the static files' own methods
])
def test_405_names_exactly_the_methods_of_the_path(http, method, path, allow):
    response = http.request(method, path)
    assert response.status_code == 405, (method, path, response.status_code, response.text)
    assert response.headers["allow"] == allow
    assert response.headers["content-type"].startswith(PROBLEM) and response.json()["status"] == 405


def test_unknown_paths_are_404_and_the_console_still_serves_its_files(http):
    for path in ("/nope", "/v1/nothing", "/v1/documents/x/nope"):
        missing = http.get(path)
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM), path
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "<html" in page.text
    assert http.get("/index.html").text == page.text
    assert http.get("/console.css").status_code == 200


def test_dify_endpoint_with_a_trailing_slash_is_served(service, http):
    """Dify appends "/retrieval" to the endpoint as typed: "http://host/v1/" calls /v1//retrieval."""
    plain = http.post("/v1/retrieval", json=ASK)
    slashed = http.post("/v1//retrieval", json=ASK)
    assert plain.status_code == slashed.status_code == 200, slashed.text
    assert [r["content"] for r in slashed.json()["records"]] == [r["content"] for r in plain.json()["records"]]
    assert "15일" in slashed.json()["records"][0]["content"]


@pytest.mark.parametrize("path", ["/v1/retrieval", "/v1//retrieval"])
def test_dify_refuses_a_bad_key_with_403_as_its_setup_check_expects(service, path):
    """Dify's check of a new External Knowledge API posts with the key and rejects only 403, 404
    and 502: a wrong key must be 403 there, or it registers and every retrieval returns nothing."""
    url = service.url + path
    for headers, status, code in ((service.auth("wrong_" + secrets.token_urlsafe(24)), 403, 1002),
                                  ({"Authorization": "Basic abc"}, 403, 1001),
                                  ({"Authorization": "Bearer"}, 403, 1001),
                                  ({}, 401, 1001)):
        for body in (None, ASK):  # Dify's check sends no body at all
            refused = httpx.post(url, headers=headers, json=body, timeout=60)
            assert refused.status_code == status, (headers, body, refused.status_code, refused.text)
            assert refused.json()["error_code"] == code and set(refused.json()) == {"error_code", "error_msg"}
            assert refused.headers["content-type"] == "application/json"
            assert ("www-authenticate" in refused.headers) == (status == 401)
    accepted = httpx.post(url, headers=service.auth(KEY), timeout=60)  # a good key and no body: not refused
    assert accepted.status_code not in (403, 404, 502)


@pytest.mark.parametrize("body, status, says", [
    (None, 422, "body: Field required"),
    ({**ASK, "retrieval_setting": {"top_k": 0, "score_threshold": 0}}, 422, "top_k"),
    ({"knowledge_id": "korag", "query": "q"}, 422, "retrieval_setting"),
    ({**ASK, "query": "가" * 2001}, 422, "query"),
    (b"{not json", 422, "JSON"),
    (b"\x1f\xff\xfe{", 400, "invalid request"),  # not even UTF-8: FastAPI cannot parse it
])
def test_dify_validation_errors_are_difys_error_body(http, body, status, says):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    refused = http.post("/v1/retrieval", **kwargs)
    assert refused.status_code == status, refused.text
    assert refused.headers["content-type"] == "application/json"
    assert set(refused.json()) == {"error_code", "error_msg"} and refused.json()["error_code"] == 3001
    assert says in refused.json()["error_msg"]


@pytest.mark.parametrize("operator, value", [
    ("before", "inf"), ("after", "nan"), ("before", 1e20), ("after", "1e20"), ("before", "-Infinity"),
    ("=", "nan"), (">", "Infinity"), ("≤", "1e400"),
])
def test_dify_conditions_without_a_finite_number_or_a_readable_time_are_3001(http, operator, value):
    condition = {"conditions": [{"name": "date", "comparison_operator": operator, "value": value}]}
    refused = http.post("/v1/retrieval", json={**ASK, "metadata_condition": condition})
    assert refused.status_code == 422, refused.text  # was 500
    assert refused.json()["error_code"] == 3001 and "conditions[0]" in refused.json()["error_msg"]
