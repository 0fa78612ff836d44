"""Operator settings of the platform, and the JWT secret kept in the data folder.

Everything has a default; an operator overrides it in ``<data>/platform.toml`` (same keys)
or by the ``redfl serve`` options. The data folder holds the SQLite store (``redfl.db``),
the JWT secret (``jwt-secret``, mode 0600) and the run folders (``runs/<run id>``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from redfl.core.config import describe_errors
from redfl.platform.db import sqlite_url
from redfl.run.config import RunConfig
from redfl.runtime.sites.admin import check_server_url
from redfl.runtime.sites.config import SitesConfig
from redfl.trust import Bundle

SETTINGS_FILE = "platform.toml"
SECRET_FILE = "jwt-secret"
BUNDLED_PACKAGE = "redfl.examples"
"""Client code of the bundled examples: always allowed in web configs."""


NAME_RULES = {
    "allowed_packages": (r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", "a dotted package name"),
    "option_limits": (r"[A-Za-z_]\w*", "an option name"),
}
"""What the names in a setting must look like, by setting."""


class SettingsError(ValueError):
    """A bad setting; the message names the key, its value and what is allowed."""


EDGE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""What the name of an edge deployment must look like."""


class EdgeDeploymentSetting(BaseModel):
    """One edge deployment the platform operates (``[edge_deployments.NAME]`` in
    ``platform.toml``): where its server listens and the operator credential the platform
    presents there (mutual TLS and an operator token, as ``redfl edge jobs`` does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https://[^\s/]+$")
    """The edge server's URL, ``https://host:port`` (the server of ``redfl edge up``)."""
    credential: Path
    """An operator bundle of the deployment's tree (``<tree folder>/operator.json``, mode
    0600)."""

    @field_validator("credential")
    @classmethod
    def _operator(cls, value: Path) -> Path:
        try:
            bundle = Bundle.load(value)
        except FileNotFoundError:
            raise ValueError(f"{value} does not exist (an operator bundle is needed)") from None
        except (OSError, ValueError) as error:
            raise ValueError(str(error)) from None
        kind = bundle.identity.kind
        if kind != "operator":
            raise ValueError(
                f"{value} is the credential of {kind} {bundle.identity.name!r}, not an "
                "operator's (use the tree folder's operator bundle)"
            )
        return value

    def bundle(self) -> Bundle:
        """The operator bundle (read again: it may have been replaced since the settings
        were read)."""
        return Bundle.load(self.credential)


