"""Build a :class:`StarFederation` from a validated :class:`FederationConfig`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from redfl.algorithms.fedavg import FedAvg
from redfl.core.config import ConfigError, FederationConfig, describe_errors
from redfl.schemas.callbacks import Callback
from redfl.schemas.star import StarFederation


def resolve(target: str, field: str) -> Any:
    """Import ``module:attribute``; a failure is a :class:`ConfigError` naming ``field``."""
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{field}: cannot import {target!r}: {error}") from None


def client_options(config: FederationConfig, client: Any) -> Any:
    """The client options, validated by the client's ``Options`` model when it has one."""
    schema = getattr(client, "Options", None)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(config.client.options)
        except ValidationError as error:
            raise ConfigError(
                f"invalid config: {describe_errors(error, 'client.options')}"
            ) from None
    return dict(config.client.options)


def star_from_config(
    config: FederationConfig, callbacks: Sequence[Callback] = ()
) -> StarFederation:
    """A ready (not started) star federation described by ``config``.

    The client class must provide ``initial_parameters(options)``; the optional central
    evaluation is ``evaluation.central(options)``.
    """
    client = resolve(config.client.target, "client.target")
    options = client_options(config, client)
    make_initial = getattr(client, "initial_parameters", None)
    if make_initial is None:
        raise ConfigError(
            f"client.target: {config.client.target} has no initial_parameters(options)"
        )
    evaluate_fn = None
    if config.evaluation.central:
        try:
            evaluate_fn = resolve(config.evaluation.central, "evaluation.central")(options)
        except ValueError as error:
            raise ConfigError(f"evaluation.central: {error}") from None
    s = config.strategy
    strategy = FedAvg(
        fraction_fit=s.fraction_fit,
        min_fit_clients=s.min_fit_clients,
        fraction_evaluate=s.fraction_evaluate,
        min_evaluate_clients=s.min_evaluate_clients,
    )
    run = config.federation
    raw_options = options.model_dump() if isinstance(options, BaseModel) else options
    return StarFederation(
        client,
        config.client.num_clients,
        initial_parameters=make_initial(options),
        strategy=strategy,
        client_options=raw_options,
        roles=config.client.roles,
        evaluate_fn=evaluate_fn,
        callbacks=callbacks,
        seed=run.seed,
        runtime=run.runtime,
        address=run.address,
        resources=config.resources,
    )
