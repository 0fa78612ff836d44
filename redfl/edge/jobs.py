"""Edge jobs: the job file's fields, and a job built from them (the user's device class, its
options, the initial model and the server-side evaluation).

A job names the code its devices run, ``client = "MODULE:CLASS"``: a class with the same
``Client`` interface as any client (:class:`redfl.nodes.client.Client`: ``fit(parameters,
config)`` runs on the device and returns the new parameters, the examples used and metrics).
``options`` are given to the class as in a run config (validated by its ``Options`` pydantic
model when it has one, which fills in the defaults), on the server and on every device. The
initial model is the class's ``initial_parameters(options)``, or a safetensors file
(``initial_parameters``, read where the job is read: the submitting command sends its
arrays). ``evaluate = "MODULE:FUNCTION"`` is built like a run config's
``evaluation.central``: ``FUNCTION(options)`` returns ``evaluate(parameters) -> (loss,
metrics)``, run on the server on every new version, its figures recorded. ``config`` goes to
the device's ``fit`` with every task (as a strategy's fit config would), beside ``round``,
which is the model version the task trains from.

The built-in examples are :mod:`redfl.examples.edge` (``DigitsDevice``, ``NumericDevice``).
Both import fields are marked :data:`~redfl.core.config.IMPORT_TARGET` and the file field
:data:`~redfl.core.config.SERVER_FILE`, so a submission from an untrusted source can be
checked against an allow-list before anything is imported.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file

from redfl.core.config import (
    IMPORT_TARGET,
    SERVER_FILE,
    TARGET_PATTERN,
    ConfigError,
    Strict,
    describe_errors,
    node_options,
)
from redfl.core.imports import check_config_imports
from redfl.core.result import EvaluateFn
from redfl.edge.fedbuff import FedBuffConfig
from redfl.edge.protocol import ConfigValue, Name
from redfl.edge.selection import SelectionConfig
from redfl.edge.wire import Limits
from redfl.nodes.client import Client
from redfl.run.build import (
    central_evaluation,
    client_class,
    initial_parameters_of,
)

__all__ = ["BuiltJob", "JobSpec", "build_job", "check_arrays", "read_job_file", "read_json"]

Arrays = dict[str, np.ndarray]


class JobSpec(Strict):
    """An edge job (a JSON file: ``redfl edge jobs submit JOB``).

    FedBuff's and selection's fields are documented on :class:`FedBuffConfig` and
    :class:`SelectionConfig`. Against poisoning, every update is weighted by at most
    ``max_samples_per_update`` samples (one device claiming ``num_samples = 2**31`` counts
    as that many) and, with ``clip_norm``, scaled down to that L2 norm before its LCP folds
    it.
    """

    name: Name = "edge-job"
    client: str = Field(pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET)
    """``MODULE:CLASS``: the device code (a ``Client``)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Given to the class, on the server and on every device."""
    initial_parameters: str | None = Field(
        default=None, min_length=1, json_schema_extra=SERVER_FILE
    )
    """A safetensors file of the initial model (else the class's
    ``initial_parameters(options)``); relative to the job file."""
    evaluate: str | None = Field(
        default=None, pattern=TARGET_PATTERN, json_schema_extra=IMPORT_TARGET
    )
    """``MODULE:FUNCTION``: ``FUNCTION(options)`` returns ``evaluate(parameters) -> (loss,
    metrics)``, run on every new version."""
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    """Sent with every task to the device's ``fit`` (``round`` is the task's version)."""
    num_updates_for_model: int = Field(50, ge=1)
    max_model_version: int = Field(20, ge=1)
    max_model_history: int = Field(3, ge=0)
    global_lr: float = Field(1.0, gt=0, allow_inf_nan=False)
    staleness_weight: bool = True
    device_selection_size: int = Field(50, ge=1)
    min_hole_to_fill: int = Field(1, ge=1)
    device_reuse: bool = True
    device_timeout: float = Field(30.0, gt=0, allow_inf_nan=False)
    selection_method: Literal["balanced", "random"] = "balanced"
    seed: int = 0
    max_samples_per_update: int = Field(1_000, ge=1, le=2**31)
    """The weight one update can carry: a larger ``num_samples`` counts as this many."""
    clip_norm: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Each update is scaled down to this L2 norm (over all its arrays) at the LCP."""

    def limits(self) -> Limits:
        """What LCPs enforce on each device update."""
        return Limits(max_samples_per_update=self.max_samples_per_update, clip_norm=self.clip_norm)

    def fedbuff(self) -> FedBuffConfig:
        """FedBuff's parameters."""
        return FedBuffConfig(
            self.num_updates_for_model,
            self.max_model_version,
            self.max_model_history,
            self.global_lr,
            self.staleness_weight,
        )

    def selection(self) -> SelectionConfig:
        """Selection's parameters."""
        return SelectionConfig(
            self.device_selection_size,
            self.min_hole_to_fill,
            self.device_reuse,
            self.device_timeout,
            self.selection_method,
            self.seed,
        )


