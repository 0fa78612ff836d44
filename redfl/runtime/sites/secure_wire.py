"""The four stages of secure aggregation on the sites' wire: typed task and reply frames.

Under ``[secure_aggregation]`` the server asks a site for four things a round, each a
frame of :mod:`redfl.runtime.sites.wire` (a strict JSON header, a safetensors blob):

- ``secure_fit`` (server -> site): fit the global parameters (the blob) with the round's
  instructions and the update policy, and start the protocol with its public parameters
  (the ``[secure_aggregation]`` table, the round's client ids, the public seed, the site's
  own id, the parameters' order, which lays out the masked vector): the site rebuilds the
  round's :class:`~redfl.privacy.secagg.SecAggConfig` from them. Its reply holds the
  client's folded metrics and its two public keys; its update stays at the site.
- ``share_keys``: the neighbours' public keys; the reply holds one ciphertext per
  neighbour (shares sealed with a key the server does not have).
- ``mask_inputs``: the ciphertexts addressed to the site; the reply's blob holds the masked
  vector (``masked``: unsigned integers modulo ``2^m``) and nothing else.
- ``unmask``: which neighbours survived and which dropped; the reply holds the shares
  the protocol lets the server see (the site's client refuses to reveal both shares of one
  neighbour).

Every header is validated by a strict model before use (types, id ranges, key and
ciphertext sizes, list lengths); a failure reply has its reason and nothing else. A reply
never names its round or client: the server fills in the ones it asked, so a site cannot
speak for another client.

Examples
--------
>>> from redfl.privacy.secagg import NeighbourKeys, KeyAdvertisement
>>> advert = KeyAdvertisement(3, 7, bytes(32), bytes(range(32)))
>>> task = StageTask("share_keys", "job-2", "site-a", 3, 5, NeighbourKeys(3, 5, (advert,)))
>>> back = read_secure_task(b"".join(stage_task_frame(task)))
>>> back.message == task.message, back.client
(True, 5)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from redfl.algorithms.updates import UpdatePolicy
from redfl.core.arrays import Parameters
from redfl.core.config import describe_errors
from redfl.core.instructions import Instructions
from redfl.privacy.secagg import (
    EncryptedShare,
    KeyAdvertisement,
    NeighbourKeys,
    RoutedShares,
    SecureAggregationConfig,
    ShareBundle,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.config import MAX_ID
from redfl.privacy.secagg.keys import KEY_BYTES
from redfl.privacy.secagg.shamir import ELEMENT_BYTES, Share
from redfl.runtime.sites.wire import (
    MAX_REASON_CHARS,
    VERSION,
    Broadcast,
    EvaluateReply,
    FitReply,
    Metrics,
    Name,
    Reply,
    Task,
    WireError,
    WireModel,
    arrays_blob,
    frame,
    instructions_json,
    read_frame,
    read_instructions,
    reply_frame,
    task_of,
    validated,
)

SecureKind = Literal["secure_fit", "share_keys", "mask_inputs", "unmask"]
"""The task kinds of a secure round, in order."""
StageKind = Literal["share_keys", "mask_inputs", "unmask"]
"""The stages after the fit."""
SECURE_KINDS: tuple[str, ...] = ("secure_fit", "share_keys", "mask_inputs", "unmask")
"""The kinds :func:`read_secure_task` reads."""

MAX_ITEMS = 100_000
"""The most keys, shares or ids one message may list."""
MAX_CLIENTS = 1_000_000
"""The most clients a round's public parameters may list."""
MAX_CIPHERTEXT_BYTES = 4096
"""The largest encrypted share (a share of a 32-byte key and seed is about 200 bytes)."""
MAX_SECRET_BYTES = 256
"""The largest secret a revealed share may be of (keys and seeds have 32 bytes)."""
MASKED = "masked"
"""The name of the masked vector in a ``mask_inputs`` reply's blob."""

