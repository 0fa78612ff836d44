"""The ``[strategy]``, ``[privacy]``, ``[attack]`` and ``[topology]`` tables of a config.

Names (strategies, attacks, schemas, algorithms) are checked against the registries of
:mod:`redfl.core.registries`, never against a list kept here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from redfl.core.config_base import IMPORT_TARGET, TARGET_PATTERN, Strict, registered

StrategyParam = bool | int | float | str
"""The type of a strategy's own parameter in the ``[strategy]`` table."""


class StrategyConfig(Strict):
    """The strategy (by registered ``name``, or a class by ``target``), its sampling of
    clients and its own parameters.

    Keys other than the declared ones (``f = 2``, ``eta = 0.01``, ...) are the strategy's
    parameters; they are checked against it when the federation is built (``redfl
    strategies`` lists the registered ones'; a ``target`` class's ``__init__`` says its own).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "fedavg"
    target: str | None = Field(
        default=None, pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET
    )
    fraction_fit: float = Field(default=1.0, ge=0.0, le=1.0)
    min_fit_clients: int | None = Field(default=None, ge=1)
    fraction_evaluate: float = Field(default=0.0, ge=0.0, le=1.0)
    min_evaluate_clients: int = Field(default=0, ge=0)
    max_update_norm: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return registered("STRATEGIES", value)

    @model_validator(mode="after")
    def _scalar_params(self) -> StrategyConfig:
        if self.target is not None and "name" in self.model_fields_set:
            raise ValueError("give 'name' (a registered strategy) or 'target', not both")
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, StrategyParam):
                raise ValueError(f"strategy.{key} must be a number, string or boolean")
        return self

    def params(self) -> dict[str, StrategyParam]:
        """The strategy's own parameters (the undeclared keys)."""
        return dict(self.model_extra or {})


class PrivacyConfig(Strict):
    """Central differential privacy (``mode = "fixed"`` or ``"adaptive"`` clipping)."""

    mode: Literal["none", "fixed", "adaptive"] = "none"
    side: Literal["server", "client"] = "server"
    clipping_norm: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    noise_multiplier: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    target_quantile: float = Field(default=0.5, gt=0.0, lt=1.0)
    clip_lr: float = Field(default=0.2, gt=0.0, allow_inf_nan=False)
    clipped_count_stddev: float = Field(default=2.0, ge=0.0, allow_inf_nan=False)


class AttackConfig(Strict):
    """Attack simulation: which attack (a registered kind), and the seeded fraction of
    malicious clients."""

    kind: str = "none"
    malicious_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    scale: float = Field(default=10.0, gt=0.0, allow_inf_nan=False)
    std: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    num_classes: int = Field(default=10, ge=2)
    z: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return registered("ATTACKS", value, also=("none",))

    @model_validator(mode="after")
    def _fraction_with_kind(self) -> AttackConfig:
        if self.kind == "none" and self.malicious_fraction > 0:
            raise ValueError("malicious_fraction > 0 needs an attack kind")
        if self.kind != "none" and self.malicious_fraction == 0:
            raise ValueError(f"attack kind {self.kind!r} needs malicious_fraction > 0")
        return self


TREE_KEYS = (
    "tree_file",
    "depth",
    "width",
    "lcps",
    "clients_per_lcp",
    "leaf_strategy",
    "leaf_params",
    "min_coverage",
    "pin",
)
"""``[topology]`` keys of a relay-tree schema (the schemas that use them list them in
``SchemaSpec.allows``)."""


