"""The interactive API docs (Swagger UI) at ``/api/docs``, served from this origin.

Only when the operator turns them on (``redfl serve --docs``, or ``docs = true`` in
``platform.toml``); the machine-readable schema is always at ``/api/openapi.json``. Swagger
UI's script and style sheet come from the ``fastapi-offline`` package (no CDN: the page works
on a closed network), its start-up script from the dashboard's files. Swagger UI sets inline
styles, so this page (only) allows them in its Content-Security-Policy.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>redfl platform API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="icon" href="/static/icon.svg" type="image/svg+xml">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""
MEDIA = {"swagger-ui.css": "text/css; charset=utf-8", "swagger-ui-bundle.js": "text/javascript"}


@router.get("/api/docs", response_class=HTMLResponse)
def docs_page() -> HTMLResponse:
    """Swagger UI over ``/api/openapi.json``."""
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": POLICY})


@router.get("/api/docs/{name}", response_class=Response)
def docs_asset(name: Literal["swagger-ui.css", "swagger-ui-bundle.js"]) -> Response:
    """Swagger UI's script or style sheet."""
    try:
        body = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail="the API docs need the fastapi-offline package: pip install 'redfl[platform]'",
        ) from None
    return Response(body, media_type=MEDIA[name], headers={"Cache-Control": "max-age=86400"})