Id = Annotated[int, Field(ge=0, le=MAX_ID)]
Encoded = Annotated[str, StringConstraints(min_length=1, max_length=4 * MAX_CIPHERTEXT_BYTES)]
KeyText = Annotated[str, StringConstraints(min_length=44, max_length=44)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: str, what: str, size: int | None = None, most: int | None = None) -> bytes:
    """Base64 ``text`` as bytes, of exactly ``size`` or at most ``most`` bytes.

    Raises
    ------
    WireError
        If it is not base64 or has another size.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"malformed {what}: not base64") from None
    if size is not None and len(data) != size:
        raise WireError(f"malformed {what}: {len(data)} bytes, expected {size}")
    if most is not None and len(data) > most:
        raise WireError(f"malformed {what}: {len(data)} bytes, more than {most}")
    return data


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- server -> site ----------------------------------------------------------------------
@dataclass(frozen=True)
class SecureFitTask:
    """Fit the site's client and start its secure aggregation.

    Attributes
    ----------
    job, node_id, instructions, parameters:
        As a fit :class:`~redfl.runtime.sites.wire.Task` (instructions merged with the
        client's own).
    policy:
        The update policy the site applies (clipping, norm bound, equal weights).
    table:
        The ``[secure_aggregation]`` settings.
    clients:
        The round's client ids, sorted.
    seed:
        The public seed of the round's graph (32 bytes).
    client:
        The id of the site's client among ``clients``.
    """

    job: str
    node_id: str
    instructions: Instructions
    parameters: Parameters
    policy: UpdatePolicy
    table: SecureAggregationConfig
    clients: tuple[int, ...]
    seed: bytes
    client: int

    @property
    def round(self) -> int:
        """The round."""
        return self.instructions.round


StageMessage = NeighbourKeys | RoutedShares | UnmaskRequest
"""What the server sends a client after a stage."""


@dataclass(frozen=True)
class StageTask:
    """The server's message of one stage for the site's client (``client``)."""

    kind: StageKind
    job: str
    node_id: str
    round: int
    client: int
    message: StageMessage


SecureTask = SecureFitTask | StageTask


class _Policy(_Part):
    max_update_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    clip_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    equal_weights: bool = False


class _Key(_Part):
    client: Id
    cipher_key: KeyText
    mask_key: KeyText


class _Sealed(_Part):
    peer: Id
    ciphertext: Encoded


class _TaskModel(WireModel):
    kind: SecureKind
    job: str = Field(min_length=1, max_length=200)
    node_id: Name
    round: Id
    client: Id
    instructions: dict[str, Any] | None = None
    policy: _Policy | None = None
    table: dict[str, Any] | None = None
    clients: list[Id] | None = Field(default=None, min_length=2, max_length=MAX_CLIENTS)
    seed: KeyText | None = None
    names: list[Name] | None = Field(default=None, max_length=MAX_ITEMS)
    keys: list[_Key] | None = Field(default=None, max_length=MAX_ITEMS)
    shares: list[_Sealed] | None = Field(default=None, max_length=MAX_ITEMS)
    survivors: list[Id] | None = Field(default=None, max_length=MAX_ITEMS)
    dropped: list[Id] | None = Field(default=None, max_length=MAX_ITEMS)
    survivor_count: int | None = Field(default=None, ge=1, le=MAX_CLIENTS)


def secure_fit_frame(task: SecureFitTask, shared: Broadcast | None = None) -> list[bytes]:
    """The chunks of ``task``'s frame (``shared``: the parameters' blob, made once)."""
    policy = task.policy
    header = {
        "v": VERSION,
        "kind": "secure_fit",
        "job": task.job,
        "node_id": task.node_id,
        "round": task.round,
        "client": task.client,
        "instructions": instructions_json(task.instructions),
        "policy": {
            "max_update_norm": policy.max_update_norm,
            "clip_norm": policy.clip_norm,
            "equal_weights": policy.equal_weights,
        },
        "table": task.table.model_dump(mode="json"),
        "clients": list(task.clients),
        "seed": _b64(task.seed),
        "names": list(task.parameters),
    }
    blob = shared.blob if shared is not None else arrays_blob(task.parameters)
    return frame(header, blob)


def stage_task_frame(task: StageTask) -> list[bytes]:
    """The chunks of a stage task's frame (JSON only)."""
    header: dict[str, Any] = {
        "v": VERSION,
        "kind": task.kind,
        "job": task.job,
        "node_id": task.node_id,
        "round": task.round,
        "client": task.client,
    }
    message = task.message
    if isinstance(message, NeighbourKeys):
        header["keys"] = [
            {"client": k.client, "cipher_key": _b64(k.cipher_key), "mask_key": _b64(k.mask_key)}
            for k in message.keys
        ]
    elif isinstance(message, RoutedShares):
        header["shares"] = [
            {"peer": s.sender, "ciphertext": _b64(s.ciphertext)} for s in message.shares
        ]
    else:
        header["survivors"] = sorted(message.survivors)
        header["dropped"] = sorted(message.dropped)
        header["survivor_count"] = message.survivor_count
    return frame(header, b"")


