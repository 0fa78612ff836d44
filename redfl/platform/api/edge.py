"""``/api/edge``: the jobs of the edge deployments the platform operates.

Every signed-in user lists the jobs of a deployment and follows one (its versions and their
metrics so far); researchers and admins submit jobs, and abort the ones they submitted
(admins any job). The platform reaches each edge server as an operator
(:mod:`redfl.platform.edge`) and records who submitted and who aborted which job; the job
listing and a job's detail name them (``submitted_by``, ``aborted_by``).

A submitted job is checked before it leaves the platform as a web config is: its code
(``client``, ``evaluate``) must lie in an allowed package (``redfl.examples`` or the
operator's ``allowed_packages``), it may not name a file (``initial_parameters``: the job's
class gives the initial model), and it may nest :data:`~redfl.platform.untrusted.MAX_DEPTH`
levels at most. The edge server validates the rest; its refusal names the field (422).

``deployment`` (a query parameter, or a field of the body) picks one of the settings'
``edge_deployments`` by name; without it, the first one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi import status as http
from fastapi.responses import JSONResponse

from redfl.core.imports import ImportNotAllowedError, check_import_allowed
from redfl.platform.api.deps import RANK, Researcher, SettingsDep, StoreDep, Viewer
from redfl.platform.api.errors import SafeJSONResponse
from redfl.platform.api.schemas import (
    EDGE_PATTERN,
    EdgeAbortIn,
    EdgeActionOut,
    EdgeDeploymentOut,
    EdgeJobIn,
    EdgeJobsOut,
    ErrorOut,
)
from redfl.platform.edge import EdgeDeployment, EdgeError
from redfl.platform.models import EdgeAction
from redfl.platform.settings import Settings, SettingsError
from redfl.platform.untrusted import MAX_DEPTH, WebConfigError, nesting_depth
from redfl.trust import BundleError

router = APIRouter(tags=["edge"])

JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""What an edge job's id looks like."""
JobIdPath = Annotated[str, PathParam(pattern=JOB_ID)]
"""An edge job's id in a path."""
DeploymentQuery = Annotated[str | None, Query(pattern=EDGE_PATTERN)]
"""The name of an edge deployment; none: the first of the settings."""
CODE_FIELDS = ("client", "evaluate")
"""The fields of a job that name code (``MODULE:NAME``) the edge imports."""
FILE_FIELDS = ("initial_parameters",)
"""The fields of a job that name a file."""
_EDGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such deployment or job"},
    502: {"description": "The edge server refused the platform's credential, or failed"},
    503: {"description": "The edge server cannot be reached, or did not answer in time"},
}


async def edge_error(_: Request, error: Exception) -> JSONResponse:
    """The reply to an :class:`EdgeError`: its status, ``detail`` and (422) ``field``."""
    assert isinstance(error, EdgeError)
    body = ErrorOut(detail=error.detail, field=error.field)
    return SafeJSONResponse(body.model_dump(exclude_none=True), status_code=error.status)


def open_deployments(settings: Settings) -> dict[str, EdgeDeployment]:
    """A client of every edge deployment the settings name, by name.

    Raises
    ------
    SettingsError
        If a deployment's credential cannot be read (naming the setting).
    """
    opened: dict[str, EdgeDeployment] = {}
    for name, setting in settings.edge_deployments.items():
        try:
            opened[name] = EdgeDeployment(name, setting, settings.edge_timeout_seconds)
        except (OSError, BundleError) as error:
            raise SettingsError(f"edge_deployments.{name}.credential: {error}") from None
    return opened


def _deployment(request: Request, name: str | None) -> EdgeDeployment:
    deployments: dict[str, EdgeDeployment] = request.app.state.edge
    if not deployments:
        raise HTTPException(
            http.HTTP_404_NOT_FOUND,
            detail="no edge deployment is configured (setting edge_deployments)",
        )
    if name is None:
        return next(iter(deployments.values()))
    if name not in deployments:
        known = ", ".join(deployments)
        raise HTTPException(
            http.HTTP_404_NOT_FOUND, detail=f"no edge deployment {name!r} (configured: {known})"
        )
    return deployments[name]


def _users(actions: list[EdgeAction]) -> dict[tuple[str, str], str]:
    """``(job id, action) -> user name`` of the latest of each."""
    return {(a.job_id, a.action): a.user_name for a in actions}


def _with_users(job: dict[str, Any], users: dict[tuple[str, str], str]) -> dict[str, Any]:
    job_id = str(job.get("job_id"))
    return {
        **job,
        "submitted_by": users.get((job_id, "submit")),
        "aborted_by": users.get((job_id, "abort")),
    }


