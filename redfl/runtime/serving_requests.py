"""What a served model does with a request, apart from Ray Serve: who calls, which route,
input checks, batched predictions and their answers.

A replica of a served model (:mod:`redfl.runtime.serving`) hands every HTTP request to its
:class:`ModelService`, under the deployment's route prefix:

* ``POST /predict`` with a body ``{"inputs": [[...], ...]}``, one row of numbers per example
  (an example of the model's ``input_shape``, flattened), answers ``{"outputs": [...]}``,
  one output row per input row;
* ``GET /health`` answers the deployment's name, the replica's id and what it serves.

Checks, in this order (each answered before anything after it is done):

1. the caller: ``Authorization: Bearer <token>`` verified with the deployment's public key
   (:mod:`redfl.runtime.serving_tokens`): 401 when missing, malformed, forged, expired,
   revoked or for another deployment, for every route;
2. the route (404) and method (405);
3. the body's size: 413 when ``Content-Length`` exceeds ``max_body_bytes``, before the body
   is read, and while reading one that did not say its length;
4. the body: 422 when it is not JSON, not ``{"inputs": [...]}``, holds a value that is not a
   finite number (``true``, ``"3"``, ``NaN``, ``1e400``), no row, more than ``max_rows``
   rows, or a row whose length is not the model's example size, naming the problem.

Requests that passed are predicted together (:func:`predict_batch`); when the model fails on
a batch, each request of it is predicted alone, so that one request the model refuses does
not fail the others. The model's ``ValueError`` is the caller's fault (422), anything else
the model's (500); neither stops the replica.

A caller inside the Ray cluster (a server that fronts the deployment with its own
authentication) sends a body through :meth:`ModelService.answer_body`, checked from step 3.

This module imports no Ray.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from redfl.core.arrays import Parameters
from redfl.core.config import Strict as StrictTable
from redfl.core.config import describe_errors
from redfl.nodes.predict import Predictor
from redfl.runtime.serving_tokens import TokenCheck, TokenError, bearer_token

__all__ = [
    "ERRORS_SHOWN",
    "Answer",
    "BadRequest",
    "BatchFn",
    "ModelPayload",
    "ModelService",
    "ServingSettings",
    "body_limit",
    "predict_batch",
    "read_inputs",
]

ERRORS_SHOWN = 3
"""Bad values named in a 422 (the first ones, in the body's order)."""

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite JSON number (an integer is one too; ``true`` and ``"3"`` are not)."""


class _PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Number]]


class ServingSettings(StrictTable):
    """The settings of a served model's replicas (Ray Serve's ``user_config``).

    ``public_key`` is the deployment's token key (:mod:`redfl.runtime.serving_tokens`);
    without one the deployment refuses every HTTP request (it is called through Ray only).
    """

    max_rows: int = Field(default=1024, ge=1, le=1_000_000)
    """Rows one request may hold."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    """Bytes one request's body may hold."""
    max_batch: int = Field(default=16, ge=1, le=1024)
    """Requests predicted together at most."""
    batch_wait_s: float = Field(default=0.002, ge=0.0, le=1.0)
    """How long a batch waits for more requests after its first one."""
    public_key: str | None = None
    revoked: tuple[str, ...] = ()
    """Ids of revoked tokens."""


