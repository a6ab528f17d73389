"""Who may call `korag serve`, and what every answer carries (issue 18 items 1, 2, 11, 13): a real
`korag serve` over real HTTP (tests/api_server.py), keys written by `korag keys` into its data
directory, the offline model, httpx, and Debian's chromium for the pages.

- Open mode is decided at start: a service that started with keys never turns open when the
  last key is revoked or keys.json is removed; one started open closes for good when a key is
  added. `korag serve --open` is refused with keys configured or off loopback.
- `X-Korag-Tenant: *` is a 400, not a tenant named `*`.
- `/metrics` needs an admin key when keys are configured; its stage labels are the documented ones.
- `WWW-Authenticate` on every 401, `X-Request-Id` echoed (and logged), CORS when configured,
  the console's CSP / X-Frame-Options / nosniff, and `/docs` `/redoc` with no CDN.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from korag.services.keys import KeyRing
from tests import test_console
from tests.api_server import ApiServer, serve
from tests.conftest import korag_env, make_settings

PROBLEM = "application/problem+json"
ORIGIN = "https://app.example.com"
TEXT = "제1조 (목적) 이 규정은 연차휴가에 관한 사항을 정한다.\n\n제2조 (연차휴가) 근로자는 1년에 15일의 연차휴가를 받는다.\n"
browser = test_console.browser  # the fixture: Debian's chromium through Playwright
ASK = {"knowledge_id": "korag", "query": "연차휴가", "retrieval_setting": {"top_k": 3, "score_threshold": 0}}


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def _upload(url: str, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/documents", params={"wait": "true", "timeout": "120"}, headers=headers,
                      files={"file": (name, TEXT.encode(), "text/plain")}, timeout=180)


def _keys(server: ApiServer) -> KeyRing:
    """The key file of the server's data directory, as `korag keys` writes it."""
    return KeyRing(server.data_dir / "keys.json")


def _korag_keys(server: ApiServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "korag.cli", "keys", *args], env=server.env, cwd=server.workdir,
                          capture_output=True, text=True, timeout=120)


def _wait_for_log(server: ApiServer, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log_tail(200_000))
        if found:
            return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no log line matching {pattern!r}:\n{server.log_tail()}")


