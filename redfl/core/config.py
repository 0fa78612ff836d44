"""What every config table shares: the error type, strictness and one-line error messages.

The tables themselves live with what they configure: ``[strategy]`` in
:mod:`redfl.algorithms.registry`, ``[privacy]`` in :mod:`redfl.privacy.clipping`,
``[attack]`` in :mod:`redfl.attacks.registry`, ``[resources]`` in
:mod:`redfl.runtime.resources`, each schema's ``[topology]`` with its schema, and the whole
config (:class:`~redfl.run.config.FederationConfig`) in :mod:`redfl.run.config`. A bad value
raises :class:`ConfigError` whose message names the field (dotted path) and what is allowed;
:func:`describe_errors` is the one place that words pydantic's errors so.

Examples
--------
>>> from pydantic import Field, ValidationError
>>> class Table(Strict):
...     rounds: int = Field(ge=1)
>>> try:
...     Table.model_validate({"rounds": 0, "round": 1})
... except ValidationError as error:
...     print(describe_errors(error, "federation"))
federation.rounds: Input should be greater than or equal to 1 (got 0); federation.round: unknown key
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from redfl.core.registry import quote_choices

TARGET_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
"""An import path ``module:attribute`` (absolute module, one attribute name)."""

IMPORT_TARGET: dict[str, Any] = {"import_target": True}
"""``json_schema_extra`` marking a config field whose value is an import path (checked
against the allow-list of :func:`redfl.core.imports.check_config_imports`)."""

SERVER_FILE: dict[str, Any] = {"server_file": True}
"""``json_schema_extra`` marking a config field whose value is a path on the machine that
runs the federation (an untrusted config may not name one)."""

SECRET_FIELDS = frozenset({"password", "secret", "token", "refresh_token"})
"""Field names whose values an error message never repeats (a config's, or a platform
request's)."""


M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or value is wrong; the message is one line naming the field."""


class Strict(BaseModel):
    """Base of the config tables: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line naming each bad field (dotted path) and what is allowed.

    Parameters
    ----------
    error:
        What pydantic raised.
    prefix:
        The dotted path of the validated table in its config (``"client.options"``).

    A tag that matches no member of a discriminated union reads as a bad value of the
    field the union is told apart by (``topology.schema: Input should be 'star' or ...``);
    the value of a secret field (a password) is never repeated.
    """
    parts = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        where = ".".join(p for p in (prefix, *loc) if p != "") or "config"
        context = item.get("ctx") or {}
        if item["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        elif item["type"] == "union_tag_invalid":
            field = str(context.get("discriminator", "")).strip("'()")
            expected = [t.strip(" '") for t in str(context.get("expected_tags", "")).split(",")]
            tag = context.get("tag")
            parts.append(
                f"{where}.{field}: Input should be {quote_choices(expected)} (got {tag!r})"
            )
        else:
            message = item["msg"].removeprefix("Value error, ")
            got: Any = item.get("input")
            if isinstance(got, dict | list):
                shown = ""
            elif bool(loc) and loc[-1] in SECRET_FIELDS:
                shown = " (got a hidden value)"
            else:
                shown = f" (got {_shown(got)})"
            parts.append(f"{where}: {message}{shown}")
    return "; ".join(parts)


def load_toml(path: Path, model: type[M], label: str) -> M:
    """Read the TOML file ``path`` into ``model``.

    Raises
    ------
    ConfigError
        One line starting with ``label`` (the file as the user named it): the file is
        missing or unreadable, is not TOML, or a field is bad (named with its path).
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{label}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{label}: {describe_errors(exc)}") from None


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters and safe to encode (a lone surrogate shows as
    its escape)."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class OptionsError(ConfigError):
    """Node options their class's ``Options`` model refuses; ``field`` names the first."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def node_options(template: Any, options: Mapping[str, Any], where: str) -> Any:
    """A node class's options as its ``Options`` model validates them (with defaults filled
    in), or a plain dict of them when the class has no such model.

    Raises
    ------
    OptionsError
        ``invalid config: <where>.<field>: ...`` naming each bad option; its ``field`` is the
        first one's dotted path.
    """
    model = getattr(template, "Options", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        try:
            return model.model_validate(dict(options))
        except ValidationError as error:
            first = ".".join([where, *(str(p) for p in error.errors()[0]["loc"])])
            raise OptionsError(first, f"invalid config: {describe_errors(error, where)}") from None
    return dict(options)