def _check_job(job: dict[str, Any], settings: Settings) -> None:
    """The platform's own rules for a job from the web (the module docstring's)."""
    if nesting_depth(job) > MAX_DEPTH:
        raise WebConfigError("job", f"nested more than {MAX_DEPTH} levels deep")
    packages = settings.client_packages
    for field in CODE_FIELDS:
        target = job.get(field)
        if not isinstance(target, str):
            continue  # absent, or of the wrong type: the edge server names it
        try:
            check_import_allowed(target, packages)
        except ImportNotAllowedError:
            module = target.split(":", 1)[0]
            raise WebConfigError(
                f"job.{field}",
                f"module {module!r} is not in an allowed package (allowed: {', '.join(packages)})",
            ) from None
    for field in FILE_FIELDS:
        if job.get(field) is not None:
            raise WebConfigError(
                f"job.{field}",
                "a job from the platform may not name a file on the edge server (leave it out: "
                "the job's class gives the initial model)",
            )


@router.get("/api/edge/deployments")
def edge_deployments(request: Request, _: Viewer) -> list[EdgeDeploymentOut]:
    """The edge deployments the platform operates, in the settings' order."""
    deployments: dict[str, EdgeDeployment] = request.app.state.edge
    return [EdgeDeploymentOut(name=d.name, url=d.url) for d in deployments.values()]


@router.get("/api/edge/jobs", responses=_EDGE_ERRORS)
def edge_jobs(
    request: Request, _: Viewer, store: StoreDep, deployment: DeploymentQuery = None
) -> EdgeJobsOut:
    """Every job of the deployment, the oldest first, with who submitted and aborted it."""
    edge = _deployment(request, deployment)
    jobs = edge.jobs()
    users = _users(store.edge_actions(edge.name, [str(j.get("job_id")) for j in jobs]))
    return EdgeJobsOut(deployment=edge.name, jobs=[_with_users(j, users) for j in jobs])


@router.get("/api/edge/jobs/{job_id}", responses=_EDGE_ERRORS)
def edge_job(
    job_id: JobIdPath,
    request: Request,
    _: Viewer,
    store: StoreDep,
    deployment: DeploymentQuery = None,
) -> dict[str, Any]:
    """One job: its summary, the history of its versions (each version's metrics) so far,
    and the platform users' actions on it (``actions``)."""
    edge = _deployment(request, deployment)
    job = edge.job(job_id)
    actions = store.edge_actions(edge.name, [job_id])
    listed = [
        EdgeActionOut(action=a.action, user=a.user_name, detail=a.detail, at=a.created_at)
        for a in actions
    ]
    out = _with_users(job, _users(actions))
    out["deployment"] = edge.name
    out["actions"] = [a.model_dump(mode="json") for a in listed]
    return out


@router.post(
    "/api/edge/jobs",
    status_code=http.HTTP_201_CREATED,
    responses={**_EDGE_ERRORS, 409: {"description": "A job of that name is running"}},
)
def submit_edge_job(
    body: EdgeJobIn, request: Request, user: Researcher, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Submit a job to the deployment; its summary (version 0, ``running``)."""
    _check_job(body.job, settings)
    edge = _deployment(request, body.deployment)
    summary = edge.submit(body.job)
    job_id = str(summary["job_id"])
    store.record_edge_action(edge.name, job_id, "submit", user, str(summary.get("name", "")))
    return {**summary, "deployment": edge.name, "submitted_by": user.name, "aborted_by": None}


@router.post(
    "/api/edge/jobs/{job_id}/abort",
    responses={**_EDGE_ERRORS, 403: {"description": "Not the job's submitter, nor an admin"}},
)
def abort_edge_job(
    job_id: JobIdPath,
    request: Request,
    user: Researcher,
    store: StoreDep,
    body: EdgeAbortIn | None = None,
) -> dict[str, Any]:
    """Abort a running job (researchers: the jobs they submitted; admins: any); its
    summary."""
    wanted = body or EdgeAbortIn()
    edge = _deployment(request, wanted.deployment)
    submits = [a for a in store.edge_actions(edge.name, [job_id]) if a.action == "submit"]
    submitter = submits[-1].user_name if submits else None
    own = bool(submits) and submits[-1].user_id == user.id
    if RANK[user.role] < RANK["admin"] and not own:
        raise HTTPException(
            http.HTTP_403_FORBIDDEN,
            detail=f"only the user who submitted job {job_id!r} or an admin may abort it",
        )
    reason = wanted.reason or f"aborted by {user.name} on the platform"
    summary = edge.abort(job_id, reason)
    store.record_edge_action(edge.name, job_id, "abort", user, reason)
    return {**summary, "deployment": edge.name, "submitted_by": submitter, "aborted_by": user.name}
