"""A replica of a served model: the class of its Ray Serve deployment.

It imports the client class that trained the model, finds its predict hook
(:func:`redfl.nodes.predict.find_predictor`) and answers requests through a
:class:`~redfl.runtime.serving_requests.ModelService`, with Ray Serve's request batching
(``serve.batch``) in front of the model; Ray Serve hands it the deployment's settings in
``reconfigure``. :mod:`redfl.runtime.serving` deploys it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve
from safetensors.numpy import load
from starlette.requests import Request
from starlette.responses import Response

from redfl.core.imports import resolve
from redfl.nodes.predict import find_predictor
from redfl.runtime.serving_requests import (
    Answer,
    ModelPayload,
    ModelService,
    ServingSettings,
)

__all__ = ["ModelReplica"]

logger = logging.getLogger(__name__)


class ModelReplica:
    """One replica of a served model (the class of its Ray Serve deployment).

    Parameters
    ----------
    payload:
        The model and the class that predicts with it.
    """

    def __init__(self, payload: ModelPayload) -> None:
        template = resolve(payload.target, "client.target")
        predictor = find_predictor(template, payload.options)
        replica = serve.get_replica_context().replica_id.unique_id
        self.service = ModelService(
            payload.name, predictor, load(payload.model), payload.info, replica
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Take the deployment's settings (Ray Serve calls it with its ``user_config``)."""
        settings = ServingSettings.model_validate(config)
        self.service.configure(settings)
        batching: Any = self.predict_rows  # serve.batch's wrapper takes new batch settings
        batching.set_max_batch_size(settings.max_batch)
        batching.set_batch_wait_timeout_s(settings.batch_wait_s)

    async def __call__(self, request: Request) -> Response:
        """Answer an HTTP request (see :class:`~redfl.runtime.serving_requests.ModelService`)."""
        scope = request.scope
        route = scope["path"][len(scope.get("root_path", "")) :] or "/"
        try:
            reply = await self.service.answer_http(
                request.method, route, request.headers, request.stream(), self.predict_rows
            )
        except Exception as error:  # nothing a request does stops the replica
            logger.exception("served model %s: request failed", self.service.name)
            reply = Answer.error(500, f"internal error: {type(error).__name__}")
        return Response(
            reply.body, reply.status, dict(reply.headers), media_type="application/json"
        )

    async def answer(self, body: bytes) -> Answer:
        """Answer a predict body from inside the cluster (no token)."""
        return await self.service.answer_body(body, self.predict_rows)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def predict_rows(self, batch: list[np.ndarray]) -> list[Answer]:
        """Predict the rows of several requests at once (Ray Serve gathers them)."""
        return self.service.predict(batch)
