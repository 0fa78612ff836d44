"""One way to run a federation: config -> federation -> run folder (:func:`run`)."""

from redfl.run.api import RunOutcome, run
from redfl.run.recorder import RunRecorder, read_events

__all__ = ["RunOutcome", "RunRecorder", "read_events", "run"]
