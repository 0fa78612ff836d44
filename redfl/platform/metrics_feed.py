"""Feed the Prometheus metrics from execution: the runs' jobs write round and failure events
into the store; this task reads the new ones and counts them in the server's metrics.

Counting starts at the events present when the server starts (a counter of a new process
starts at 0; Prometheus handles the reset).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker

from redfl.platform.metrics import PlatformMetrics
from redfl.platform.store import Store

LOG = logging.getLogger("redfl.platform")
FED_TYPES = ("round_finished", "failure")


class MetricsFeed:
    """Reads round and failure events newer than the last seen into ``metrics``."""

    def __init__(self, sessions: sessionmaker[Session], metrics: PlatformMetrics) -> None:
        self.sessions = sessions
        self.metrics = metrics
        with sessions() as session:
            self.last_id = Store(session).last_event_id()

    def poll(self) -> int:
        """Count the events stored since the last poll; how many."""
        with self.sessions() as session:
            events = Store(session).events_since(self.last_id, FED_TYPES)
            rows = [(e.id, e.type, e.data) for e in events]
        for row_id, kind, data in rows:
            if kind == "round_finished":
                self.metrics.record_round(float((data.get("record") or {}).get("seconds") or 0.0))
            else:
                self.metrics.record_client_failures(1)
            self.last_id = row_id
        return len(rows)

    async def serve(self, interval: float = 1.0) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # a database hiccup must not end the feed
                LOG.exception("metrics feed error", extra={"event": "metrics_feed_error"})
            await asyncio.sleep(interval)
