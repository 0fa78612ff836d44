"""Messages between an LCP and the server (internal; not part of the device protocol).

An LCP calls ``POST /sync`` on the server in a loop: it sends the devices that asked for a
task (candidates for selection) and its drained partial sums, one per base version, and
gets back the verdict of each partial sum, the current model version (with its parameters
when the LCP's copy is older), the selected devices (when the selection changed) and whether
the job is done. A sync carries a sequence number per LCP: a repeated sync (a lost reply) gets
the verdicts it already had, so a partial sum is never folded twice. The reply also carries
the job's limits on each device update, which the LCP applies before it folds one.

A sync travels over mutually authenticated TLS, from the LCP itself or through the relays
between it and the server; the receiver checks that the ``lcp`` it names is its caller, or
below the relay that calls.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from redfl.edge.protocol import ConfigValue
from redfl.topology.tree import RelayTree

__all__ = ["Limits", "PartialMsg", "SyncReply", "SyncRequest", "VerdictMsg", "speaks_for"]


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


class Limits(_Msg):
    """What an LCP enforces on each device update of the job (see
    :class:`redfl.edge.jobs.JobSpec`)."""

    max_samples_per_update: int = Field(ge=1)
    clip_norm: float | None = Field(default=None, gt=0)


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
    limits: Limits


def speaks_for(tree: RelayTree, caller: str, lcp: str) -> str:
    """Why ``caller`` (an authenticated LCP or relay of ``tree``) may not sync for ``lcp``, or
    ``""`` when it may: an LCP speaks for itself, a relay for the LCPs whose messages cross
    it.

    >>> from redfl.topology.tree import relay_tree
    >>> tree = relay_tree(1, 2, 2)
    >>> speaks_for(tree, "relay-1", "lcp-1-2"), speaks_for(tree, "lcp-1-1", "lcp-1-2")
    ('', 'lcp-1-1 may not sync for lcp-1-2: an LCP syncs for itself only')
    """
    if caller not in tree:
        return f"{caller} is not a site of this tree"
    kind = tree.site(caller).kind
    if kind == "lcp" and caller != lcp:
        return f"{caller} may not sync for {lcp}: an LCP syncs for itself only"
    if kind == "lcp":
        return ""
    if kind != "relay":
        return f"{caller} ({kind}) may not sync: only LCPs and relays do"
    if lcp in tree and tree.site(lcp).kind == "lcp" and lcp in tree.lcps_under(caller):
        return ""
    return f"{caller} may not sync for {lcp}: not an LCP below it"
