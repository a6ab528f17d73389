"""The console at `/` in a real browser: Playwright driving Debian's chromium (apt) against a real
`korag serve` with a key. Skipped, with the reason, when playwright or chromium is absent;
under CI (.ci/run installs both) their absence is a failure.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil

import pytest

from bench import documents as docs
from tests.api_server import serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEY = "console_" + secrets.token_urlsafe(24)
TIMEOUT_MS = 120_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run must install it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed; it is a dev dependency")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("console"), {"KORAG_API_KEYS": f"{KEY}=demo"}) as server:
        yield server


def test_console_uploads_watches_status_and_searches_with_explanations(browser, service, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(service.url + "/")
    expect(page).to_have_title(re.compile("korag"))

    # without a key the service says so and the console shows it
    page.fill("#query", "비밀번호")
    page.click("#search-button")
    expect(page.locator("#message")).to_contain_text("401")

    # a key typed in is kept for the tab: it survives a reload, and /v1/info answers with it
    page.fill("#key", KEY)
    page.click("#save-key")
    page.reload()
    expect(page.locator("#key")).to_have_value(KEY)
    assert page.evaluate("sessionStorage.getItem('korag.key')") == KEY
    expect(page.locator("#info")).to_contain_text("dimensions")

    # drop two files on the drop zone (a DataTransfer built in the page, as a drag from the desktop)
    # page 1 is long enough that page 2's section (the secret sentence) is a chunk of its own
    lines = [f"이 규정의 {i}번째 문장은 법원조직법 제{i}조에 따른 시험용 설명입니다." for i in range(30)]
    pdf = docs.make_pdf(tmp_path / "규정.pdf", [["제1장 총칙", *lines], ["제2장 보안", docs.SECRET_SENTENCE]])
    md = docs.make_markdown(tmp_path / "설치.md")
    drop = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) dt.items.add(new File([new Uint8Array(f.bytes)], f.name));
            return dt;
        }""",
        [{"name": p.name, "bytes": list(p.read_bytes())} for p in (pdf, md)],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
    # and a broken one through the file chooser
    page.set_input_files("#files", files=[{"name": "empty.pdf", "mimeType": "application/pdf", "buffer": b""}])

    rows = page.locator("#uploads tbody tr")
    for source, status in (("규정.pdf", "indexed"), ("설치.md", "indexed"), ("empty.pdf", "failed")):
        row = rows.filter(has=page.locator("td.source", has_text=source))
        expect(row).to_have_attribute("data-status", status)
    failed = rows.filter(has=page.locator("td.source", has_text="empty.pdf"))
    expect(failed.locator("td.error")).to_contain_text("empty file")
    indexed = rows.filter(has=page.locator("td.source", has_text="규정.pdf"))
    assert int(indexed.locator("td.chunks").inner_text()) >= 1

    # a search shows the chunk's text, source, page, and the dense/sparse ranks behind its score
    page.fill("#query", "금고의 비밀번호 ZEBRA-QUARTZ-7781")
    page.select_option("#mode", "hybrid")
    page.check("#explain")
    page.click("#search-button")
    first = page.locator("#results li.result").first
    expect(first.locator(".text")).to_contain_text("ZEBRA-QUARTZ-7781")
    expect(first.locator(".source")).to_have_text("규정.pdf")
    expect(first.locator(".page")).to_have_text("p. 2")
    expect(first.locator(".section")).to_contain_text("제2장 보안")
    expect(first.locator(".ranks")).to_contain_text(re.compile(r"dense rank \d+ · sparse rank \d+"))
    expect(page.locator("#search-meta")).to_contain_text(re.compile(r"result\(s\) in \d+(\.\d+)? ms"))
    expect(page.locator("#search-meta .terms code").first).to_be_visible()

    page.fill("#query", "실행 명령")
    page.select_option("#mode", "sparse")
    page.click("#search-button")
    section = page.locator("#results li.result .section").first
    expect(section).to_contain_text("설치 안내")

    # deleting from the console removes the document
    indexed.locator("button.delete").click()
    expect(indexed).to_have_attribute("data-status", "deleted")
    expect(page.locator("#message")).to_contain_text("Deleted")
    assert not errors, errors
    page.close()
