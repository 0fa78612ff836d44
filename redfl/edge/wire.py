"""Messages between an LCP and the server (internal; not part of the device protocol).

An LCP calls ``POST /sync`` on the server in a loop: it sends the devices that asked for a
task (candidates for selection) and its drained partial sums, one per base version, and
gets back the verdict of each partial sum, the current model version (with its parameters
when the LCP's copy is older), the selected devices (when the selection changed) and whether
the job is done. A sync carries a sequence number per LCP: a repeated sync (a lost reply) gets
the verdicts it already had, so a partial sum is never folded twice.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from redfl.edge.protocol import ConfigValue

__all__ = ["PartialMsg", "SyncReply", "SyncRequest", "VerdictMsg"]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartialMsg(_Msg):
    """One base version's folded updates: float64 safetensors (base64) of the sums."""

    base_version: int
    sums: str
    weight: float
    task_ids: list[str]
    devices: list[str]


class SyncRequest(_Msg):
    """An LCP's report: candidates, partial sums, and what it already knows."""

    lcp: str
    boot: str
    seq: int
    known_version: int = -1
    selection_epoch: int = -1
    offered: list[str] = Field(default_factory=list)
    partials: list[PartialMsg] = Field(default_factory=list)


class VerdictMsg(_Msg):
    """The server's verdict on one partial sum."""

    accepted: bool
    reason: str = ""


class SyncReply(_Msg):
    """The job as the server sees it now, and the verdicts of the request's partial sums."""

    job_id: str
    job_name: str
    version: int
    done: bool
    parameters: str = ""
    selection_epoch: int
    selected: list[str] | None = None
    verdicts: list[VerdictMsg] = Field(default_factory=list)
    config: dict[str, ConfigValue] = Field(default_factory=dict)
