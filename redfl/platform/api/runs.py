"""``/api/runs``: queue a run from a config, list (filtered, paged) and read runs, tag them,
compare them, cancel or stop one.

Execution is not here: a queued run waits for the executor, which reads the run's stored
config, writes its run folder and reports rounds, failures and events through the store.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import TypeAdapter

from redfl.platform.api.deps import Researcher, RunIdPath, SettingsDep, StoreDep, Viewer
from redfl.platform.api.schemas import (
    NAME_PATTERN,
    TAG_PATTERN,
    USER_PATTERN,
    CompareOut,
    FailureOut,
    RunCreate,
    RunDetail,
    RunOut,
    RunStatus,
    StopBody,
    TagsChange,
)
from redfl.platform.cluster import ClusterView
from redfl.platform.models import Run, User
from redfl.platform.store import RunFilter, Store, new_run_id
from redfl.platform.untrusted import parse_web_config
from redfl.run.config import parse_config

router = APIRouter(prefix="/api/runs", tags=["runs"])
_RUN_LIST = TypeAdapter(list[RunOut])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such run"}}
MAX_COMPARED = 8
"""How many runs one comparison takes."""


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


def _summary(folder: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def detail(run: Run, store: Store) -> RunDetail:
    """The full view of a run: config, metrics, failures, summary and the files of its
    folder."""
    folder = Path(run.run_dir)
    files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return RunDetail(
        **store.run_summary(run.id),
        config=run.config_text,
        format=run.config_format,
        metrics=store.round_metrics(run.id),
        failures=[
            FailureOut(round=f.round, node=f.node, phase=f.phase, reason=f.reason)
            for f in store.failures(run.id)
        ],
        artifacts=files,
        summary=_summary(folder),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={413: {"description": "Body too large"}, 422: {"description": "Bad config"}},
)
def create_run(
    body: RunCreate, user: Researcher, store: StoreDep, settings: SettingsDep, request: Request
) -> RunOut:
    """Queue a run of ``config`` (TOML or JSON text, validated like ``redfl run`` plus the
    web rules: allowed client packages, operator caps and limits, client options against
    the client's ``Options`` model, resources against the cluster)."""
    cluster: ClusterView = request.app.state.cluster
    config = parse_web_config(body.config, body.format, settings, cluster.machines())
    project_id = _project_id(store, body.project, user)
    run_id = new_run_id()
    run_dir = (settings.runs_dir / run_id).resolve()
    run_dir.mkdir(parents=True)
    (run_dir / f"config.{body.format}").write_text(body.config, encoding="utf-8")
    store.create_run(
        run_id=run_id,
        name=config.federation.name,
        owner_id=user.id,
        project_id=project_id,
        config_text=body.config,
        config_format=body.format,
        rounds=config.federation.rounds,
        run_dir=str(run_dir),
        tags=body.tags,
    )
    return RunOut.model_validate(store.run_summary(run_id))


def _run_list(rows: list[dict[str, Any]], total: int) -> Response:
    """The JSON of ``rows`` as a list of :class:`RunOut`, validated and serialised in one pass
    (FastAPI would validate the list of models a second time); ``X-Total-Count`` says how
    many runs the filter lets through."""
    return Response(
        _RUN_LIST.dump_json(_RUN_LIST.validate_python(rows)),
        media_type="application/json",
        headers={"X-Total-Count": str(total)},
    )


@router.get(
    "",
    response_model=list[RunOut],
    responses={200: {"headers": {"X-Total-Count": {"schema": {"type": "integer"}}}}},
)
def list_runs(
    _: Viewer,
    store: StoreDep,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    project: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN)] = None,
    owner: Annotated[str | None, Query(max_length=64, pattern=USER_PATTERN)] = None,
    tag: Annotated[str | None, Query(max_length=32, pattern=TAG_PATTERN)] = None,
    q: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """Runs, newest first; filter by status, project, owner, tag and text (``q``: part of
    the name, the start of the id, or a tag); page with ``limit`` and ``offset``
    (``X-Total-Count`` says how many match)."""
    project_id = None
    if project is not None:
        found = store.project_by_name(project)
        if found is None:
            return _run_list([], 0)
        project_id = found.id
    where = RunFilter(
        status=run_status, project_id=project_id, owner=owner, text=q or None, tag=tag
    )
    rows = store.run_summaries(where, limit=limit, offset=offset)
    total = len(rows) + offset if len(rows) < limit and (rows or offset == 0) else None
    return _run_list(rows, total if total is not None else store.count_runs(where))


