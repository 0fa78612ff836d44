"""User code by import path (``module:attribute``), and an allow-list for untrusted configs.

A config names code to import: ``client.target``, ``strategy.target``,
``evaluation.central``. A config from an untrusted user (the platform) may only name
modules under allow-listed prefixes; :func:`check_import_allowed` decides from the text
alone, before anything is imported, and :func:`check_config_imports` applies it to every
import path of a config (every field marked as one, see :data:`IMPORT_TARGET`).

Examples
--------
>>> check_import_allowed("redfl.examples.digits:DigitsClient", ["redfl.examples"])
('redfl.examples.digits', 'DigitsClient')
>>> check_import_allowed("redfl.examplesX:C", ["redfl.examples"])
Traceback (most recent call last):
...
redfl.core.imports.ImportNotAllowedError: 'redfl.examplesX:C': module redfl.examplesX is not under an allowed prefix (redfl.examples)
"""  # noqa: E501

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from redfl.core.config import IMPORT_TARGET, ConfigError

__all__ = [
    "IMPORT_TARGET",
    "ImportNotAllowedError",
    "check_config_imports",
    "check_import_allowed",
    "import_targets",
    "marked_fields",
    "parse_target",
    "resolve",
]

_NAME = re.compile(r"[A-Za-z_]\w*\Z")


class ImportNotAllowedError(ConfigError):
    """An import path that is malformed or outside the allow-list; nothing was imported."""


def parse_target(target: str) -> tuple[str, str]:
    """Split ``"package.module:attribute"`` into its module and attribute.

    Raises
    ------
    ImportNotAllowedError
        For a relative module (``.mod``), an empty or non-identifier part, or a missing
        or repeated ``:``.
    """
    if not isinstance(target, str) or target.count(":") != 1:
        raise ImportNotAllowedError(f"{target!r}: an import path must be 'module:attribute'")
    module, attribute = target.split(":")
    if module.startswith("."):
        raise ImportNotAllowedError(f"{target!r}: relative modules are not allowed")
    if not all(_NAME.match(part) for part in module.split(".")) or not _NAME.match(attribute):
        raise ImportNotAllowedError(
            f"{target!r}: module and attribute must be dotted Python identifiers"
        )
    return module, attribute


def check_import_allowed(target: str, allowed_prefixes: Sequence[str]) -> tuple[str, str]:
    """Check ``target`` against the allow-list without importing anything.

    A module is allowed when it equals a prefix or lies under it on a dot boundary:
    prefix ``redfl.examples`` allows ``redfl.examples`` and ``redfl.examples.digits``,
    not ``redfl.examplesX``.

    Returns
    -------
    (module, attribute):
        The parsed target.

    Raises
    ------
    ImportNotAllowedError
        If the target is malformed or its module is under none of the prefixes.
    """
    module, attribute = parse_target(target)
    prefixes = [p.strip(".") for p in allowed_prefixes]
    for prefix in prefixes:
        if not prefix or not all(_NAME.match(part) for part in prefix.split(".")):
            raise ValueError(f"allowed prefix {prefix!r} is not a dotted module name")
        if module == prefix or module.startswith(prefix + "."):
            return module, attribute
    raise ImportNotAllowedError(
        f"{target!r}: module {module} is not under an allowed prefix ({', '.join(prefixes)})"
    )


def resolve(target: str, field: str, allowed_prefixes: Sequence[str] | None = None) -> Any:
    """Import ``module:attribute``, checked against ``allowed_prefixes`` first when given.

    Raises
    ------
    ConfigError
        Naming ``field``: a target not allowed (nothing imported), or one that fails to
        import.
    """
    try:
        if allowed_prefixes is None:
            module, attribute = parse_target(target)
        else:
            module, attribute = check_import_allowed(target, allowed_prefixes)
    except ImportNotAllowedError as error:
        raise ImportNotAllowedError(f"{field}: {error}") from None
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{field}: cannot import {target!r}: {error}") from None


def marked_fields(config: BaseModel, marker: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(dotted field, value)`` of a config whose field is marked with ``marker`` in
    its ``json_schema_extra`` (``"import_target"``, ``"server_file"``) and holds a string,
    in field order; nested tables (and lists and dicts of them) are searched too."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        where = f"{prefix}{info.alias or name}"
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(marker) and isinstance(value, str):
            yield where, value
        yield from _nested(value, where, marker)


def _nested(value: Any, where: str, marker: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, BaseModel):
        yield from marked_fields(value, marker, where + ".")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _nested(item, f"{where}[{i}]", marker)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(item, f"{where}.{key}", marker)


def import_targets(config: BaseModel) -> Iterator[tuple[str, str]]:
    """Every ``(dotted field, import path)`` a config holds, in field order (the fields
    marked :data:`IMPORT_TARGET`)."""
    return marked_fields(config, "import_target")


def check_config_imports(config: BaseModel, allowed_prefixes: Sequence[str]) -> list[str]:
    """Check every import path of a validated config against the allow-list.

    Nothing is imported. Returns the checked targets; raises on the first one refused.

    Raises
    ------
    ImportNotAllowedError
        ``invalid config: <field>: ...`` naming the field, the target and the prefixes.
    """
    checked = []
    for where, target in import_targets(config):
        try:
            check_import_allowed(target, allowed_prefixes)
        except ImportNotAllowedError as error:
            raise ImportNotAllowedError(f"invalid config: {where}: {error}") from None
        checked.append(target)
    return checked
