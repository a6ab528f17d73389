"""``/docs`` (Swagger UI) and ``/redoc`` without a CDN: FastAPI's pages load their JavaScript and
CSS from jsdelivr, which a service on an offline or locked-down network cannot reach, so they
stayed blank. The same pages here load the assets that the ``fastapi-offline`` package ships
(Swagger UI 5 and ReDoc 2), served under ``/docs-assets``.

Each page sends its own Content-Security-Policy: Swagger UI starts from one inline script,
allowed by its hash only; ReDoc injects its styles and runs its search in a ``blob:`` worker.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_URL = "/docs-assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _policy(html: bytes) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                      for m in _INLINE_SCRIPT.findall(html.decode()))
    script = f"'self' {hashes}" if hashes else "'self'"
    return (f"default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")


def _page(response: HTMLResponse):
    """A route answering the page with its policy (both computed once: they depend on nothing per request)."""
    body = bytes(response.body)
    headers = {"Content-Security-Policy": _policy(body)}

    def page() -> HTMLResponse:
        return HTMLResponse(body, headers=headers)

    return page


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """The two pages and their assets. Create the app with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    favicon = f"{ASSETS_URL}/favicon.png"
    swagger = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                  swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                  swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=favicon,
                                  swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io
    redoc = get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                           redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=favicon,
                           with_google_fonts=False)
    app.get(docs_url, include_in_schema=False)(_page(swagger))
    app.get(redoc_url, include_in_schema=False)(_page(redoc))
