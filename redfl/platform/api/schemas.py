"""Request and response bodies of the API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from redfl.platform.settings import EDGE_NAME

Role = Literal["admin", "researcher", "viewer"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "stopped"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
USER_PATTERN = r"^[A-Za-z0-9_.@-]+$"
UserName = Field(min_length=1, max_length=64, pattern=USER_PATTERN)
Member = Annotated[str, Field(min_length=1, max_length=64, pattern=USER_PATTERN)]
Text = Annotated[str, Field(max_length=10_000, pattern=r"^[^\x00]*$")]
"""Free text (no NUL character: PostgreSQL's text cannot hold it)."""
Password = Field(min_length=1, max_length=1024)
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,32}$"
Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=TAG_PATTERN)]
"""A run's tag: 1 to 32 letters, digits or ``_.:-``."""
Tags = Annotated[list[Tag], Field(max_length=20)]


def _name_of(value: Any) -> Any:
    return getattr(value, "name", value)


Name = Annotated[str, BeforeValidator(_name_of)]
"""A name, or a row (a user, a project) shown by its name."""


class ErrorOut(BaseModel):
    """An error reply: one line saying what is wrong; a 422 also names the first bad field
    (a dotted key such as ``body.password`` or ``client.target``, or ``null``)."""

    detail: str
    field: str | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    """Credentials for ``POST /api/auth/login``."""

    username: str = UserName
    password: str = Password


class RefreshRequest(_Body):
    """A refresh token to spend (``/api/auth/refresh``)."""

    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutRequest(_Body):
    """The refresh token of the login to end (optional: the bearer token ends it too)."""

    refresh_token: str | None = Field(default=None, min_length=1, max_length=512)


class TokenPair(BaseModel):
    """An access token (JWT, short-lived) and a single-use refresh token."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    username: str
    role: Role


class _View(BaseModel):
    """A response body read from the attributes of a stored row (``model_validate(row)``)."""

    model_config = ConfigDict(from_attributes=True)


class UserOut(_View):
    """A user as the API shows it (never the password hash)."""

    name: str
    role: Role
    created_at: datetime


class UserCreate(_Body):
    """A new user: name, role and initial password (8 characters or more)."""

    name: str = UserName
    role: Role
    password: str = Field(min_length=8, max_length=1024)


class RoleChange(_Body):
    """A user's new role."""

    role: Role


class PasswordChange(_Body):
    """A user's new password (8 characters or more); their sessions end."""

    password: str = Field(min_length=8, max_length=1024)


class ProjectCreate(_Body):
    """A new project."""

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    description: Text = ""
    members: list[Member] = Field(default_factory=list, max_length=1000)


class ProjectUpdate(_Body):
    """The fields of a project to change (absent ones stay)."""

    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    description: Text | None = None
    members: list[Member] | None = Field(default=None, max_length=1000)


class ProjectOut(_View):
    """A project with its owner and members' names."""

    id: int
    name: str
    description: str
    owner: Name | None
    members: list[Name]
    created_at: datetime


class RunCreate(_Body):
    """A run to queue: its config (TOML text, or JSON text), optionally its project and
    tags."""

    config: str = Field(min_length=1, max_length=1_000_000)
    format: Literal["toml", "json"] = "toml"
    project: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    tags: Tags = Field(default_factory=list)


class TagsChange(_Body):
    """A run's new tags (replacing the old ones)."""

    tags: Tags


class StopBody(_Body):
    """Why a run is stopped (optional: shown with the run)."""

    reason: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]*$")


class FailureOut(BaseModel):
    """A client failure of a run."""

    round: int
    node: str
    phase: str
    reason: str


class RunOut(_View):
    """A run: who, what, its status and times, how far it got (the list view).

    ``rounds`` is the number planned, ``rounds_done`` the rounds completed so far;
    ``best_accuracy`` and ``final_accuracy`` are over those rounds (``null`` without an
    evaluation); ``updated_at`` is the time of its last change (what the live list follows).
    """

    id: str
    name: str
    project: Name | None
    owner: Name | None
    status: RunStatus
    cancel_requested: bool
    stop_requested: bool = False
    rounds: int
    rounds_done: int = 0
    best_accuracy: float | None = None
    final_accuracy: float | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None = None
    error: str | None
    tags: list[str] = Field(default_factory=list)


class RunDetail(RunOut):
    """A run with its config, per-round metrics, failures, summary and artifacts."""

    config: str
    format: str
    metrics: list[dict[str, Any]]
    failures: list[FailureOut]
    artifacts: list[str]
    """Files present in the run folder (``model.safetensors``, ``events.jsonl``, ...)."""
    summary: dict[str, Any] | None = None
    """The run folder's ``summary.json`` once the run has ended (``null`` before)."""


