"""Deployment records: what ``redfl model serve`` deployed, kept where it was deployed from.

Each served model has a folder ``<home>/<name>/`` (mode 0700), ``home`` being
``$REDFL_MODELS_HOME`` or ``~/.redfl/models``:

* ``deployment.json``: the :class:`DeploymentRecord` (the run folder, the URL, the Ray
  cluster, the serving options, the tokens issued and which are revoked);
* ``signing-key.pem`` (mode 0600): the deployment's token signing key;
* ``token`` (mode 0600): the token printed when it was deployed;
* ``model.safetensors`` (mode 0600): the model as deployed, so that a later change (new
  settings, revoked tokens) redeploys the same model even if its run folder changed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from redfl.core.config import ConfigError, Strict, describe_errors

__all__ = [
    "DEFAULT_HOME",
    "HOME_VARIABLE",
    "KEY_FILE",
    "MODEL_FILE",
    "NAME_PATTERN",
    "RAY_TOKEN_FILE",
    "RECORD_FILE",
    "TOKEN_FILE",
    "DeploymentRecord",
    "DeploymentStore",
    "TokenEntry",
]

HOME_VARIABLE = "REDFL_MODELS_HOME"
"""The environment variable naming the records' folder."""
DEFAULT_HOME = Path("~/.redfl/models")
"""The records' folder when :data:`HOME_VARIABLE` is unset."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A deployment's name: its Ray Serve application and its URL prefix."""
RECORD_FILE = "deployment.json"
KEY_FILE = "signing-key.pem"
TOKEN_FILE = "token"
MODEL_FILE = "model.safetensors"
RAY_TOKEN_FILE = "ray-token"
"""The token of the Ray instance a deployment runs on, when redfl chose it (the serving
process's embedded instance, or the warm head): other processes join it with this."""


class TokenEntry(Strict):
    """A token issued for a deployment: its id, expiry (Unix seconds), whether revoked."""

    id: str
    expires_at: float
    revoked: bool = False


class DeploymentRecord(Strict):
    """What was deployed, where, and its tokens.

    ``embedded`` deployments live on the Ray instance that the serving process (``pid``)
    started: they end with it.
    """

    name: str = Field(pattern=NAME_PATTERN)
    run: str
    """The run folder it was deployed from."""
    client: dict[str, Any]
    """``{"target": "module:Class", "options": {...}}``: the class that trained the model."""
    url: str | None
    """Where it answers HTTP requests (``None``: only from inside the cluster)."""
    address: str
    """The Ray cluster it runs on (the GCS address another process joins)."""
    embedded: bool
    pid: int
    created: float
    options: dict[str, Any]
    """The serving options it was deployed with (:class:`redfl.run.serving.ServeOptions`)."""
    tokens: tuple[TokenEntry, ...] = ()

    def revoked(self, now: float) -> tuple[str, ...]:
        """Ids of revoked tokens that have not expired yet (expired ones are refused
        anyway)."""
        return tuple(t.id for t in self.tokens if t.revoked and t.expires_at > now)


class DeploymentStore:
    """The deployment records under one folder.

    Parameters
    ----------
    home:
        The folder (default ``$REDFL_MODELS_HOME`` or ``~/.redfl/models``); created on the
        first deployment, mode 0700.
    """

    def __init__(self, home: str | Path | None = None) -> None:
        chosen = home if home is not None else os.environ.get(HOME_VARIABLE) or DEFAULT_HOME
        self.home = Path(chosen).expanduser()

    def folder(self, name: str) -> Path:
        """The folder of deployment ``name``."""
        return self.home / name

    def exists(self, name: str) -> bool:
        """Whether a record of ``name`` exists."""
        return (self.folder(name) / RECORD_FILE).is_file()

    def check_free(self, name: str) -> None:
        """Refuse a name in use.

        Raises
        ------
        ConfigError
            If a deployment of that name is recorded (or being made).
        """
        if self.folder(name).exists():
            raise ConfigError(
                f"name: a deployment named {name} exists in {self.home} "
                f"(stop it first: redfl model stop {name})"
            )

    def create(self, name: str) -> Path:
        """Make the (empty, mode 0700) folder of a new deployment ``name``.

        Raises
        ------
        ConfigError
            If a deployment of that name is recorded (or being made).
        """
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.check_free(name)
        folder = self.folder(name)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made in the meantime
            self.check_free(name)
        return folder

    def save(self, record: DeploymentRecord) -> None:
        """Write ``record`` (replacing the previous one at once)."""
        self._write(record.name, RECORD_FILE, record.model_dump_json(indent=2).encode(), 0o644)

    def load(self, name: str) -> DeploymentRecord:
        """The record of ``name``.

        Raises
        ------
        ConfigError
            If there is none, or it cannot be read.
        """
        path = self.folder(name) / RECORD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"no deployment named {name} in {self.home} (recorded: {known})"
            ) from None
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error}") from None
        try:
            return DeploymentRecord.model_validate_json(text)
        except ValidationError as error:
            raise ConfigError(f"{path}: {describe_errors(error)}") from None

    def names(self) -> list[str]:
        """The recorded deployments' names, sorted."""
        if not self.home.is_dir():
            return []
        return sorted(p.parent.name for p in self.home.glob(f"*/{RECORD_FILE}"))

    def records(self) -> list[DeploymentRecord]:
        """Every readable record, by name."""
        return [self.load(name) for name in self.names()]

    def remove(self, name: str) -> None:
        """Delete the folder of ``name`` (no error when it is gone)."""
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def write_secret(self, name: str, filename: str, data: bytes) -> Path:
        """Write ``data`` to ``filename`` in the folder of ``name``, mode 0600."""
        return self._write(name, filename, data, 0o600)

    def read_secret(self, name: str, filename: str) -> bytes:
        """The bytes of ``filename`` in the folder of ``name``.

        Raises
        ------
        ConfigError
            If it is missing.
        """
        path = self.folder(name) / filename
        try:
            return path.read_bytes()
        except OSError as error:
            raise ConfigError(f"deployment {name}: cannot read {path}: {error}") from None

    def _write(self, name: str, filename: str, data: bytes, mode: int) -> Path:
        """Write through a temporary file created with ``mode``, then rename it over."""
        path = self.folder(name) / filename
        partial = path.with_name(f".{filename}.partial")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(partial, path)
        return path