class BadRequest(Exception):
    """A request refused before it reached the model: its HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Answer:
    """A reply to one request: its HTTP status, JSON body and extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any], status: int = 200) -> Answer:
        """A reply whose body is ``data`` as JSON."""
        return cls(status, json.dumps(data).encode())

    @classmethod
    def error(cls, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
        """An error reply: ``{"detail": message}``."""
        return cls(status, json.dumps({"detail": message}).encode(), headers)

    def outputs(self) -> np.ndarray:
        """The outputs of a 200 reply.

        Raises
        ------
        ValueError
            For a 4xx reply (the request's fault): ``"<status>: <reason>"``.
        RuntimeError
            For any other reply that is not 200 (the model's or the server's fault).
        """
        data = json.loads(self.body)
        if self.status == 200:
            return np.asarray(data["outputs"])
        reason = f"{self.status}: {data.get('detail', '')}"
        raise (ValueError if 400 <= self.status < 500 else RuntimeError)(reason)


BatchFn = Callable[[np.ndarray], Awaitable[Answer]]
"""Predicts one checked request's rows, batched with others (Ray Serve's ``serve.batch``
around :func:`predict_batch`, in a replica)."""


def body_limit(max_rows: int, input_shape: tuple[int, ...] | None) -> int:
    """A body limit that fits ``max_rows`` rows of ``input_shape`` written as JSON (32 bytes
    a number: 17 significant digits, an exponent, a sign and a separator), at least 1 MiB."""
    if input_shape is None:
        return 1 << 20
    return min(1 << 30, max(1 << 20, max_rows * math.prod(input_shape) * 32 + 1024))


def read_inputs(body: bytes, max_rows: int, input_shape: tuple[int, ...] | None) -> np.ndarray:
    """The float64 array of a predict body: ``(rows, *input_shape)``, or ``(rows, width)``
    when the model declares no shape.

    Raises
    ------
    BadRequest
        422 naming the first bad values (dotted path into the body), a missing or empty
        ``inputs``, too many rows, or the first row of the wrong length.
    """
    try:
        rows = _PredictBody.model_validate_json(body).inputs
    except ValidationError as error:
        raise BadRequest(422, _describe_first(error)) from None
    if not rows:
        raise BadRequest(422, "body.inputs: needs at least one row")
    if len(rows) > max_rows:
        raise BadRequest(422, f"body.inputs: at most {max_rows} rows per request, got {len(rows)}")
    width = len(rows[0]) if input_shape is None else math.prod(input_shape)
    shape = "" if input_shape is None else f" (an example of shape {input_shape}, flattened)"
    for index, row in enumerate(rows):
        if len(row) != width or width == 0:
            raise BadRequest(
                422,
                f"body.inputs.{index}: a row must hold {width or 'at least one'} "
                f"numbers{shape}, got {len(row)}",
            )
    array = np.array(rows, dtype=np.float64)
    return array if input_shape is None else array.reshape(len(rows), *input_shape)


def _describe_first(error: ValidationError) -> str:
    """:func:`~redfl.core.config.describe_errors` of the first :data:`ERRORS_SHOWN` errors,
    and how many more there are."""
    details = error.errors(include_url=False)
    shown: list[InitErrorDetails] = []
    for detail in details[:ERRORS_SHOWN]:  # each with its message as parsing JSON worded it
        kind = PydanticCustomError(detail["type"], detail["msg"])
        shown.append({"type": kind, "loc": detail["loc"], "input": detail["input"]})
    text = describe_errors(ValidationError.from_exception_data(error.title, shown), "body")
    more = len(details) - ERRORS_SHOWN
    return f"{text}; and {more} more" if more > 0 else text


def predict_batch(
    predictor: Predictor, parameters: Parameters, batch: Sequence[np.ndarray]
) -> list[Answer]:
    """The answers to a batch of checked requests (each an array of rows), in order.

    The requests are predicted together; if the model fails on them, or returns what cannot
    be answered, each is predicted alone.
    """
    if len(batch) > 1:
        try:
            outputs = predictor(parameters, np.concatenate(batch))
            ends = np.cumsum([len(item) for item in batch])[:-1]
            answers = [_encode(part, predictor) for part in np.split(outputs, ends)]
        except Exception:  # one request the model refuses must not fail the others
            pass
        else:
            if all(answer.status == 200 for answer in answers):
                return answers
    return [_predict_one(predictor, parameters, item) for item in batch]


def _predict_one(predictor: Predictor, parameters: Parameters, inputs: np.ndarray) -> Answer:
    try:
        outputs = predictor(parameters, inputs)
    except ValueError as error:  # the model refuses these inputs
        return Answer.error(422, f"body.inputs: {_one_line(error)}")
    except Exception as error:  # the model's own failure: the replica goes on
        return Answer.error(500, f"the model failed: {type(error).__name__}: {_one_line(error)}")
    return _encode(outputs, predictor)


def _encode(outputs: np.ndarray, predictor: Predictor) -> Answer:
    if outputs.dtype.kind not in "biuf":
        reason = f"{predictor.source}.predict returned {outputs.dtype} values, not numbers"
        return Answer.error(500, reason)
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        return Answer.error(500, f"{predictor.source}.predict returned NaN or infinity")
    return Answer.of({"outputs": outputs.tolist()})


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


@dataclass(frozen=True)
class ModelPayload:
    """What a replica needs to serve a model.

    Attributes
    ----------
    name:
        The deployment's name: its Ray Serve application, route prefix and token audience.
    target:
        The client class that trained the model (``module:Class``); replicas import it.
    options:
        Its options (``cls(**options)`` builds the client whose hook predicts).
    model:
        The model file (safetensors bytes).
    info:
        What ``GET /health`` reports about the model (JSON values).
    """

    name: str
    target: str
    options: dict[str, Any]
    model: bytes
    info: dict[str, Any] = field(default_factory=dict)


class ModelService:
    """Everything one replica of a served model does with a request (see the module doc).

    Parameters
    ----------
    name:
        The deployment's name (the audience of its tokens).
    predictor:
        The model's predict hook.
    parameters:
        The model's parameters.
    info:
        What ``GET /health`` reports besides the name, the replica, the limits and the
        counts (the run folder, its rounds and accuracy, the client class).
    replica:
        This replica's id.
    """

    def __init__(
        self,
        name: str,
        predictor: Predictor,
        parameters: Parameters,
        info: Mapping[str, Any],
        replica: str = "",
    ) -> None:
        self.name = name
        self.predictor = predictor
        self.parameters = parameters
        self.info = dict(info)
        self.replica = replica
        self.settings = ServingSettings()
        self.tokens: TokenCheck | None = None
        self.requests = 0
        """Requests predicted by this replica."""
        self.batches = 0
        """Batches they were predicted in."""

    def predict(self, batch: Sequence[np.ndarray]) -> list[Answer]:
        """The answers to a batch of checked requests (:func:`predict_batch`), counted."""
        self.batches += 1
        self.requests += len(batch)
        return predict_batch(self.predictor, self.parameters, batch)

    def configure(self, settings: ServingSettings) -> None:
        """Take new settings (limits, batching, token key, revoked tokens) at once.

        Raises
        ------
        ValueError
            If the public key is not an Ed25519 key.
        """
        tokens = None
        if settings.public_key is not None:
            tokens = TokenCheck(settings.public_key, self.name, settings.revoked)
        self.tokens, self.settings = tokens, settings

    def caller(self, authorization: str | None) -> str:
        """The token id of the request's ``Authorization`` header.

        Raises
        ------
        TokenError
            Why the caller is refused.
        """
        if self.tokens is None:
            raise TokenError("this deployment takes no tokens (it is called through Ray only)")
        return self.tokens.verify(bearer_token(authorization))

    async def answer_http(
        self,
        method: str,
        route: str,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes],
        predict: BatchFn,
    ) -> Answer:
        """The answer to an HTTP request.

        Parameters
        ----------
        method, route:
            The request's method and path under the deployment's prefix (``/predict``).
        headers:
            Its headers, lower-case names.
        body:
            Its body's chunks, read only once the caller, route and size are checked.
        predict:
            Predicts a checked request's rows with others (:data:`BatchFn`).
        """
        try:
            self.caller(headers.get("authorization"))
        except TokenError as error:
            challenge = f'Bearer error="invalid_token", error_description="{error}"'
            return Answer.error(401, str(error), (("www-authenticate", challenge),))
        expected = {"/predict": "POST", "/health": "GET"}.get(route)
        if expected is None:
            return Answer.error(404, f"no route {route}: POST /predict, GET /health")
        if method != expected:
            return Answer.error(405, f"{route} takes {expected}", (("allow", expected),))
        if route == "/health":
            return self.health()
        try:
            data = await self._read(headers.get("content-length"), body)
        except BadRequest as error:
            return Answer.error(error.status, error.message)
        return await self.answer_body(data, predict)

    async def answer_body(self, body: bytes, predict: BatchFn) -> Answer:
        """The answer to a predict body (no token: the caller is inside the Ray cluster)."""
        if len(body) > self.settings.max_body_bytes:
            return Answer.error(413, self._too_large(len(body)))
        try:
            inputs = read_inputs(body, self.settings.max_rows, self.predictor.input_shape)
        except BadRequest as error:
            return Answer.error(error.status, error.message)
        return await predict(inputs)

    def health(self) -> Answer:
        """``GET /health``: the deployment, this replica, what it serves, its limits, and the
        requests and batches it predicted."""
        shape = self.predictor.input_shape
        return Answer.of(
            {
                "status": "ok",
                "name": self.name,
                "replica": self.replica,
                **self.info,
                "input_shape": None if shape is None else list(shape),
                "max_rows": self.settings.max_rows,
                "max_batch": self.settings.max_batch,
                "requests": self.requests,
                "batches": self.batches,
            }
        )

    async def _read(self, declared: str | None, body: AsyncIterable[bytes]) -> bytes:
        limit = self.settings.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(400, f"Content-Length must be a number of bytes, got {declared}")
            if int(declared) > limit:
                raise BadRequest(413, self._too_large(int(declared)))
        chunks, size = [], 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, self._too_large(size, "at least "))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int, prefix: str = "") -> str:
        return f"body: at most {self.settings.max_body_bytes} bytes per request, got {prefix}{size}"
