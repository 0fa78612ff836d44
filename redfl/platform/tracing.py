"""Optional OpenTelemetry tracing: spans for HTTP requests and for rounds.

Only when the operator sets ``otlp_endpoint`` is OpenTelemetry imported (the ``tracing``
extra); without it nothing is imported and nothing is exported.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redfl.core.events import Event, RoundFinished, RoundStarted
from redfl.platform.asgi import HttpMiddleware
from redfl.platform.settings import SettingsError
from redfl.schemas.callbacks import Callback


def make_tracer(endpoint: str | None, service: str) -> Any | None:
    """A tracer exporting to ``endpoint`` (OTLP over HTTP), or ``None`` without endpoint.

    Raises
    ------
    SettingsError
        If an endpoint is set but the ``tracing`` extra is not installed.
    """
    if endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise SettingsError(
            f"otlp_endpoint: tracing needs its packages ({error.name} is missing): "
            "pip install 'redfl[tracing]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("redfl.platform")


class TracingMiddleware(HttpMiddleware):
    """One span per HTTP request: method, path and status."""

    def __init__(self, app: ASGIApp, tracer: Any) -> None:
        super().__init__(app)
        self.tracer = tracer

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request inside a span that records its method, path and status."""
        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name) as span:
            span.set_attribute("http.method", scope["method"])
            span.set_attribute("http.target", scope["path"])

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.status_code", int(message["status"]))
                await send(message)

            await self.app(scope, receive, traced_send)


class RoundSpans(Callback):
    """One span per round of a run, from ``round_started`` to ``round_finished``."""

    def __init__(self, tracer: Any, run_id: str) -> None:
        self.tracer = tracer
        self.run_id = run_id
        self._open: dict[int, Any] = {}

    def on_event(self, event: Event) -> bool | None:
        """Open or close the round's span."""
        if isinstance(event, RoundStarted):
            span = self.tracer.start_span(f"round {event.round}")
            span.set_attribute("redfl.run_id", self.run_id)
            span.set_attribute("redfl.sampled", event.sampled)
            self._open[event.round] = span
        elif isinstance(event, RoundFinished):
            span = self._open.pop(event.record.round, None)
            if span is not None:
                for key in ("succeeded", "failed", "loss", "accuracy"):
                    value = getattr(event.record, key)
                    if value is not None:
                        span.set_attribute(f"redfl.{key}", value)
                span.end()
        return None