def check_arrays(arrays: object, where: str) -> Arrays:
    """``arrays`` as float32 arrays, if it is a non-empty mapping of names to finite float
    arrays.

    Raises
    ------
    ConfigError
        Naming ``where`` and the first array at fault.
    """
    if not isinstance(arrays, dict) or not arrays:
        raise ConfigError(f"{where}: expected a non-empty mapping of names to float arrays")
    out: Arrays = {}
    for name, array in arrays.items():
        value = np.asarray(array)
        if not isinstance(name, str) or value.dtype.kind not in "fiu":
            raise ConfigError(f"{where}: {name!r} must be a named array of numbers")
        if not np.isfinite(value).all():
            raise ConfigError(f"{where}: {name!r} holds a NaN or infinite value")
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def read_json(path: Path) -> object:
    """The JSON value of a file.

    Raises
    ------
    ConfigError
        Naming the file: unreadable, or not JSON.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def read_job_file(path: Path) -> tuple[JobSpec, Arrays | None]:
    """Read a job file and, when it names ``initial_parameters``, that safetensors file
    (relative to the job file); the spec comes back without that field.

    Raises
    ------
    ConfigError
        Naming the file (and the field): unreadable, not JSON, a bad value, a model file
        that is missing or is not safetensors of float arrays.
    """
    data = read_json(path)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from None
    if spec.initial_parameters is None:
        return spec, None
    model = Path(path).parent / spec.initial_parameters
    try:
        arrays = load_file(str(model))
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"{path}: initial_parameters: {model}: {exc}") from None
    checked = check_arrays(arrays, f"{path}: initial_parameters: {model}")
    return spec.model_copy(update={"initial_parameters": None}), checked


@dataclass(frozen=True)
class BuiltJob:
    """A job ready to run: its spec and what its fields resolve to.

    Attributes
    ----------
    spec : JobSpec
        The job.
    template : type
        The device class.
    options : dict
        The options as the class validated them (defaults filled in), JSON-ready: what
        devices get.
    initial : dict[str, np.ndarray]
        Version 0 of the model (float32).
    evaluate : EvaluateFn | None
        The server-side evaluation.
    """

    spec: JobSpec
    template: type[Any]
    options: dict[str, Any]
    initial: Arrays
    evaluate: EvaluateFn | None


def build_job(
    spec: JobSpec,
    model: Arrays | None = None,
    allowed_prefixes: Sequence[str] | None = None,
) -> BuiltJob:
    """Resolve a job: import its class (and evaluation), validate its options, make its
    initial model (``model`` when given, else the class's ``initial_parameters``).

    ``allowed_prefixes``, when given, is the allow-list of modules a job may import:
    both import fields are checked before anything is imported.

    Raises
    ------
    ConfigError
        Naming the field: not allowed, not importable, not a ``Client``, an option the
        class refuses, no initial model, or an evaluation that refuses the options.
    """
    if spec.initial_parameters is not None:
        raise ConfigError(
            "initial_parameters: a file is read where the job file is (send its arrays)"
        )
    if allowed_prefixes is not None:
        check_config_imports(spec, allowed_prefixes)
    template = client_class(spec.client, "client", allowed_prefixes)
    if not issubclass(template, Client):
        raise ConfigError(f"client: {spec.client} is not a redfl Client (fit on devices)")
    options = node_options(template, spec.options, "options")
    dumped = options.model_dump(mode="json") if hasattr(options, "model_dump") else options
    try:
        json.dumps(dumped)
    except (TypeError, ValueError):
        raise ConfigError("options: must be JSON values (they travel to the devices)") from None
    if model is None:
        model = initial_parameters_of(template, options, "client")
    initial = check_arrays(model, "initial parameters")
    evaluate = None
    if spec.evaluate is not None:
        evaluate = central_evaluation(spec.evaluate, options, "evaluate", allowed_prefixes)
    return BuiltJob(spec, template, dict(dumped), initial, evaluate)
