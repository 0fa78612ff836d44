"""What server and sites say to each other: JSON for structure, safetensors for arrays.

A site belongs to another organisation, so nothing it sends is unpickled: every message is
one *frame*, an 8-byte little-endian length, that many bytes of a JSON object (the header),
then a safetensors blob holding the message's arrays (possibly none). A header is validated
by a strict model (types, bounds, no unknown keys) and a blob by safetensors itself (offsets
inside the buffer, dtype and shape agreeing with the bytes); only bool, int, uint and float
arrays are accepted. The server sets the size of every body a site may send before reading
it (:mod:`redfl.runtime.sites.service`); :func:`read_frame` then bounds the header.

Messages:

- :class:`Welcome` (server -> site, JSON only): who the site is in this run (its node id,
  index, the number of nodes, roles, the seed and the run's id) and its session token;
- :class:`Task` (server -> site): fit or evaluate the global parameters with the round's
  instructions (already merged with the client's own); the parameters' blob is made once
  per round and shared by every site's frame (:class:`Broadcast`);
- :class:`FitReply` and :class:`EvaluateReply` (site -> server): the client's answer, or
  the reason it failed. The server checks a fit reply exactly as a worker checks a client's
  fit (:func:`redfl.runtime.star_runner.check_fit`), so a NaN or a wrong shape is the same
  failure as in simulation.

Examples
--------
>>> import numpy as np
>>> from redfl.core.instructions import Instructions
>>> shared = Broadcast({"w": np.arange(3, dtype=np.float32)})
>>> task = Task("fit", "job-1", "site-a", Instructions.make(2, {"lr": 0.1}), shared.parameters)
>>> back = read_task(b"".join(task_frame(task, shared)))
>>> back.node_id, back.instructions.round, back.instructions["lr"], back.parameters["w"]
('site-a', 2, 0.1, array([0., 1., 2.], dtype=float32))
>>> reply = read_reply(reply_frame(FitReply("job-1", True, {"w": np.ones(3, np.float32)}, 12)))
>>> reply.ok, reply.num_examples, reply.parameters["w"]
(True, 12, array([1., 1., 1.], dtype=float32))
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
import safetensors.numpy
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from redfl.core.arrays import Parameters
from redfl.core.config import describe_errors
from redfl.core.instructions import Instructions
from redfl.core.roles import Role

VERSION = 1
"""The version of the messages (every header carries it)."""
MAX_HEADER_BYTES = 1 << 20
"""The largest JSON header a frame may have."""
MAX_REASON_CHARS = 4000
"""A failure reason longer than this is cut (by the site) or refused (by the server)."""
ARRAY_KINDS = "biuf"
"""The dtype kinds an array on the wire may have: bool, int, uint, float."""

Kind = Literal["fit", "evaluate"]


class WireError(ValueError):
    """A frame or message is malformed; the message says what is wrong."""


# -- frames ------------------------------------------------------------------------------
def frame(header: Mapping[str, Any], blob: bytes) -> list[bytes]:
    """The chunks of a frame: the header's length, the header, the arrays' blob."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return [len(text).to_bytes(8, "little"), text, blob]


