"""Request and response bodies of the API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from redfl.platform.models import Project, Run, User

Role = Literal["admin", "researcher", "viewer"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
USER_PATTERN = r"^[A-Za-z0-9_.@-]+$"
UserName = Field(min_length=1, max_length=64, pattern=USER_PATTERN)
Member = Annotated[str, Field(min_length=1, max_length=64, pattern=USER_PATTERN)]
Text = Annotated[str, Field(max_length=10_000, pattern=r"^[^\x00]*$")]
"""Free text (no NUL character: PostgreSQL's text cannot hold it)."""
Password = Field(min_length=1, max_length=1024)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    """Credentials for ``POST /api/auth/login``."""

    username: str = UserName
    password: str = Password


class RefreshRequest(_Body):
    """A refresh token to spend (``/api/auth/refresh``) or revoke (``/api/auth/logout``)."""

    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPair(BaseModel):
    """An access token (JWT, short-lived) and a single-use refresh token."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    username: str
    role: Role


class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""

    name: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        """The public view of ``user``."""
        return cls(name=user.name, role=user.role, created_at=user.created_at)


class UserCreate(_Body):
    """A new user: name, role and initial password (8 characters or more)."""

    name: str = UserName
    role: Role
    password: str = Field(min_length=8, max_length=1024)


class RoleChange(_Body):
    """A user's new role."""

    role: Role


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


class ProjectOut(BaseModel):
    """A project with its owner and members' names."""

    id: int
    name: str
    description: str
    owner: str | None
    members: list[str]
    created_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        """The API view of ``project``."""
        return cls(
            id=project.id,
            name=project.name,
            description=project.description,
            owner=None if project.owner is None else project.owner.name,
            members=[m.name for m in project.members],
            created_at=project.created_at,
        )


class RunCreate(_Body):
    """A run to queue: its config (TOML text, or JSON text) and optionally its project."""

    config: str = Field(min_length=1, max_length=1_000_000)
    format: Literal["toml", "json"] = "toml"
    project: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME_PATTERN)


class FailureOut(BaseModel):
    """A client failure of a run."""

    round: int
    node: str
    phase: str
    reason: str


class RunOut(BaseModel):
    """A run: who, what, its status and times (the list view)."""

    id: str
    name: str
    project: str | None
    owner: str | None
    status: RunStatus
    cancel_requested: bool
    rounds: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, run: Run) -> RunOut:
        """The API view of ``run``."""
        return cls(
            id=run.id,
            name=run.name,
            project=None if run.project is None else run.project.name,
            owner=None if run.owner is None else run.owner.name,
            status=run.status,
            cancel_requested=run.cancel_requested,
            rounds=run.rounds,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
        )


class RunDetail(RunOut):
    """A run with its config, per-round metrics, failures and artifacts."""

    config: str
    format: str
    metrics: list[dict[str, Any]]
    failures: list[FailureOut]
    artifacts: list[str]
    """Files present in the run folder (``model.safetensors``, ``events.jsonl``, ...)."""


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
