"""Request and response bodies of the API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Role = Literal["admin", "researcher", "viewer"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
USER_PATTERN = r"^[A-Za-z0-9_.@-]+$"
UserName = Field(min_length=1, max_length=64, pattern=USER_PATTERN)
Member = Annotated[str, Field(min_length=1, max_length=64, pattern=USER_PATTERN)]
Text = Annotated[str, Field(max_length=10_000, pattern=r"^[^\x00]*$")]
"""Free text (no NUL character: PostgreSQL's text cannot hold it)."""
Password = Field(min_length=1, max_length=1024)


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


class RunOut(_View):
    """A run: who, what, its status and times (the list view)."""

    id: str
    name: str
    project: Name | None
    owner: Name | None
    status: RunStatus
    cancel_requested: bool
    rounds: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


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