def flatten(table: Any, prefix: str = "") -> dict[str, Any]:
    """A config's tables as dotted keys (``client.options.lr``); lists stay values.

    Examples
    --------
    >>> flatten({"client": {"num_clients": 4, "options": {"lr": 0.1}}, "seed": 0})
    {'client.num_clients': 4, 'client.options.lr': 0.1, 'seed': 0}
    """
    if not isinstance(table, dict):
        return {prefix: table}
    flat: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, where))
        else:
            flat[where] = value
    return flat


def effective_config(text: str, fmt: str) -> dict[str, Any]:
    """A run's config with every default filled in, as dotted keys (as submitted, when it
    no longer validates)."""
    try:
        data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (ValueError, RecursionError):
        return {}
    try:
        return flatten(parse_config(data).model_dump(mode="json", by_alias=True))
    except ValueError:  # ConfigError: compare what was written
        return flatten(data)


@router.get("/compare", responses={404: {"description": "No such run"}})
def compare_runs(
    _: Viewer,
    store: StoreDep,
    ids: Annotated[str, Query(min_length=1, max_length=1000, pattern=r"^[A-Za-z0-9_,-]+$")],
) -> CompareOut:
    """Up to eight runs side by side (``ids``: run ids separated by commas): their list
    views and their configs (defaults filled in), key by key, with the keys that differ."""
    wanted = list(dict.fromkeys(i for i in ids.split(",") if i))
    if not 1 <= len(wanted) <= MAX_COMPARED:
        raise HTTPException(422, detail=f"ids: 1 to {MAX_COMPARED} run ids, got {len(wanted)}")
    runs = [store.require_run(run_id) for run_id in wanted]
    configs = [effective_config(run.config_text, run.config_format) for run in runs]
    keys = sorted({k for config in configs for k in config})
    table = {k: [config.get(k) for config in configs] for k in keys}
    differing = [k for k, values in table.items() if any(v != values[0] for v in values)]
    views = [RunOut.model_validate(store.run_summary(run.id)) for run in runs]
    return CompareOut(runs=views, config=table, differing=differing)


@router.get("/{run_id}", responses=NOT_FOUND)
def get_run(run_id: RunIdPath, _: Viewer, store: StoreDep) -> RunDetail:
    """A run with its status, config, per-round metrics, failures, summary and artifacts."""
    return detail(store.require_run(run_id), store)


def _check_owner(run: Run, user: User, what: str) -> None:
    if user.role != "admin" and run.owner_id != user.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"only the run's owner or an admin may {what} it"
        )


@router.put("/{run_id}/tags", responses=NOT_FOUND)
def set_tags(run_id: RunIdPath, body: TagsChange, user: Researcher, store: StoreDep) -> RunOut:
    """Replace the run's tags (its owner or an admin)."""
    _check_owner(store.require_run(run_id), user, "tag")
    store.set_tags(run_id, body.tags)
    return RunOut.model_validate(store.run_summary(run_id))


@router.post(
    "/{run_id}/cancel",
    responses={**NOT_FOUND, 409: {"description": "Already finished"}},
)
def cancel_run(run_id: RunIdPath, user: Researcher, store: StoreDep) -> RunOut:
    """Cancel a run: a queued one at once; a running one at the end of its current round
    (model, state and summary saved).

    Researchers cancel their own runs; admins any run.
    """
    _check_owner(store.require_run(run_id), user, "cancel")
    store.cancel_queued(run_id)
    return RunOut.model_validate(store.run_summary(run_id))


@router.post(
    "/{run_id}/stop",
    responses={**NOT_FOUND, 409: {"description": "Already finished"}},
)
def stop_run(
    run_id: RunIdPath, user: Researcher, store: StoreDep, body: StopBody | None = None
) -> RunOut:
    """Stop a run now: a queued one is cancelled; a running one ends within a second or
    so, mid-round (status ``stopped``; the model and records of its last completed round
    kept; its Ray job ends, and is stopped through Ray if it does not).

    Researchers stop their own runs; admins any run.
    """
    _check_owner(store.require_run(run_id), user, "stop")
    reason = f"stopped by {user.name}" + (f": {body.reason}" if body and body.reason else "")
    store.stop_run(run_id, reason)
    return RunOut.model_validate(store.run_summary(run_id))
