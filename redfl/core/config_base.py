"""What every config table shares: the error type, strictness, and one-line error messages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from redfl.core import registries
from redfl.core.registry import quote_choices

TARGET_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
"""An import path ``module:attribute`` (absolute module, one attribute name)."""

IMPORT_TARGET: dict[str, Any] = {"import_target": True}
"""``json_schema_extra`` marking a config field whose value is an import path (checked
against the allow-list of :func:`redfl.core.imports.check_config_imports`)."""


class ConfigError(ValueError):
    """A config file or value is wrong; the message is one line naming the field."""


class Strict(BaseModel):
    """Base of the config tables: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def registered(concept: str, name: str, *, also: tuple[str, ...] = ()) -> str:
    """Return ``name`` if the ``concept`` registry (or ``also``) holds it.

    The registries are read lazily (their modules are imported on first use), so core
    does not import the layers that fill them at import time.

    Raises
    ------
    ValueError
        ``Input should be 'a', 'b' or 'c'``, listing the allowed names.
    """
    registry = getattr(registries, concept)
    if name in also or name in registry:
        return name
    raise ValueError(f"Input should be {quote_choices([*also, *registry.names()])}")


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line naming each bad field and what is allowed."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "") or "config"
        if item["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            message = item["msg"].removeprefix("Value error, ")
            got: Any = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            parts.append(f"{where}: {message}{shown}")
    return "; ".join(parts)
