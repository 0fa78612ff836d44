"""``/api/deployments``: serve a succeeded run's model on Ray Serve, list and stop the
served models, and ask one for predictions through the platform's own authentication.

Researchers deploy their own runs (admins any run) and stop their own deployments (admins
any); every user, viewers too, may predict. Deploying returns at once (``202``, status
``deploying``); the model is deployed in the background (:mod:`redfl.platform.serving`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Query, Request, Response
from fastapi import status as http
from pydantic import TypeAdapter
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from redfl.core.config import ConfigError
from redfl.platform.api.deps import Researcher, RunIdPath, SettingsDep, StoreDep, Viewer
from redfl.platform.api.schemas import DeploymentCreate, DeploymentOut, PredictIn, PredictOut
from redfl.platform.models import Deployment, User
from redfl.platform.serving import ModelServer, ServingError
from redfl.platform.store import Store
from redfl.platform.store.deployments import ACTIVE

router = APIRouter(tags=["deployments"])
_LIST = TypeAdapter(list[DeploymentOut])
DeploymentIdPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]
"""A deployment id in a path (unknown ids are 404)."""
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such deployment"}}
UNREACHABLE = "cannot reach Ray Serve"


def _server(request: Request) -> ModelServer:
    server: ModelServer = request.app.state.models
    return server


def _check_owner(owner_id: int | None, user: User, what: str, whose: str) -> None:
    if user.role != "admin" and owner_id != user.id:
        raise HTTPException(
            http.HTTP_403_FORBIDDEN, detail=f"only the {whose}'s owner or an admin may {what} it"
        )


@router.post(
    "/api/runs/{run_id}/deployments",
    status_code=http.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "No such run"},
        409: {"description": "The run has not succeeded, or is deployed already"},
    },
)
def create_deployment(
    run_id: RunIdPath,
    user: Researcher,
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
    background: BackgroundTasks,
    body: DeploymentCreate | None = None,
) -> DeploymentOut:
    """Serve the model of a succeeded run on Ray Serve (its owner or an admin).

    Returns at once with status ``deploying``; ``GET /api/deployments/{id}`` says when it is
    ``running`` (or ``failed``, and why). A run that has not succeeded, or that is deployed
    already, is 409; a run folder whose model cannot be served (no model, a client class
    without a predict hook or outside the allowed packages) is 422, saying why.
    """
    body = body or DeploymentCreate()
    run = store.require_run(run_id)
    _check_owner(run.owner_id, user, "deploy", "run")
    if run.status != "succeeded":
        raise HTTPException(
            http.HTTP_409_CONFLICT,
            detail=f"run {run_id} is {run.status}: only a succeeded run's model can be deployed",
        )
    if body.replicas > settings.serving_max_replicas:
        raise HTTPException(
            422,
            detail=f"body.replicas: at most {settings.serving_max_replicas} (got {body.replicas})",
        )
    existing = store.deployment_of_run(run_id)
    if existing is not None:
        raise HTTPException(
            http.HTTP_409_CONFLICT,
            detail=f"run {run_id} is deployed already (deployment {existing.id}, "
            f"{existing.status}): stop it first",
        )
    server = _server(request)
    try:
        server.check(run)
    except ConfigError as error:
        raise HTTPException(422, detail=str(error)) from None
    row = store.create_deployment(run_id, user.id, body.replicas, body.max_batch)
    background.add_task(server.deploy, row.id)
    return DeploymentOut.model_validate(row)


@router.get("/api/deployments")
def list_deployments(
    _: Viewer,
    store: StoreDep,
    run_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> list[DeploymentOut]:
    """Every deployment, newest first (of one run with ``run_id``)."""
    rows = store.list_deployments()
    return _LIST.validate_python([r for r in rows if run_id is None or r.run_id == run_id])


@router.get("/api/deployments/{deployment_id}", responses=NOT_FOUND)
def get_deployment(deployment_id: DeploymentIdPath, _: Viewer, store: StoreDep) -> DeploymentOut:
    """One deployment."""
    return DeploymentOut.model_validate(store.require_deployment(deployment_id))


@router.delete(
    "/api/deployments/{deployment_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 503: {"description": UNREACHABLE}},
)
def delete_deployment(
    deployment_id: DeploymentIdPath, user: Researcher, store: StoreDep, request: Request
) -> Response:
    """Stop a deployment: its replicas end and it is forgotten (the one who deployed it, or
    an admin). 503 when Ray Serve cannot be reached (it is kept then)."""
    row = store.require_deployment(deployment_id)
    _check_owner(row.owner_id, user, "stop", "deployment")
    if row.status in ACTIVE:
        try:
            _server(request).stop(row.name)
        except ServingError as error:
            raise HTTPException(503, detail=f"{UNREACHABLE}: {error}") from None
    store.delete_deployment(deployment_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


def _read(sessions: sessionmaker[Session], deployment_id: str) -> Deployment:
    with sessions() as session:
        return Store(session).require_deployment(deployment_id)


@router.post(
    "/api/deployments/{deployment_id}/predict",
    response_model=PredictOut,
    responses={
        **NOT_FOUND,
        409: {"description": "Not running"},
        503: {"description": UNREACHABLE},
        504: {"description": "No answer in time"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictIn.model_json_schema()}},
        }
    },
)
async def predict(deployment_id: DeploymentIdPath, _: Viewer, request: Request) -> Response:
    """The model's outputs for ``{"inputs": [[...], ...]}`` (every user may ask).

    Rows of the wrong shape, values that are not numbers and too many rows are 422, naming
    the problem (the model's replicas check them, as for ``redfl model serve``).
    """
    row = await run_in_threadpool(_read, request.app.state.sessions, deployment_id)
    if row.status != "running":
        raise HTTPException(
            http.HTTP_409_CONFLICT,
            detail=f"deployment {deployment_id} is {row.status}, not running"
            + (f": {row.error}" if row.error else ""),
        )
    body = await request.body()
    try:
        answer = await run_in_threadpool(_server(request).predict, row.name, body)
    except (KeyError, ServingError) as error:
        raise HTTPException(
            503,
            detail=f"{UNREACHABLE} for deployment {deployment_id} ({row.name}): "
            f"{error.args[0] if error.args else error}",
        ) from None
    except TimeoutError as error:
        raise HTTPException(504, detail=str(error)) from None
    return Response(answer.body, status_code=answer.status, media_type="application/json")