# -- open mode is decided at start ----------------------------------------------------------------
@pytest.mark.slow
def test_revoking_the_last_key_does_not_open_a_service_that_started_with_keys(tmp_path):
    key_id, key = KeyRing(tmp_path / "keyed" / "data" / "keys.json").add("acme")  # keys.json only, no KORAG_API_KEYS
    with serve(tmp_path / "keyed") as server:
        url = server.url
        assert _upload(url, "휴가.txt", server.auth(key)).json()["documents"][0]["status"] == "indexed"
        revoked = _korag_keys(server, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr

        for headers in ({}, server.auth(key), server.auth(key, "acme")):
            for response in (httpx.get(f"{url}/v1/documents", headers=headers),
                             httpx.get(f"{url}/v1/info", headers=headers),
                             httpx.get(f"{url}/metrics", headers=headers),
                             httpx.post(f"{url}/v1/search", json={"query": "연차휴가"}, headers=headers, timeout=60)):
                body = _problem(response, 401)
                assert "korag keys add" in body["detail"], body
                assert response.headers["www-authenticate"].startswith("Bearer")
        dify = httpx.post(f"{url}/v1/retrieval", json=ASK, timeout=60)
        assert dify.status_code in (401, 403) and "records" not in dify.json(), dify.text
        _wait_for_log(server, r"WARNING korag\.keys .*the last API key is gone")
        assert "that was the last key" in revoked.stderr, revoked.stderr  # `korag keys revoke` says so too

        (server.data_dir / "keys.json").unlink()  # no key file at all: still keyed
        _problem(httpx.get(f"{url}/v1/documents"), 401)

        _, fresh = _keys(server).add("acme")
        listed = httpx.get(f"{url}/v1/documents", headers=server.auth(fresh))
        assert listed.status_code == 200 and [d["source"] for d in listed.json()["documents"]] == ["휴가.txt"]
        _problem(httpx.get(f"{url}/v1/documents"), 401)


@pytest.mark.slow
def test_an_open_service_closes_for_good_when_a_key_is_added(tmp_path):
    with serve(tmp_path / "open", args=["--open"]) as server:
        url = server.url
        info = httpx.get(f"{url}/v1/info").json()
        assert info["tenant"] is None  # open: every caller is an admin
        assert info["ocr"].startswith(("ready", "unavailable"))  # says whether scanned documents can be read
        star = _problem(httpx.get(f"{url}/v1/documents", headers={"X-Korag-Tenant": "*"}), 400)
        assert "X-Korag-Tenant" in star["detail"] and "admin" in star["detail"]
        _problem(_upload(url, "별.txt", {"X-Korag-Tenant": "*"}), 400)
        assert httpx.get(f"{url}/v1/documents").json()["documents"] == []  # nothing stored under tenant "*"
        assert "access-control-allow-origin" not in httpx.get(f"{url}/healthz", headers={"Origin": ORIGIN}).headers
        assert httpx.get(f"{url}/metrics").status_code == 200  # open: unchanged

        key_id, key = _keys(server).add("acme")
        _problem(httpx.get(f"{url}/v1/info"), 401)
        assert httpx.get(f"{url}/v1/info", headers=server.auth(key)).json()["tenant"] == "acme"
        assert _keys(server).revoke(key_id)
        detail = _problem(httpx.get(f"{url}/v1/info"), 401)["detail"]
        assert "korag keys add" in detail
    assert "korag serve --open" not in server.log.read_text()  # --open given: no hint to give it


def test_serve_open_is_refused_with_keys_or_off_loopback(tmp_path):
    """These refusals come before the model is loaded: each run takes a second or two."""
    base = {"KORAG_DATA_DIR": str(tmp_path / "data"), "KORAG_EMBEDDING_MODEL": str(tmp_path / "no-model")}
    runs = [({"KORAG_API_KEYS": "0123456789abcdef=acme"}, ["--open"], "keys are configured"),
            ({}, ["--open", "--host", "0.0.0.0"], "loopback address only"),
            ({}, ["--host", "0.0.0.0"], "no API key is configured")]
    for env, args, reason in runs:
        done = subprocess.run([sys.executable, "-m", "korag.cli", "serve", *args], env=korag_env({**base, **env}),
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and reason in done.stderr, (args, done.stderr)


# -- one keyed service for the rest ---------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("access")
    ring = KeyRing(workdir / "data" / "keys.json")
    tenant_key, admin_key = ring.add("acme")[1], ring.add("*")[1]
    with serve(workdir, {"KORAG_CORS_ORIGINS": f"{ORIGIN}, http://localhost:5173"}) as server:
        server.tenant_key, server.admin_key = tenant_key, admin_key
        yield server


@pytest.mark.slow
def test_metrics_need_an_admin_key_and_show_only_documented_stages(keyed):
    url = keyed.url
    assert _upload(url, "metrics.txt", keyed.auth(keyed.tenant_key)).json()["documents"][0]["status"] == "indexed"
    _problem(httpx.get(f"{url}/metrics"), 401)
    refused = _problem(httpx.get(f"{url}/metrics", headers=keyed.auth(keyed.tenant_key)), 403)
    assert "admin key" in refused["detail"]
    scraped = httpx.get(f"{url}/metrics", headers=keyed.auth(keyed.admin_key))
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")

    from korag.services.telemetry import STAGES

    [family] = [f for f in text_string_to_metric_families(scraped.text) if f.name == "korag_stage_duration_seconds"]
    observed = {s.labels["stage"] for s in family.samples}
    assert observed and observed <= set(STAGES), observed
    for stage in observed | set(STAGES):  # every label a scrape can show is explained in its help text
        assert f"{stage}: " in family.documentation, (stage, family.documentation)


@pytest.mark.slow
def test_an_admin_key_naming_tenant_star_is_a_400(keyed):
    url, admin = keyed.url, keyed.admin_key
    body = _problem(httpx.get(f"{url}/v1/documents", headers=keyed.auth(admin, "*")), 400)
    assert "X-Korag-Tenant" in body["detail"]
    _problem(_upload(url, "star.txt", keyed.auth(admin, "*")), 400)
    listed = httpx.get(f"{url}/v1/documents", headers=keyed.auth(admin)).json()["documents"]
    assert all(d["tenant"] != "*" for d in listed) and "star.txt" not in {d["source"] for d in listed}


@pytest.mark.slow
def test_every_401_carries_a_bearer_challenge(keyed):
    """Whichever route or error path answers 401 (Dify's route answered 401 without one)."""
    url = keyed.url
    challenged = 0
    for headers in ({}, {"Authorization": "Bearer korag_unknown0123456789"}, {"Authorization": "Basic YTpi"},
                    {"Authorization": "Bearer"}):
        for response in (httpx.get(f"{url}/v1/info", headers=headers),
                         httpx.get(f"{url}/v1/documents/{'0' * 32}", headers=headers),
                         httpx.post(f"{url}/v1/search", json={"query": "x"}, headers=headers),
                         httpx.post(f"{url}/v1/search", content=b"{not json", headers=headers),
                         httpx.post(f"{url}/v1/retrieval", json=ASK, headers=headers, timeout=60)):
            if response.status_code == 401:
                assert response.headers.get("www-authenticate", "").startswith("Bearer"), (headers, response.text)
                challenged += 1
    assert challenged >= 12


@pytest.mark.slow
def test_request_ids_are_echoed_on_every_answer_and_logged(keyed):
    url, auth = keyed.url, keyed.auth(keyed.tenant_key)
    mine = "client-7f3a.9:b"
    answers = {
        200: httpx.get(f"{url}/v1/info", headers={**auth, "X-Request-Id": mine}),
        401: httpx.get(f"{url}/v1/info", headers={"X-Request-Id": mine}),
        404: httpx.get(f"{url}/v1/documents/{'0' * 32}", headers={**auth, "X-Request-Id": mine}),
        422: httpx.post(f"{url}/v1/search", json={"k": 3}, headers={**auth, "X-Request-Id": mine}),
    }
    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == mine, status
        assert response.headers["x-content-type-options"] == "nosniff"
    generated = {httpx.get(f"{url}/healthz").headers["x-request-id"] for _ in range(2)}
    assert len(generated) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated)
    for bad in ("x" * 129, "has space", "semi;colon", ""):
        echoed = httpx.get(f"{url}/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed), bad

    traced = "trace-" + "abc123"
    httpx.get(f"{url}/v1/documents/{'1' * 32}", headers={**auth, "X-Request-Id": traced})
    line = _wait_for_log(keyed, r'.*GET /v1/documents/1{32} HTTP/1\.1" 404.*')
    assert traced in line


@pytest.mark.slow
def test_cors_answers_preflights_only_for_configured_origins(keyed):
    url = keyed.url
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, x-korag-tenant"}
    allowed = httpx.options(f"{url}/v1/search", headers=preflight)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert allowed.headers["x-request-id"]

    other = httpx.options(f"{url}/v1/search", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers

    simple = httpx.get(f"{url}/v1/info", headers={**keyed.auth(keyed.tenant_key), "Origin": ORIGIN})
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    refused = httpx.get(f"{url}/v1/info", headers={"Origin": ORIGIN})  # a browser must be able to read the 401
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.slow
def test_the_console_sends_its_security_headers(keyed):
    page = httpx.get(f"{keyed.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split(";") if d.strip()}
    assert csp["frame-ancestors"] == ["'none'"] and csp["script-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "an inline script would be blocked by the CSP"
    script = httpx.get(f"{keyed.url}/console.js")
    assert script.status_code == 200 and script.headers["x-content-type-options"] == "nosniff"


@pytest.mark.slow
def test_docs_pages_load_their_assets_from_the_service(keyed):
    for path in ("/docs", "/redoc"):
        page = httpx.get(keyed.url + path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], path
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), (path, assets)
        for asset in assets:
            got = httpx.get(keyed.url + asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset


def _browser_page(chromium, server: ApiServer):
    """A page that can reach only the service: every other request is aborted and recorded."""
    page = chromium.new_page()
    outside: list[str] = []
    problems: list[str] = []

    def route(r):
        if r.request.url.startswith(server.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return page, outside, problems


@pytest.mark.slow
@pytest.mark.integration
def test_docs_and_console_render_offline_under_their_policies(keyed, browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    page, outside, problems = _browser_page(browser, keyed)
    page.goto(keyed.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("korag")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.goto(keyed.url + "/redoc")
    expect(page.locator("h1").first).to_contain_text("korag")
    expect(page.get_by_text("/v1/search").first).to_be_attached()
    page.goto(keyed.url + "/")
    expect(page.locator("#info")).not_to_have_text("connecting…")  # console.js ran under the CSP
    page.close()
    assert not outside, outside
    # ReDoc's sidebar asks for its maker's logo from a CDN: the policy blocks it (its <img> hides
    # itself), which is the point. Anything else the policy blocked would be a broken page.
    blocked = [p for p in problems if "Content Security Policy" in p
               and not p.startswith("Loading the image 'https://cdn.redoc.ly/")]
    assert not blocked, problems


# -- in-process: a 500 -----------------------------------------------------------------------------
def test_a_500_carries_the_request_id_and_its_log_line_names_it(tmp_path, caplog):
    """An unexpected exception cannot be provoked in a real service on purpose, so one route of a
    real app (create_app, no service behind it) raises; Starlette's TestClient calls it in process."""
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from api.app import create_app
    from api.headers import install_log_context

    install_log_context()
    app = create_app(make_settings(tmp_path), service=SimpleNamespace(metrics=None), open_allowed=True)

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    app.router.routes.insert(0, app.router.routes.pop())  # before the console's catch-all mount

    with caplog.at_level(logging.ERROR, logger="korag.serve"):
        response = TestClient(app, raise_server_exceptions=False).get("/boom", headers={"X-Request-Id": "req-500"})
    assert _problem(response, 500)["detail"].endswith("(request req-500)")
    assert response.headers["x-request-id"] == "req-500" and response.headers["x-content-type-options"] == "nosniff"
    [record] = [r for r in caplog.records if r.name == "korag.serve" and "failed" in r.getMessage()]
    assert record.request_id == "req-500"
