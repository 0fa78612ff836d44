"""``/api/sites``: the sites of the platform's federation home (admins only), and
``/api/runs/{id}/sites``: each site's state in a run (every user).

Adding a site issues its credential (a key, a certificate signed by the platform's CA, the
CA and the URL of ``sites_server_url``) and returns it **once**: the platform keeps no copy
of the site's key. Revoking refuses the site at once, in runs under way too.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi import status as http

from redfl.core.config import ConfigError
from redfl.platform.api.deps import Admin, RunIdPath, SettingsDep, StoreDep, Viewer
from redfl.platform.api.schemas import (
    SITE_PATTERN,
    SiteCreate,
    SiteIssued,
    SiteOut,
    SiteRevoke,
    SiteStateOut,
)
from redfl.platform.sites import ensure_sites_home
from redfl.run.site_states import site_states
from redfl.runtime.sites.admin import SiteRecord, issue_site, list_sites
from redfl.runtime.sites.roster import SiteState

router = APIRouter(tags=["sites"])
SiteNamePath = Annotated[str, PathParam(pattern=SITE_PATTERN)]
"""A site name in a path."""


def _out(record: SiteRecord) -> SiteOut:
    return SiteOut(
        name=record.name,
        serial=f"{record.serial:x}",
        not_after=record.not_after,
        state=record.state,
    )


@router.get("/api/sites")
def get_sites(_: Admin, settings: SettingsDep) -> list[SiteOut]:
    """Every site credential of the platform's federation home, in issue order."""
    return [_out(r) for r in list_sites(ensure_sites_home(settings))]


@router.post(
    "/api/sites",
    status_code=http.HTTP_201_CREATED,
    responses={409: {"description": "The name has a valid credential already"}},
)
def add_site(body: SiteCreate, _: Admin, settings: SettingsDep) -> SiteIssued:
    """Add a site: its credential bundle is in the reply, **this once** (save it as a 0600
    file and hand it to the site out of band)."""
    home = ensure_sites_home(settings)
    try:
        bundle = issue_site(home, body.name, settings.sites_server_url, days=body.days)
    except ValueError as error:
        code = 409 if "already has a valid credential" in str(error) else 422
        raise HTTPException(code, detail=str(error)) from None
    record = next(r for r in reversed(list_sites(home)) if r.name == body.name)
    return SiteIssued(**_out(record).model_dump(), bundle=bundle.as_json())


@router.delete(
    "/api/sites/{name}",
    responses={404: {"description": "No such site"}, 409: {"description": "Revoked already"}},
)
def revoke_site(
    name: SiteNamePath, _: Admin, settings: SettingsDep, body: SiteRevoke | None = None
) -> SiteOut:
    """Revoke a site's credential: it is refused at once, in runs under way too."""
    home = ensure_sites_home(settings)
    known = [r for r in list_sites(home) if r.name == name]
    if not known:
        raise HTTPException(http.HTTP_404_NOT_FOUND, detail=f"site {name!r} does not exist")
    try:
        home.revoke(name, (body or SiteRevoke()).reason)
    except ValueError as error:
        raise HTTPException(http.HTTP_409_CONFLICT, detail=str(error)) from None
    return _out(next(r for r in reversed(list_sites(home)) if r.name == name))


def _expected(text: str, fmt: str) -> list[str]:
    """The sites a stored config expects (none when it does not parse or has none)."""
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else json.loads(text)
        sites = data.get("sites") if isinstance(data, dict) else None
        expected = sites.get("expected") if isinstance(sites, dict) else None
    except ValueError:  # TOML and JSON decode errors are ValueErrors
        return []
    return [str(n) for n in expected] if isinstance(expected, list) else []


def _states(folder: Path, text: str, fmt: str) -> list[SiteState]:
    try:
        return site_states(folder)
    except ConfigError:  # no run folder yet (queued): the sites it expects, not yet seen
        return [SiteState(name) for name in _expected(text, fmt)]


@router.get("/api/runs/{run_id}/sites", responses={404: {"description": "No such run"}})
def run_sites(
    run_id: RunIdPath, _: Viewer, store: StoreDep, settings: SettingsDep
) -> list[SiteStateOut]:
    """Each site the run expects, with its state: connected, from where, last seen, rounds
    taken part in, failures, why it left (empty for a run without sites)."""
    run = store.require_run(run_id)
    states = _states(Path(run.run_dir), run.config_text, run.config_format)
    return [SiteStateOut(**asdict(s)) for s in states]
