"""``RunRecorder``: the run folder's event log, metrics and failures, written as they happen.

``events.jsonl`` holds every event (one JSON object a line, with ``seq`` and ``time``),
``metrics.jsonl`` one :class:`~redfl.core.result.RoundRecord` a line and ``failures.jsonl``
one :class:`~redfl.core.result.Failure` a line. Lines are flushed as they are written, so
a reader (the platform, ``tail -f``) sees a round as soon as it ends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

from redfl.core.events import Event, FailureRecorded, RoundFinished
from redfl.core.result import Failure, RoundRecord
from redfl.schemas.callbacks import Callback


class RunRecorder(Callback):
    """Appends every event to ``events.jsonl`` and round records and failures to their files.

    Parameters
    ----------
    folder:
        The run folder (must exist).
    append:
        Keep what the files hold (a resumed run); else start them empty.
    """

    def __init__(self, folder: str | Path, append: bool = False) -> None:
        self.folder = Path(folder)
        mode = "a" if append else "w"
        self._events = (self.folder / "events.jsonl").open(mode, encoding="utf-8")
        self._metrics = (self.folder / "metrics.jsonl").open(mode, encoding="utf-8")
        self._failures = (self.folder / "failures.jsonl").open(mode, encoding="utf-8")
        self._seq = _count_lines(self.folder / "events.jsonl") if append else 0
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> bool | None:
        """Write ``event`` (and its record or failure) at once."""
        with self._lock:
            self._seq += 1
            body = {"seq": self._seq, "time": round(time.time(), 6), **event.to_json()}
            _write(self._events, body)
            if isinstance(event, RoundFinished):
                _write(self._metrics, event.record.to_json())
            elif isinstance(event, FailureRecorded):
                _write(self._failures, asdict(event.failure))
        return None

    def rewrite(self, history: Sequence[RoundRecord], failures: Sequence[Failure]) -> None:
        """Make ``metrics.jsonl`` and ``failures.jsonl`` hold exactly these (a resumed run
        drops what an interrupted one recorded after its checkpoint)."""
        with self._lock:
            for stream, rows in (
                (self._metrics, [r.to_json() for r in history]),
                (self._failures, [asdict(f) for f in failures]),
            ):
                stream.seek(0)
                stream.truncate()
                for row in rows:
                    _write(stream, row)

    def close(self) -> None:
        """Close the files (idempotent)."""
        for stream in (self._events, self._metrics, self._failures):
            stream.close()


def _write(stream: IO[str], body: dict[str, object]) -> None:
    stream.write(json.dumps(body) + "\n")
    stream.flush()


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as stream:
        return sum(1 for _ in stream)


def read_events(folder: str | Path) -> list[dict[str, object]]:
    """Every event of a run folder's ``events.jsonl``, in order."""
    path = Path(folder) / "events.jsonl"
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