class TopologyConfig(Strict):
    """The schema (star, or a decentralised graph) and, for a graph, its algorithm.

    ``client.target`` then names the node class (a subclass of the base the algorithm
    registers, e.g. ``GossipNode``) and ``client.num_clients`` the number of nodes;
    ``topology_file`` (custom) is an adjacency-matrix CSV. A hierarchy reads its relay tree
    from ``tree_file`` (``redfl tree``'s ``tree.json``) or builds it from ``depth``,
    ``width`` and ``lcps``; ``clients_per_lcp`` (default: spread evenly), a robust
    ``leaf_strategy`` with its ``leaf_params``, ``min_coverage`` and the sites to ``pin``.
    """

    schema_: str = Field(default="star", alias="schema")
    algorithm: str | None = None
    k: int | None = Field(default=None, ge=1, le=100_000)
    topology_file: str | None = Field(default=None, min_length=1)
    directed: bool = False
    allow_disconnected: bool = False
    topology_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    tree_file: str | None = Field(default=None, min_length=1)
    depth: int | None = Field(default=None, ge=1, le=5)
    width: int | None = Field(default=None, ge=1, le=9)
    lcps: int | None = Field(default=None, ge=1, le=9)
    clients_per_lcp: int | None = Field(default=None, ge=1, le=1_000_000)
    leaf_strategy: str | None = None
    leaf_params: dict[str, StrategyParam] = Field(default_factory=dict)
    min_coverage: float | None = Field(default=None, gt=0.0, le=1.0)
    """Hierarchical only: the fraction of a round's sampled clients whose updates must
    arrive (default 0.5)."""
    pin: list[str] = Field(default_factory=list, max_length=10_000)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: str) -> str:
        return registered("SCHEMAS", value)

    @field_validator("leaf_strategy")
    @classmethod
    def _leaf_strategy(cls, value: str | None) -> str | None:
        return None if value is None else registered("STRATEGIES", value)

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, value: str | None) -> str | None:
        return None if value is None else registered("ALGORITHMS", value)

    @model_validator(mode="after")
    def _consistent(self) -> TopologyConfig:
        from redfl.core.registries import ALGORITHMS, SCHEMAS

        schema = self.schema_
        spec = SCHEMAS.get(schema)
        self._tree_keys(spec.allows)
        if not spec.graph:
            if self.algorithm is not None:
                raise ValueError(f"'algorithm' is for decentralised schemas, not {schema!r}")
            return self
        if self.algorithm is None:
            raise ValueError(f"schema {schema!r} needs an algorithm: {ALGORITHMS.choices()}")
        for key, unset in (("k", None), ("topology_file", None), ("directed", False)):
            users = [n for n, s in SCHEMAS.items() if key in s.requires + s.allows]
            named = " or ".join(repr(n) for n in users)
            if key in spec.requires and getattr(self, key) is unset:
                raise ValueError(f"'{key}' is required with schema {named}, and only used there")
            if key not in spec.requires + spec.allows and getattr(self, key) is not unset:
                if key == "directed":
                    raise ValueError(
                        f"'directed' applies to schema {named} (a custom matrix says itself)"
                    )
                raise ValueError(f"'{key}' is required with schema {named}, and only used there")
        allowed = ALGORITHMS.meta(self.algorithm).get("schemas")
        if allowed is not None and schema not in allowed:
            needs = ALGORITHMS.meta(self.algorithm).get("needs", f"schema {allowed}")
            raise ValueError(f"algorithm {self.algorithm!r} needs {needs}, not schema {schema!r}")
        return self

    def _tree_keys(self, allowed: tuple[str, ...]) -> None:
        """The keys of a hierarchy: only with a schema that allows them; a tree from
        ``tree_file`` or from all of ``depth``, ``width``, ``lcps``."""
        from redfl.core.registries import SCHEMAS

        fields = type(self).model_fields
        for key in TREE_KEYS:
            default = fields[key].get_default(call_default_factory=True)
            if getattr(self, key) != default and key not in allowed:
                users = " or ".join(repr(n) for n, s in SCHEMAS.items() if key in s.allows)
                raise ValueError(f"'{key}' is only used with schema {users}, not {self.schema_!r}")
        if "tree_file" not in allowed:
            return
        shape = [getattr(self, k) is not None for k in ("depth", "width", "lcps")]
        if (self.tree_file is None) != all(shape) or (any(shape) and not all(shape)):
            raise ValueError(
                f"schema {self.schema_!r} needs either 'tree_file' or all of 'depth', 'width' "
                "and 'lcps' (LCPs per leaf relay)"
            )