class Settings(BaseModel):
    """The platform's settings (see the module docstring for where they come from)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path("redfl-data")
    database_url: str | None = None
    """``None``: the SQLite file ``<data_dir>/redfl.db``."""
    ray_address: str | None = None
    auto_upgrade: bool = True
    """Apply the shipped migrations when the app starts."""
    access_token_seconds: int = Field(default=900, ge=10, le=86_400)
    refresh_token_seconds: int = Field(default=14 * 86_400, ge=60, le=365 * 86_400)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    """Failed logins of one user from one address, within the window, after which that
    user is refused from that address (429) until the window has passed them; the user's
    other addresses are not affected."""
    login_max_address_failures: int = Field(default=20, ge=1, le=100_000)
    """Failed logins from one address (any users) after which that address is refused."""
    login_window_seconds: int = Field(default=300, ge=1, le=86_400)
    login_retention_seconds: int = Field(default=30 * 86_400, ge=3600, le=3650 * 86_400)
    """How long login attempts are kept (the audit trail); older ones are deleted."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For``
    names the client; empty (the default): the header is ignored and the peer's address
    is the client's."""
    revocation_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often revocations made by other servers on the same database are read."""
    allowed_packages: tuple[str, ...] = ()
    """Packages (dotted prefixes) whose client code web configs may name, besides
    ``redfl.examples``."""
    max_clients: int = Field(default=1000, ge=1, le=1_000_000)
    max_rounds: int = Field(default=1000, ge=1, le=100_000)
    max_workers: int = Field(default=8, ge=1, le=10_000)
    max_upload_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    max_run_seconds: int | None = Field(default=None, ge=1, le=365 * 86_400)
    """A run's wall-clock limit: a run still going this long after it started is stopped
    (status ``stopped``, its rounds so far kept); ``None``: no limit."""
    option_limits: dict[str, float] = Field(default_factory=dict)
    """Upper bounds of client options that drive a run's cost (``epochs = 20``, ``tile =
    4``): a web config asking for more (or whose client's default is more) is refused."""
    check_allowed_options: bool = False
    """Also check ``client.options`` of clients in ``allowed_packages`` at submission,
    which imports their module in the API server (the bundled examples are always
    checked)."""
    stop_grace_seconds: float = Field(default=10.0, ge=1, le=600)
    """How long a force-stopped run's job has to end itself before its Ray job is stopped."""
    ray_nice: int = Field(default=10, ge=0, le=19)
    """Scheduling priority of the embedded Ray head and everything it starts (runs' jobs
    and workers): higher is lower priority, so a training run leaves the API responsive."""
    docs: bool = False
    """Serve the interactive API docs at ``/api/docs`` (``redfl serve --docs``)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty (the default) turns CORS off."""
    max_concurrent_runs: int = Field(default=1, ge=1, le=1000)
    """How many runs execute at once; the others wait in the queue."""
    ray_num_cpus: int | None = Field(default=None, ge=1, le=100_000)
    """CPUs of the embedded Ray head (default: Ray's, all of the machine's)."""
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """OTLP/HTTP endpoint for traces (``http://host:4318``); ``None``: no tracing."""
    serving_replica_cpus: float = Field(default=1.0, gt=0, le=256)
    """CPUs each replica of a served model reserves."""
    serving_max_replicas: int = Field(default=4, ge=1, le=1024)
    """The most replicas one deployment may ask for."""
    serving_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How long joining the cluster, and a prediction, may take."""
    sites_listen: str = "127.0.0.1:8443"
    """Where a run with ``runtime = "sites"`` serves its sites (mutual TLS, ``host:port``):
    the platform sets the run's ``[sites] listen`` to it."""
    sites_server_url: str = "https://127.0.0.1:8443"
    """The URL sites reach those runs at, written into each site's credential bundle."""
    sites_server_names: tuple[str, ...] = ("127.0.0.1", "localhost")
    """The addresses and DNS names of the server's TLS certificate, when the platform creates
    its federation home (``<data>/sites``)."""
    user_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """How long an authenticated request trusts a user's row (role, existence) read by an
    earlier request; changes through this server's API apply at once, others within this
    bound. 0: read the user on every request."""

    edge_deployments: dict[str, EdgeDeploymentSetting] = Field(default_factory=dict)
    """The edge deployments whose jobs the platform submits, lists and aborts, by name
    (``[edge_deployments.main] url = "https://edge:8443" credential = "operator.json"``);
    empty (the default): no edge jobs."""
    edge_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """How long a request to an edge server may take (connecting included)."""

    @field_validator("edge_deployments")
    @classmethod
    def _edge_names(cls, value: dict[str, EdgeDeploymentSetting]) -> Any:
        for name in value:
            if not re.fullmatch(EDGE_NAME, name):
                raise ValueError(f"not a deployment name (letters, digits, '_.-'): {name!r}")
        return value

    @field_validator("allowed_packages", "option_limits")
    @classmethod
    def _names(cls, value: Any, info: ValidationInfo) -> Any:
        pattern, what = NAME_RULES[str(info.field_name)]
        for name in value:
            if not re.fullmatch(pattern, name):
                raise ValueError(f"not {what}: {name!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the entry
        return value

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(("http://", "https://")):
            return value  # the cluster's job server
        RunConfig(address=value)  # the CLI's own rule for an address
        return value

    @property
    def url(self) -> str:
        """The database URL in effect."""
        return self.database_url or sqlite_url(self.data_dir)

    @field_validator("sites_listen")
    @classmethod
    def _sites_listen(cls, value: str) -> str:
        try:  # the [sites] table's own rule
            SitesConfig(listen=value, expected=["site"])
        except ValidationError as error:
            raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @field_validator("sites_server_url")
    @classmethod
    def _sites_url(cls, value: str) -> str:
        return check_server_url(value)

    @property
    def sites_home(self) -> Path:
        """The platform's federation home (its CA, its server certificate, its sites)."""
        return self.data_dir / "sites"

    @property
    def runs_dir(self) -> Path:
        """Where run folders are created."""
        return self.data_dir / "runs"

    @property
    def client_packages(self) -> tuple[str, ...]:
        """Every package web configs may name: the bundled examples and the operator's."""
        return (BUNDLED_PACKAGE, *self.allowed_packages)

    @classmethod
    def load(cls, data_dir: str | Path, **overrides: Any) -> Settings:
        """Settings from ``<data_dir>/platform.toml`` (if present) and ``overrides``
        (``None`` values ignored)."""
        path = Path(data_dir) / SETTINGS_FILE
        values: dict[str, Any] = {}
        if path.exists():
            try:
                values = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
                raise SettingsError(f"{path}: cannot read settings: {error}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(data_dir)
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise SettingsError(f"{path}: {describe_errors(error)}") from None


IGNORE_ALL = "# The redfl platform's data (store, secrets, runs): never commit it.\n*\n"


def ensure_data_dir(data_dir: str | Path) -> Path:
    """Create the data folder (mode 0700: it holds the store and the secret) if missing,
    with a ``.gitignore`` that ignores all of it (it holds secrets: a data folder inside a
    git checkout is never committed by accident)."""
    folder = Path(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text(IGNORE_ALL, encoding="utf-8")
    return folder


def load_or_create_secret(data_dir: str | Path) -> bytes:
    """The JWT signing key of ``data_dir``, created (64 random bytes, mode 0600) on first use.

    Raises
    ------
    SettingsError
        If the existing file is readable by group or others, or is too short.
    """
    path = ensure_data_dir(data_dir) / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    key = secrets.token_bytes(64)
    with os.fdopen(fd, "w", encoding="ascii") as stream:
        stream.write(key.hex() + "\n")
    return key


def _read_secret(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SettingsError(
            f"{path}: mode {mode:04o} lets others read the JWT secret; run 'chmod 600 {path}'"
        )
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SettingsError(f"{path}: the JWT secret is not hexadecimal text") from None
    if len(key) < 32:
        raise SettingsError(f"{path}: the JWT secret must hold at least 32 bytes")
    return key
