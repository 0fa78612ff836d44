"""The device protocol: JSON requests and replies of ``/enroll``, ``/job``, ``/task``,
``/result`` and ``/selection``, and the codec of model parameters.

Every reply carries a ``status`` (:class:`Status`). Parameters travel as the base64 text of a
safetensors file (named float32 arrays, a small JSON header, raw little-endian data), inside
the JSON body, so one content type serves every route and the OpenAPI schema describes it.
For a 10,000-float32 model the safetensors bytes are 40,000 + ~70 bytes and the base64 text
is 4/3 of that (~53.4 kB); a JSON list of the same floats would be ~3-4 times larger and far
slower to parse. The cost per request is measured by ``bench/edge.py``.

>>> import numpy as np
>>> arrays = decode_arrays(encode_arrays({"w": np.ones(3, np.float32)}))
>>> arrays["w"].tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from safetensors import SafetensorError
from safetensors.numpy import load, save

__all__ = [
    "DeviceId",
    "EnrollReply",
    "EnrollRequest",
    "ErrorReply",
    "FORWARDED_ROUTES",
    "MAX_RESULT_BYTES",
    "JobReply",
    "JobRequest",
    "Name",
    "ResultReply",
    "ResultRequest",
    "SelectionReply",
    "SelectionRequest",
    "Status",
    "TaskReply",
    "TaskRequest",
    "decode_arrays",
    "encode_arrays",
]

MAX_PARAMETERS_CHARS = 64 * 1024 * 1024
"""Largest accepted base64 parameters text (64 MiB)."""
MAX_RESULT_BYTES = MAX_PARAMETERS_CHARS + 64 * 1024
"""Largest ``/result`` body: the parameters text and room for the other fields; a larger
body gets 413 before it is read."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:@-]+$")]
"""A device id, job name, job id or task id: 1-128 letters, digits and ``_ . : @ -``."""
DeviceId = Name
Parameters = Annotated[str, Field(max_length=MAX_PARAMETERS_CHARS)]
ConfigValue = float | int | str | bool


class Status(StrEnum):
    """Outcome of a device request."""

    OK = "OK"
    RETRY = "RETRY"
    DONE = "DONE"
    ERROR = "ERROR"
    NO_JOB = "NO_JOB"
    NO_TASK = "NO_TASK"
    INVALID_REQUEST = "INVALID_REQUEST"


class _Request(BaseModel):
    """Base of device requests: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Reply(BaseModel):
    """Base of replies: a status and, when it is not OK, a reason."""

    status: Status
    reason: str = ""


class EnrollRequest(_Request):
    """``POST /enroll``: a device asks for a token with its enrolment credential (what the
    operator's verifier checks; the shared secret in development mode)."""

    device_id: DeviceId
    secret: Annotated[str, Field(min_length=1, max_length=4096)]


class EnrollReply(_Reply):
    """A signed token bound to the device id, and its expiry (Unix seconds)."""

    token: str = ""
    expires_at: float = 0.0


class JobRequest(_Request):
    """``POST /job``: ask for a running job by name."""

    job_name: Name


class JobReply(_Reply):
    """The job id (``OK``), ``NO_JOB``, or ``RETRY`` after ``retry_wait`` seconds."""

    job_id: str = ""
    retry_wait: float = 0.0


class TaskRequest(_Request):
    """``POST /task``: ask for a training task of a job."""

    job_id: Name


class TaskReply(_Reply):
    """A task (``OK``), ``NO_TASK``/``RETRY`` (ask again after ``retry_wait``), or ``DONE``
    (with the final model's version and parameters)."""

    task_id: str = ""
    model_version: int = 0
    parameters: str = ""
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    retry_wait: float = 0.0


class ResultRequest(_Request):
    """``POST /result``: the update of a task, ``parameters`` = local model minus the task's."""

    job_id: Name
    task_id: Name
    parameters: Parameters
    num_samples: Annotated[int, Field(ge=1, le=2**31)] = 1
    metrics: dict[str, float] = Field(default_factory=dict)


class ResultReply(_Reply):
    """``OK`` (the update is folded; a retry of the same task gets ``OK`` again), ``ERROR``."""


class SelectionRequest(_Request):
    """``POST /selection``: which devices are selected now (for simulators)."""

    job_id: Name


class SelectionReply(_Reply):
    """The selected device ids, the current model version, and whether the job is done."""

    selected: list[str] = Field(default_factory=list)
    model_version: int = 0
    done: bool = False


class ErrorReply(_Reply):
    """A refused request: 400 ``INVALID_REQUEST`` or 401 ``ERROR``, with the reason."""


FORWARDED_ROUTES: dict[str, tuple[type[_Request], type[_Reply]]] = {
    "/job": (JobRequest, JobReply),
    "/task": (TaskRequest, TaskReply),
    "/result": (ResultRequest, ResultReply),
    "/selection": (SelectionRequest, SelectionReply),
}
"""The routes a device reaches at its LCP through the proxy: path -> request and reply models."""


def encode_arrays(arrays: dict[str, np.ndarray], dtype: type[np.floating] = np.float32) -> str:
    """Serialise named arrays as safetensors (float32 by default) and return its base64 text."""
    data = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in arrays.items()}
    return base64.b64encode(save(data)).decode("ascii")


def decode_arrays(text: str, dtype: type[np.floating] = np.float32) -> dict[str, np.ndarray]:
    """Decode :func:`encode_arrays`'s text into arrays of ``dtype``.

    Raises
    ------
    ValueError
        If the text is not base64, not a safetensors file, holds a non-float array or a
        non-finite value.
    """
    try:
        raw = base64.b64decode(text, validate=True)
        arrays = load(raw)
    except (binascii.Error, SafetensorError, ValueError) as exc:
        raise ValueError(f"parameters must be base64 safetensors bytes: {exc}") from None
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            raise ValueError(f"parameters[{name!r}] must hold floats, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"parameters[{name!r}] holds a NaN or infinite value")
        out[name] = array.astype(dtype, copy=False)
    return out