class LogOut(BaseModel):
    """A piece of a run's log: the text from byte ``offset`` to ``next`` of ``size``."""

    offset: int
    next: int
    size: int
    text: str


class CompareOut(BaseModel):
    """Runs side by side: each run's list view, and every config key (dotted) with each
    run's value (``null`` where a run has none); ``differing`` lists the keys whose values
    are not all equal."""

    runs: list[RunOut]
    config: dict[str, list[Any]]
    differing: list[str]


class StrategyOut(BaseModel):
    """A registered strategy: its name, class, paper and own parameters."""

    name: str
    cls: str
    paper: str
    pre_aggregates: bool
    parameters: dict[str, Any]


class ExampleOut(BaseModel):
    """A bundled example config."""

    name: str
    description: str
    config: str


DeploymentStatus = Literal["deploying", "running", "failed", "lost"]


class DeploymentCreate(_Body):
    """How to serve a run's model: replicas (at most the operator's
    ``serving_max_replicas``) and how many requests a replica predicts together."""

    replicas: int = Field(default=1, ge=1, le=1024)
    max_batch: int = Field(default=16, ge=1, le=1024)


class DeploymentOut(_View):
    """A run's model served on Ray Serve.

    ``status``: ``deploying`` until its replicas run, then ``running``; ``failed`` (deploying
    failed, ``error`` says why); ``lost`` (Ray Serve no longer had it when the platform
    restarted, and deploying it again failed). Ask it with
    ``POST /api/deployments/{id}/predict``.
    """

    id: str
    name: str
    """Its application name on Ray Serve."""
    run_id: str
    owner: Name | None
    status: DeploymentStatus
    replicas: int
    max_batch: int
    error: str | None
    created_at: datetime
    updated_at: datetime


class PredictIn(_Body):
    """Rows of numbers to predict (each row one input of the model's shape)."""

    inputs: list[list[float]]


class PredictOut(BaseModel):
    """The model's outputs, one row per input row."""

    outputs: list[list[float]]


SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SiteCreate(_Body):
    """A new site of the platform's federation: its name (its client's node id in runs:
    ``[sites] expected``) and how long its credential is valid."""

    name: str = Field(pattern=SITE_PATTERN)
    days: int = Field(default=365, ge=1, le=3650)


class SiteRevoke(_Body):
    """Why a site's credential is revoked (kept in the register)."""

    reason: str = Field(default="revoked through the platform", min_length=1, max_length=500)


class SiteOut(BaseModel):
    """A site's credential as the platform's register holds it: ``state`` is ``valid``,
    ``expired`` or ``revoked: <reason>``."""

    name: str
    serial: str
    """The certificate's serial number (hexadecimal)."""
    not_after: datetime
    state: str


class SiteIssued(SiteOut):
    """A site just added, with its credential bundle: **shown this once** (the platform keeps
    no copy of its private key). Save ``bundle`` as a JSON file of mode 0600 and hand it to
    the site: ``redfl site run --credentials FILE ...``."""

    bundle: dict[str, Any]


class SiteStateOut(BaseModel):
    """A site's state in a run: connected now, from where, when last heard from (Unix
    seconds), rounds taken part in (fit results accepted), failures, why it left."""

    name: str
    connected: bool
    address: str
    last_seen: float | None
    rounds: int
    failures: int
    left: str | None


EDGE_PATTERN = f"^{EDGE_NAME}$"
"""The name of an edge deployment (as the settings' ``edge_deployments`` require)."""


class EdgeDeploymentOut(BaseModel):
    """An edge deployment the platform operates."""

    name: str
    url: str


class EdgeJobIn(BaseModel):
    """A job to submit: its fields as in an edge job file (``name``, ``client``,
    ``options``, FedBuff's and selection's fields, ...)."""

    model_config = ConfigDict(extra="forbid")

    deployment: str | None = Field(default=None, pattern=EDGE_PATTERN)
    job: dict[str, Any]


class EdgeAbortIn(BaseModel):
    """Why a job is aborted (recorded by the edge server and the platform)."""

    model_config = ConfigDict(extra="forbid")

    deployment: str | None = Field(default=None, pattern=EDGE_PATTERN)
    reason: str = Field(default="", max_length=500)


class EdgeActionOut(BaseModel):
    """A user's action on an edge job through the platform."""

    action: str
    user: str
    detail: str
    at: datetime


class EdgeJobsOut(BaseModel):
    """The jobs of one deployment, the oldest first (each the edge server's summary, plus
    ``submitted_by`` and ``aborted_by``: users of the platform, or ``null``)."""

    deployment: str
    jobs: list[dict[str, Any]]