def arrays_blob(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The safetensors blob of ``arrays`` (C-contiguous little-endian copies if needed).

    Raises
    ------
    WireError
        For an array whose dtype is not bool, int, uint or float.
    """
    ready: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        value = np.asarray(array)
        if value.dtype.kind not in ARRAY_KINDS:
            raise WireError(f"array {name!r} has dtype {value.dtype}; allowed: bool, int, float")
        ready[name] = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
    return safetensors.numpy.save(ready)


def read_frame(body: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of a frame.

    Raises
    ------
    WireError
        If the frame is cut, its header is too long, not a JSON object, or the blob is not
        safetensors of bool, int, uint or float arrays.
    """
    if len(body) < 8:
        raise WireError(f"a frame has at least 8 bytes, got {len(body)}")
    size = int.from_bytes(body[:8], "little")
    if size > MAX_HEADER_BYTES or 8 + size > len(body):
        raise WireError(f"the header length {size} does not fit the frame of {len(body)} bytes")
    try:
        header = json.loads(body[8 : 8 + size])
    except (ValueError, RecursionError) as error:
        raise WireError(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise WireError(f"the header is a JSON {type(header).__name__}, not an object")
    rest = body[8 + size :]
    try:
        arrays = safetensors.numpy.load(bytes(rest)) if rest else {}
    except Exception as error:  # safetensors raises its own error types
        raise WireError(f"the arrays are not safetensors: {error}") from None
    for name, array in arrays.items():
        if array.dtype.kind not in ARRAY_KINDS:
            raise WireError(f"array {name!r} has dtype {array.dtype}; allowed: bool, int, float")
    return header, arrays


def validated(cls: type[BaseModel], header: dict[str, Any], what: str) -> Any:
    """``header`` validated by ``cls``.

    Raises
    ------
    WireError
        ``malformed <what>: ...`` naming every bad field.
    """
    try:
        return cls.model_validate(header)
    except ValidationError as error:
        raise WireError(f"malformed {what}: {describe_errors(error)}") from None


class WireModel(BaseModel):
    """The base of every message header: strict types, no unknown keys, the version."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]


Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Metrics = dict[Name, float]


# -- the welcome -------------------------------------------------------------------------
@dataclass(frozen=True)
class Welcome:
    """What a site learns when it joins: its session and its client's place in the run.

    Attributes
    ----------
    session:
        The token its later requests carry (with its certificate).
    run:
        The run's federation id (a new one: the site builds its client afresh).
    seed, index, num_nodes, node_id, roles:
        Its client's context, as a simulated client of the same config has it.
    poll_seconds:
        How long the server holds a poll before answering "no work".
    """

    session: str
    run: str
    seed: int
    index: int
    num_nodes: int
    node_id: str
    roles: tuple[Role, ...]
    poll_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The welcome as a JSON object."""
        return {
            "v": VERSION,
            "session": self.session,
            "run": self.run,
            "seed": self.seed,
            "index": self.index,
            "num_nodes": self.num_nodes,
            "node_id": self.node_id,
            "roles": list(self.roles),
            "poll_seconds": self.poll_seconds,
        }


class _WelcomeModel(WireModel):
    session: str = Field(min_length=1, max_length=200)
    run: str = Field(min_length=1, max_length=200)
    seed: int
    index: int = Field(ge=0)
    num_nodes: int = Field(ge=1)
    node_id: Name
    roles: list[Role] = Field(min_length=1, max_length=3)
    poll_seconds: float = Field(gt=0)


def read_welcome(body: Any) -> Welcome:
    """A welcome from its JSON object.

    Raises
    ------
    WireError
        If it is malformed.
    """
    if not isinstance(body, dict):
        raise WireError("the welcome is not a JSON object")
    model = validated(_WelcomeModel, body, "welcome")
    return Welcome(
        model.session,
        model.run,
        model.seed,
        model.index,
        model.num_nodes,
        model.node_id,
        tuple(model.roles),
        model.poll_seconds,
    )


# -- tasks -------------------------------------------------------------------------------
class Broadcast:
    """The global parameters of a round, with their safetensors blob made once.

    The backend's ``put``: every site's task frame of the round shares the blob.
    """

    def __init__(self, parameters: Parameters) -> None:
        self.parameters = parameters

    @cached_property
    def blob(self) -> bytes:
        """The parameters as safetensors."""
        return arrays_blob(self.parameters)


@dataclass(frozen=True)
class Task:
    """Work for one site: fit or evaluate its client on the global parameters."""

    kind: Kind
    job: str
    node_id: str
    instructions: Instructions
    parameters: Parameters


def task_frame(task: Task, shared: Broadcast | None = None) -> list[bytes]:
    """The chunks of ``task``'s frame (``shared``: the parameters' blob, made once).

    Raises
    ------
    WireError
        If an instruction's value cannot travel as JSON (an array, an object).
    """
    header = {
        "v": VERSION,
        "kind": task.kind,
        "job": task.job,
        "node_id": task.node_id,
        "instructions": instructions_json(task.instructions),
    }
    blob = shared.blob if shared is not None else arrays_blob(task.parameters)
    return frame(header, blob)


class _TaskModel(WireModel):
    kind: Kind
    job: str = Field(min_length=1, max_length=200)
    node_id: Name
    instructions: dict[str, Any]


def read_task(body: bytes) -> Task:
    """A task from its frame (read by a site, from the server it verified).

    Raises
    ------
    WireError
        If it is malformed.
    """
    return task_of(*read_frame(body))


def task_of(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Task:
    """A task from its frame's header and arrays (:func:`read_frame`).

    Raises
    ------
    WireError
        If it is malformed.
    """
    model = validated(_TaskModel, header, "task")
    instructions = read_instructions(model.instructions)
    for array in arrays.values():
        array.flags.writeable = False  # as on a simulated worker: clients cannot alter it
    return Task(model.kind, model.job, model.node_id, instructions, arrays)


def instructions_json(instructions: Instructions) -> dict[str, Any]:
    """Instructions as JSON (non-finite floats marked, numpy scalars as numbers).

    Raises
    ------
    WireError
        If an extra value is not a number, string, bool, ``None`` or a list or dict of
        them.
    """
    typed = {
        "round": instructions.round,
        "phase": instructions.phase,
        "learning_rate": instructions.learning_rate,
        "proximal_mu": instructions.proximal_mu,
        "local_epochs": instructions.local_epochs,
    }
    body: dict[str, Any] = _plain({**typed, "extra": dict(instructions.extra)}, "instructions")
    return body


def _plain(value: Any, path: str) -> Any:
    if isinstance(value, np.generic) and value.dtype.kind in ARRAY_KINDS:
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise WireError(f"{path} is a {type(value).__name__}; a site receives JSON values only")


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$float"), str):
            return float(value["$float"])
        return {k: _unplain(v) for k, v in value.items()}
    return value


def read_instructions(body: dict[str, Any]) -> Instructions:
    """Instructions from :func:`instructions_json`'s object.

    Raises
    ------
    WireError
        If a field is missing or invalid.
    """
    values = _unplain(body)
    try:
        return Instructions(
            values["round"],
            values["phase"],
            values["learning_rate"],
            values["proximal_mu"],
            values["local_epochs"],
            values["extra"],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"malformed instructions: {type(error).__name__}: {error}") from None


# -- replies -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FitReply:
    """A site's answer to a fit task: its client's update, or why it failed."""

    job: str
    ok: bool
    parameters: Parameters = field(default_factory=dict)
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class EvaluateReply:
    """A site's answer to an evaluate task: loss, examples and metrics, or why it failed."""

    job: str
    ok: bool
    loss: float = 0.0
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


Reply = FitReply | EvaluateReply


class _ReplyModel(WireModel):
    kind: Kind
    job: str = Field(min_length=1, max_length=200)
    ok: bool
    num_examples: int | None = None
    loss: float | None = None
    metrics: Metrics = Field(default_factory=dict, max_length=1000)
    reason: str | None = Field(default=None, min_length=1, max_length=MAX_REASON_CHARS)


def reply_frame(reply: Reply) -> bytes:
    """The frame of a site's reply (a failure reason is cut to
    :data:`MAX_REASON_CHARS`)."""
    header: dict[str, Any] = {
        "v": VERSION,
        "kind": "fit" if isinstance(reply, FitReply) else "evaluate",
        "job": reply.job,
        "ok": reply.ok,
    }
    arrays: Mapping[str, np.ndarray] = {}
    if not reply.ok:
        header["reason"] = (reply.reason or "(no reason)")[:MAX_REASON_CHARS]
    elif isinstance(reply, FitReply):
        header.update(num_examples=reply.num_examples, metrics=reply.metrics)
        arrays = reply.parameters
    else:
        header.update(loss=reply.loss, num_examples=reply.num_examples, metrics=reply.metrics)
    return b"".join(frame(header, arrays_blob(arrays)))


def read_reply(body: bytes) -> Reply:
    """A site's reply from its frame; a success has what its kind needs.

    Raises
    ------
    WireError
        If it is malformed: not a frame, unknown keys, wrong types, a success without its
        examples (or loss), a failure without its reason or with arrays.
    """
    header, arrays = read_frame(body)
    model = validated(_ReplyModel, header, "reply")
    if not model.ok:
        if model.reason is None or arrays or model.num_examples is not None:
            raise WireError("malformed reply: a failure has a reason and nothing else")
        if model.kind == "fit":
            return FitReply(model.job, False, reason=model.reason)
        return EvaluateReply(model.job, False, reason=model.reason)
    if model.num_examples is None or model.reason is not None:
        raise WireError("malformed reply: a success has num_examples and no reason")
    if model.kind == "fit":
        if model.loss is not None:
            raise WireError("malformed reply: a fit reply has no loss")
        return FitReply(model.job, True, arrays, model.num_examples, dict(model.metrics))
    if model.loss is None or arrays:
        raise WireError("malformed reply: an evaluate reply has a loss and no arrays")
    return EvaluateReply(model.job, True, model.loss, model.num_examples, dict(model.metrics))
