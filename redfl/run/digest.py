"""The digest of a config (what a checkpoint was made with) and the fields two configs differ in.

Resuming a run must use the config that made its checkpoint, up to the fields that do not
change results (:data:`NOT_IN_DIGEST`):

- ``federation.name``: the run folder's name;
- ``federation.rounds``: how many rounds to run; the first rounds do not depend on it, so
  a resumed run may go further than the first one meant to;
- ``federation.runtime``, ``federation.address`` and ``federation.connect_timeout``: where
  it runs (``ray`` and ``local`` give the same bits);
- ``federation.checkpoint_every``: how often the state is saved;
- ``resources.placement_strategy`` and ``resources.client_state_mb``: where workers go and
  when client state spills to disk;
- ``sites.home``, ``sites.listen`` and ``sites.join_timeout``: how the server reaches the
  sites (``sites.expected``, the clients' node ids, stays in);
- ``[tracking]``: where the run is also logged (MLflow, TensorBoard, W&B).

The number and sizing of workers (the rest of ``[resources]``) stays in: workers'
partial sums fold in worker order, so another split can change the last bits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from redfl.run.config import FederationConfig

NOT_IN_DIGEST: tuple[str, ...] = (
    "federation.name",
    "federation.rounds",
    "federation.runtime",
    "federation.address",
    "federation.connect_timeout",
    "federation.checkpoint_every",
    "resources.placement_strategy",
    "resources.client_state_mb",
    "sites.home",
    "sites.listen",
    "sites.join_timeout",
)
"""Dotted fields that do not change a run's results."""
NOT_IN_DIGEST_TABLES: tuple[str, ...] = ("tracking",)
"""Tables none of whose fields change a run's results."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level of dotted keys (an empty table stays a value).

    Examples
    --------
    >>> flatten({"client": {"num_clients": 4, "options": {"lr": 0.1}}, "seed": 0, "x": {}})
    {'client.num_clients': 4, 'client.options.lr': 0.1, 'seed': 0, 'x': {}}
    """
    if not (isinstance(value, dict) and value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_fields(config: FederationConfig) -> dict[str, Any]:
    """Every field of ``config`` (defaults included) by its dotted path, JSON values."""
    return flatten(config.model_dump(mode="json", by_alias=True))


OPTIONAL_TABLES: tuple[str, ...] = ("secure_aggregation",)
"""Tables whose absence (``None``) leaves no field: a config without one has the digest it
had before the table existed, so its checkpoints still resume."""


def digest_fields(config: FederationConfig, everything: bool = False) -> dict[str, Any]:
    """Every field of ``config`` by its dotted path, as the digest reads them (without
    :data:`NOT_IN_DIGEST` and :data:`NOT_IN_DIGEST_TABLES` unless ``everything``; an absent
    optional table has none)."""
    dumped = config.model_dump(mode="json", by_alias=True)
    for table in OPTIONAL_TABLES:
        if dumped.get(table) is None:
            dumped.pop(table, None)
    flat = flatten(dumped)
    if everything:
        return flat
    return {
        k: v
        for k, v in flat.items()
        if k not in NOT_IN_DIGEST and k.split(".", 1)[0] not in NOT_IN_DIGEST_TABLES
    }


def config_digest(config: FederationConfig) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` without :data:`NOT_IN_DIGEST`.

    Canonical: every field (defaults included) by its dotted path, sorted, floats as their
    shortest repr; two configs that validate to the same values have the same digest.
    """
    text = json.dumps(digest_fields(config, False), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_diff(a: FederationConfig, b: FederationConfig, *, everything: bool = False) -> list[str]:
    """The dotted fields whose values differ between ``a`` and ``b``, sorted.

    Fields of :data:`NOT_IN_DIGEST` are left out unless ``everything``; a key present in
    one config only (a strategy parameter, a client option) counts as different.

    Examples
    --------
    >>> base = {"client": {"target": "m:C", "num_clients": 4}}
    >>> a = FederationConfig.model_validate(base)
    >>> b = FederationConfig.model_validate({**base, "federation": {"seed": 1, "rounds": 3}})
    >>> config_diff(a, b), config_diff(a, b, everything=True)
    (['federation.seed'], ['federation.rounds', 'federation.seed'])
    """
    left, right = digest_fields(a, everything), digest_fields(b, everything)

    def text(fields: dict[str, Any], key: str) -> str | None:
        return json.dumps(fields[key], sort_keys=True) if key in fields else None

    return sorted(k for k in left.keys() | right.keys() if text(left, k) != text(right, k))