_FIELDS: dict[str, frozenset[str]] = {
    "secure_fit": frozenset({"instructions", "policy", "table", "clients", "seed", "names"}),
    "share_keys": frozenset({"keys"}),
    "mask_inputs": frozenset({"shares"}),
    "unmask": frozenset({"survivors", "dropped", "survivor_count"}),
}
_OPTIONAL = frozenset().union(*_FIELDS.values())


def read_secure_task(body: bytes) -> SecureTask:
    """A secure round's task from its frame (read by a site).

    Raises
    ------
    WireError
        If it is malformed: a field of another kind, a missing one, a bad key, seed,
        ciphertext or table, arrays where none belong.
    """
    return secure_task_of(*read_frame(body))


def secure_task_of(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> SecureTask:
    """A secure round's task from its frame's header and arrays (:func:`read_frame`).

    Raises
    ------
    WireError
        As :func:`read_secure_task`.
    """
    model = validated(_TaskModel, header, "secure task")
    given = {name for name in _OPTIONAL if getattr(model, name) is not None}
    if given != _FIELDS[model.kind]:
        raise WireError(
            f"malformed secure task: a task of kind {model.kind} has "
            f"{sorted(_FIELDS[model.kind])}, got {sorted(given)}"
        )
    if model.kind == "secure_fit":
        return _secure_fit(model, arrays)
    if arrays:
        raise WireError(f"malformed secure task: a task of kind {model.kind} has no arrays")
    rnd, client = model.round, model.client
    message: StageMessage
    if model.kind == "share_keys":
        message = NeighbourKeys(rnd, client, tuple(_advert(rnd, key) for key in model.keys))
    elif model.kind == "mask_inputs":
        shares = tuple(
            EncryptedShare(s.peer, client, _ciphertext(s.ciphertext)) for s in model.shares
        )
        message = RoutedShares(rnd, client, shares)
    else:
        message = UnmaskRequest(
            rnd, client, frozenset(model.survivors), frozenset(model.dropped), model.survivor_count
        )
    return StageTask(model.kind, model.job, model.node_id, rnd, client, message)


def read_any_task(body: bytes) -> Task | SecureTask:
    """A task of any kind from its frame: a secure round's, or a plain fit or evaluate.

    Raises
    ------
    WireError
        If it is malformed.
    """
    header, arrays = read_frame(body)
    if header.get("kind") in SECURE_KINDS:
        return secure_task_of(header, arrays)
    return task_of(header, arrays)


def _secure_fit(model: _TaskModel, arrays: dict[str, np.ndarray]) -> SecureFitTask:
    instructions = read_instructions(model.instructions or {})
    if instructions.round != model.round:
        raise WireError(
            f"malformed secure task: round {model.round}, instructions of {instructions.round}"
        )
    try:
        table = SecureAggregationConfig.model_validate(model.table)
    except ValidationError as error:
        raise WireError(f"malformed secure task: table: {describe_errors(error)}") from None
    clients = tuple(model.clients or ())
    if list(clients) != sorted(set(clients)) or model.client not in clients:
        raise WireError(
            "malformed secure task: the clients are not sorted and distinct, or do not "
            f"include the site's client {model.client}"
        )
    names = list(model.names or ())
    if sorted(names) != sorted(arrays):
        raise WireError(
            f"malformed secure task: the parameters are {sorted(arrays)[:5]}, the order names "
            f"{sorted(names)[:5]}"
        )
    policy = model.policy or _Policy()
    for array in arrays.values():
        array.flags.writeable = False
    return SecureFitTask(
        model.job,
        model.node_id,
        instructions,
        {name: arrays[name] for name in names},  # the server's order: the vector's layout
        UpdatePolicy(policy.max_update_norm, policy.clip_norm, policy.equal_weights),
        table,
        clients,
        _bytes(model.seed or "", "seed", KEY_BYTES),
        model.client,
    )


def _advert(rnd: int, key: _Key) -> KeyAdvertisement:
    cipher = _bytes(key.cipher_key, "cipher_key", KEY_BYTES)
    return KeyAdvertisement(rnd, key.client, cipher, _bytes(key.mask_key, "mask_key", KEY_BYTES))


def _ciphertext(text: str) -> bytes:
    return _bytes(text, "ciphertext", most=MAX_CIPHERTEXT_BYTES)


# -- site -> server ----------------------------------------------------------------------
@dataclass(frozen=True)
class SecureFitReply:
    """A site's answer to ``secure_fit``: its client's metrics folded as a worker folds
    them (``metric_sums``: examples times value; ``metric_examples``), the policy's counters
    and its client's public keys (raw X25519), or why it failed."""

    job: str
    ok: bool
    metric_sums: dict[str, float] = field(default_factory=dict)
    metric_examples: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    cipher_key: bytes = b""
    mask_key: bytes = b""
    reason: str | None = None


StageAnswer = ShareBundle | np.ndarray | UnmaskReply
"""A stage's answer: the encrypted shares, the masked vector, the revealed shares."""


@dataclass(frozen=True, eq=False)
class StageResponse:
    """A site's answer to a stage, or why its client could not answer.

    The :class:`~redfl.privacy.secagg.ShareBundle` and
    :class:`~redfl.privacy.secagg.UnmaskReply` read from a frame carry round and client
    ``-1``: the server puts in the ones it asked.
    """

    kind: StageKind
    job: str
    ok: bool
    answer: StageAnswer | None = None
    reason: str | None = None


SecureReply = SecureFitReply | StageResponse


class _Revealed(_Part):
    owner: Id
    x: int = Field(ge=1, le=MAX_ID + 1)
    values: Encoded
    length: int = Field(ge=1, le=MAX_SECRET_BYTES)


class _ReplyModel(WireModel):
    kind: SecureKind
    job: str = Field(min_length=1, max_length=200)
    ok: bool
    reason: str | None = Field(default=None, min_length=1, max_length=MAX_REASON_CHARS)
    metric_sums: Metrics | None = Field(default=None, max_length=1000)
    metric_examples: dict[Name, Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=1000
    )
    stats: Metrics | None = Field(default=None, max_length=1000)
    cipher_key: KeyText | None = None
    mask_key: KeyText | None = None
    shares: list[_Sealed] | None = Field(default=None, max_length=MAX_ITEMS)
    seed_shares: list[_Revealed] | None = Field(default=None, max_length=MAX_ITEMS)
    key_shares: list[_Revealed] | None = Field(default=None, max_length=MAX_ITEMS)


_REPLY_FIELDS: dict[str, frozenset[str]] = {
    "secure_fit": frozenset({"metric_sums", "metric_examples", "stats", "cipher_key", "mask_key"}),
    "share_keys": frozenset({"shares"}),
    "mask_inputs": frozenset(),
    "unmask": frozenset({"seed_shares", "key_shares"}),
}
_REPLY_OPTIONAL = frozenset().union(*_REPLY_FIELDS.values())


def secure_reply_frame(reply: SecureReply) -> bytes:
    """The frame of a site's reply (a failure reason is cut to :data:`MAX_REASON_CHARS`).

    Raises
    ------
    WireError
        If the masked vector is not an array of unsigned integers.
    """
    kind = "secure_fit" if isinstance(reply, SecureFitReply) else reply.kind
    header: dict[str, Any] = {"v": VERSION, "kind": kind, "job": reply.job, "ok": reply.ok}
    arrays: dict[str, np.ndarray] = {}
    if not reply.ok:
        header["reason"] = (reply.reason or "(no reason)")[:MAX_REASON_CHARS]
    elif isinstance(reply, SecureFitReply):
        header.update(
            metric_sums=reply.metric_sums,
            metric_examples=reply.metric_examples,
            stats=reply.stats,
            cipher_key=_b64(reply.cipher_key),
            mask_key=_b64(reply.mask_key),
        )
    elif isinstance(reply.answer, ShareBundle):
        header["shares"] = [
            {"peer": s.recipient, "ciphertext": _b64(s.ciphertext)} for s in reply.answer.shares
        ]
    elif isinstance(reply.answer, UnmaskReply):
        header["seed_shares"] = _revealed(reply.answer.seed_shares)
        header["key_shares"] = _revealed(reply.answer.key_shares)
    else:
        vector = reply.answer
        if not isinstance(vector, np.ndarray) or vector.dtype.kind != "u":
            raise WireError("a masked input is an array of unsigned integers")
        arrays[MASKED] = vector
    return b"".join(frame(header, arrays_blob(arrays)))


def any_reply_frame(reply: Reply | SecureReply) -> bytes:
    """The frame of a site's reply of any kind.

    Raises
    ------
    WireError
        If the reply's arrays cannot travel.
    """
    if isinstance(reply, FitReply | EvaluateReply):
        return reply_frame(reply)
    return secure_reply_frame(reply)


def failed_reply(
    about: Task | SecureTask | Reply | SecureReply, reason: str
) -> Reply | SecureReply:
    """The failure reply (``reason``) of the task or reply ``about``."""
    if isinstance(about, FitReply) or (isinstance(about, Task) and about.kind == "fit"):
        return FitReply(about.job, False, reason=reason)
    if isinstance(about, Task | EvaluateReply):
        return EvaluateReply(about.job, False, reason=reason)
    if isinstance(about, SecureFitTask | SecureFitReply):
        return SecureFitReply(about.job, False, reason=reason)
    return StageResponse(about.kind, about.job, False, reason=reason)


def _revealed(shares: Mapping[int, Share]) -> list[dict[str, Any]]:
    return [
        {"owner": owner, "x": s.x, "values": _b64(s.to_bytes()), "length": s.length}
        for owner, s in sorted(shares.items())
    ]


def read_secure_reply(body: bytes) -> SecureReply:
    """A site's reply to a secure round's task, from its frame.

    Raises
    ------
    WireError
        If it is malformed: unknown keys, wrong types, bad key or share sizes, fields of
        another kind, a failure with anything but its reason, a masked reply whose blob is
        not one array of unsigned integers.
    """
    header, arrays = read_frame(body)
    model = validated(_ReplyModel, header, "secure reply")
    given = {name for name in _REPLY_OPTIONAL if getattr(model, name) is not None}
    if not model.ok:
        if model.reason is None or given or arrays:
            raise WireError("malformed secure reply: a failure has a reason and nothing else")
        if model.kind == "secure_fit":
            return SecureFitReply(model.job, False, reason=model.reason)
        return StageResponse(model.kind, model.job, False, reason=model.reason)
    if model.reason is not None or given != _REPLY_FIELDS[model.kind]:
        raise WireError(
            f"malformed secure reply: a success of kind {model.kind} has "
            f"{sorted(_REPLY_FIELDS[model.kind])} and no reason, got {sorted(given)}"
        )
    if model.kind != "mask_inputs" and arrays:
        raise WireError(f"malformed secure reply: a reply of kind {model.kind} has no arrays")
    if model.kind == "secure_fit":
        return SecureFitReply(
            model.job,
            True,
            dict(model.metric_sums or {}),
            dict(model.metric_examples or {}),
            dict(model.stats or {}),
            _bytes(model.cipher_key or "", "cipher_key", KEY_BYTES),
            _bytes(model.mask_key or "", "mask_key", KEY_BYTES),
        )
    answer: StageAnswer
    if model.kind == "share_keys":
        shares = tuple(
            EncryptedShare(-1, s.peer, _ciphertext(s.ciphertext)) for s in model.shares or ()
        )
        answer = ShareBundle(-1, -1, shares)
    elif model.kind == "unmask":
        answer = UnmaskReply(
            -1, -1, _shares(model.seed_shares or []), _shares(model.key_shares or [])
        )
    else:
        vector = arrays.get(MASKED)
        if set(arrays) != {MASKED} or vector is None or vector.dtype.kind != "u":
            raise WireError(
                f"malformed secure reply: a masked input is one array {MASKED!r} of unsigned "
                f"integers, got {sorted(arrays)}"
            )
        answer = vector
    return StageResponse(model.kind, model.job, True, answer)


def _shares(revealed: list[_Revealed]) -> dict[int, Share]:
    shares: dict[int, Share] = {}
    for item in revealed:
        if item.owner in shares:
            raise WireError(f"malformed secure reply: two shares of client {item.owner}")
        data = _bytes(item.values, "share", most=MAX_SECRET_BYTES * ELEMENT_BYTES)
        try:
            shares[item.owner] = Share.from_bytes(item.x, data, item.length)
        except ValueError as error:
            raise WireError(f"malformed secure reply: share of {item.owner}: {error}") from None
    return shares
