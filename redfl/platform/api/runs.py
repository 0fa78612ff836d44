"""``/api/runs``: queue a run from a config, list and read runs, cancel one.

Execution is not here: a queued run waits for the executor, which reads the run's stored
config, writes its run folder and reports rounds, failures and events through the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import TypeAdapter

from redfl.platform.api.deps import Researcher, RunIdPath, SettingsDep, StoreDep, Viewer
from redfl.platform.api.schemas import FailureOut, RunCreate, RunDetail, RunOut
from redfl.platform.models import Run, User
from redfl.platform.store import Store, new_run_id
from redfl.platform.untrusted import parse_web_config

router = APIRouter(prefix="/api/runs", tags=["runs"])
_RUN_LIST = TypeAdapter(list[RunOut])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such run"}}


def _project_id(store: Store, name: str | None, user: User) -> int | None:
    if name is None:
        return None
    project = store.project_by_name(name)
    if project is None:
        raise HTTPException(422, detail=f"project: no such project {name!r}")
    members = {m.id for m in project.members}
    if user.role != "admin" and user.id != project.owner_id and user.id not in members:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"you are not a member of project {name!r}"
        )
    return project.id


def detail(run: Run, store: Store) -> RunDetail:
    """The full view of a run: config, metrics, failures and the files of its folder."""
    folder = Path(run.run_dir)
    files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return RunDetail(
        **RunOut.model_validate(run).model_dump(),
        config=run.config_text,
        format=run.config_format,
        metrics=store.round_metrics(run.id),
        failures=[
            FailureOut(round=f.round, node=f.node, phase=f.phase, reason=f.reason)
            for f in store.failures(run.id)
        ],
        artifacts=files,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={413: {"description": "Body too large"}, 422: {"description": "Bad config"}},
)
def create_run(body: RunCreate, user: Researcher, store: StoreDep, settings: SettingsDep) -> RunOut:
    """Queue a run of ``config`` (TOML or JSON text, validated like ``redfl run`` plus the
    web rules: allowed client packages, operator caps)."""
    config = parse_web_config(body.config, body.format, settings)  # WebConfigError: 422
    project_id = _project_id(store, body.project, user)
    run_id = new_run_id()
    run_dir = (settings.runs_dir / run_id).resolve()
    run_dir.mkdir(parents=True)
    (run_dir / f"config.{body.format}").write_text(body.config, encoding="utf-8")
    run = store.create_run(
        run_id=run_id,
        name=config.federation.name,
        owner_id=user.id,
        project_id=project_id,
        config_text=body.config,
        config_format=body.format,
        rounds=config.federation.rounds,
        run_dir=str(run_dir),
    )
    return RunOut.model_validate(run)


def _run_list(rows: list[dict[str, Any]]) -> Response:
    """The JSON of ``rows`` as a list of :class:`RunOut`, validated and serialised in one pass
    (FastAPI would validate the list of models a second time)."""
    return Response(
        _RUN_LIST.dump_json(_RUN_LIST.validate_python(rows)), media_type="application/json"
    )


@router.get("", response_model=list[RunOut])
def list_runs(
    _: Viewer,
    store: StoreDep,
    run_status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
        Query(alias="status"),
    ] = None,
    project: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """Runs, newest first; filter by status or project name."""
    project_id = None
    if project is not None:
        found = store.project_by_name(project)
        if found is None:
            return _run_list([])
        project_id = found.id
    rows = store.run_summaries(status=run_status, project_id=project_id, limit=limit, offset=offset)
    return _run_list(rows)


@router.get("/{run_id}", responses=NOT_FOUND)
def get_run(run_id: RunIdPath, _: Viewer, store: StoreDep) -> RunDetail:
    """A run with its status, config, per-round metrics, failures and artifacts."""
    return detail(store.require_run(run_id), store)


@router.post(
    "/{run_id}/cancel",
    responses={**NOT_FOUND, 409: {"description": "Already finished"}},
)
def cancel_run(run_id: RunIdPath, user: Researcher, store: StoreDep) -> RunOut:
    """Cancel a run: a queued one at once; a running one when its executor sees the request.

    Researchers cancel their own runs; admins any run.
    """
    run = store.require_run(run_id)
    if user.role != "admin" and run.owner_id != user.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="only the run's owner or an admin may cancel it"
        )
    return RunOut.model_validate(store.cancel_queued(run_id))
