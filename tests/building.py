"""Build a federation from a config as ``redfl run`` does, typed as the schema it must be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redfl.run.build import federation_from_config
from redfl.run.config import FederationConfig
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.star import StarFederation


def star_from_config(
    config: FederationConfig, allowed_prefixes: Sequence[str] | None = None, **kw: Any
) -> StarFederation:
    """The star (or hierarchical) federation ``config`` describes."""
    federation = federation_from_config(config, allowed_prefixes=allowed_prefixes, **kw)
    assert isinstance(federation, StarFederation), type(federation)
    return federation


def decentralized_from_config(config: FederationConfig) -> DecentralizedFederation:
    """The decentralised federation ``config`` describes."""
    federation = federation_from_config(config)
    assert isinstance(federation, DecentralizedFederation), type(federation)
    return federation
