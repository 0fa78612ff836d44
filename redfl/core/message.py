"""Messages exchanged between nodes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One message from a node to one or more of its neighbours.

    Attributes
    ----------
    header:
        What the message is about; ``receive(header=...)`` selects on it.
    sender:
        The id of the sending node.
    recipients:
        The ids of the nodes it is addressed to.
    body:
        Any picklable payload (often named arrays).
    version:
        The sender's round or version number when it sent the message.
    timestamp:
        Seconds since the epoch when the message was created.
    """

    header: str
    sender: str
    recipients: tuple[str, ...]
    body: Any = None
    version: int = 0
    timestamp: float = field(default_factory=time.time)
