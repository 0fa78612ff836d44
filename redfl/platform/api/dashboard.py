"""The dashboard: ``GET /`` (the page) and ``GET /static/{name}`` (its scripts and styles).

The files are package data in ``redfl/platform/web`` (plain HTML, CSS and JavaScript
modules, no build step). They are public: everything they show comes from the API, which
checks the caller's token. The page keeps to the strict Content-Security-Policy of
:mod:`redfl.platform.api.middleware` (scripts and styles from this origin only, no inline
code).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The file kinds the dashboard serves, by suffix."""
AssetName = Annotated[str, Path(max_length=64, pattern=r"^[a-z][a-z0-9_-]*\.(js|css|svg)$")]


def asset(name: str) -> tuple[bytes, str]:
    """The bytes and media type of the dashboard file ``name``.

    Raises
    ------
    FileNotFoundError
        If the package has no such file (or its suffix is not served).

    Examples
    --------
    >>> body, media = asset("index.html")
    >>> media, body.startswith(b"<!doctype html>")
    ('text/html; charset=utf-8', True)
    """
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in MEDIA_TYPES or "/" in name:
        raise FileNotFoundError(name)
    entry = resources.files("redfl.platform.web").joinpath(name)
    if not entry.is_file():
        raise FileNotFoundError(name)
    return entry.read_bytes(), MEDIA_TYPES[suffix]


def _serve(name: str) -> Response:
    try:
        body, media = asset(name)
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no file {name!r}") from None
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=Response)
def page() -> Response:
    """The dashboard's page."""
    return _serve("index.html")


@router.get("/static/{name}", response_class=Response)
def static(name: AssetName) -> Response:
    """A script, style sheet or icon of the dashboard."""
    return _serve(name)
