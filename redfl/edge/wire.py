"""Messages between the LCPs, the relays and the server (internal; not the device protocol).

An LCP calls ``POST /sync`` upstream in a loop, one request for all the jobs it knows: per
job, the devices that asked for a task (candidates for selection, by LCP), its drained
partial sums (one per base version), the tasks its devices reported as failed, and what it
already knows (the model version, the epoch of each LCP's selection). The reply lists every
job the server holds now: its description when the sender did not know it yet
(:class:`JobInfo`: the device class, its options, the config and limits), its version and
status, the parameters when the sender's copy is older, the selections that changed (only
those of the LCPs at or below the sender), and the verdict of each partial sum the request
carried. A job missing from the reply is gone.

A sync carries a sequence number per sender: a repeated sync (a lost reply) gets the
verdicts it already had, so a partial sum is never folded twice; the server persists those
verdicts with the job, so a repeat after the server restarted gets them too. The reply names
the server's boot: epochs of another boot are not compared.

An aggregating relay (:mod:`redfl.edge.relay`) is a sender too: it sums its children's
partial sums per job and base version and sends one request upstream, as an LCP does. Task
ids start with the name of the LCP that issued them (``<lcp>.<boot>.<n>``); a receiver takes a
partial sum only when every id in it belongs to an LCP at or below the sender
(:func:`foreign_ids`), and the sync only from its caller or, through a relay that passes
syncs on, an LCP below it (:func:`speaks_for`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from redfl.edge.protocol import ConfigValue
from redfl.topology.tree import RelayTree

__all__ = [
    "FailureMsg",
    "JobInfo",
    "JobState",
    "JobStatus",
    "JobSync",
    "Limits",
    "PartialMsg",
    "SyncReply",
    "SyncRequest",
    "VerdictMsg",
    "foreign_ids",
    "issuer",
    "speaks_for",
]

JobStatus = Literal["running", "succeeded", "cancelled", "failed"]
"""A job's status: running, or how it ended (a run's status)."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartialMsg(_Msg):
    """One base version's folded updates: float64 safetensors (base64) of the sums."""

    base_version: int
    sums: str
    weight: float
    task_ids: list[str]
    devices: list[str]


class FailureMsg(_Msg):
    """A task whose device's ``fit`` failed, and why (recorded with the job)."""

    task_id: str
    device: str
    base_version: int
    reason: Annotated[str, Field(max_length=2_000)]


class JobSync(_Msg):
    """What a sender reports and knows of one job."""

    known_version: int = -1
    selection_epochs: dict[str, int] = Field(default_factory=dict)
    """LCP -> the epoch of the selection the sender holds for it."""
    offered: dict[str, list[str]] = Field(default_factory=dict)
    """LCP -> the devices that asked it for a task."""
    partials: list[PartialMsg] = Field(default_factory=list)
    failures: list[FailureMsg] = Field(default_factory=list)


class SyncRequest(_Msg):
    """A sender's report: its jobs' parts, and what it already knows."""

    sender: str
    boot: str
    seq: int
    server_boot: str = ""
    jobs: dict[str, JobSync] = Field(default_factory=dict)


class VerdictMsg(_Msg):
    """The server's verdict on one partial sum."""

    accepted: bool
    reason: str = ""


class Limits(_Msg):
    """What an LCP enforces on each device update of the job (see
    :class:`redfl.edge.jobs.JobSpec`)."""

    max_samples_per_update: int = Field(ge=1)
    clip_norm: float | None = Field(default=None, gt=0)


class JobInfo(_Msg):
    """What does not change in a job: sent once to each sender."""

    job_id: str
    name: str
    client: str
    """``MODULE:CLASS`` of the device code."""
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    limits: Limits


class JobState(_Msg):
    """A job as the server sees it now, for one sender."""

    job_id: str
    info: JobInfo | None = None
    version: int
    status: JobStatus
    reason: str = ""
    parameters: str = ""
    selected: dict[str, list[str]] = Field(default_factory=dict)
    """LCP -> its selected devices, for the LCPs whose selection changed."""
    selection_epochs: dict[str, int] = Field(default_factory=dict)
    """LCP -> the epoch of the selection in ``selected``."""
    verdicts: list[VerdictMsg] = Field(default_factory=list)


class SyncReply(_Msg):
    """Every job the server holds, and the verdicts of the request's partial sums."""

    server_boot: str
    jobs: list[JobState] = Field(default_factory=list)


def issuer(task_id: str) -> str:
    """The LCP that issued a task (``<lcp>.<boot>.<n>``).

    >>> issuer("lcp-1-2.ab12cd34.17")
    'lcp-1-2'
    """
    return task_id.rsplit(".", 2)[0]


def foreign_ids(task_ids: list[str], lcps: frozenset[str] | set[str]) -> list[str]:
    """The ids among ``task_ids`` that no LCP of ``lcps`` issued.

    >>> foreign_ids(["lcp-a.b.1", "lcp-c.b.2"], {"lcp-a"})
    ['lcp-c.b.2']
    """
    return [t for t in task_ids if issuer(t) not in lcps]


def speaks_for(tree: RelayTree, caller: str, sender: str) -> str:
    """Why ``caller`` (an authenticated LCP or relay of ``tree``) may not sync as ``sender``,
    or ``""`` when it may: an LCP speaks for itself; a relay for itself when it aggregates
    (the tree has aggregators), else for the LCPs whose messages cross it.

    >>> from redfl.topology.tree import relay_tree
    >>> tree = relay_tree(1, 2, 2, lcp_only=True)
    >>> speaks_for(tree, "relay-1", "lcp-1-2"), speaks_for(tree, "lcp-1-1", "lcp-1-2")
    ('', 'lcp-1-1 may not sync for lcp-1-2: an LCP syncs for itself only')
    """
    if caller not in tree:
        return f"{caller} is not a site of this tree"
    kind = tree.site(caller).kind
    if kind == "lcp" and caller != sender:
        return f"{caller} may not sync for {sender}: an LCP syncs for itself only"
    if kind == "lcp":
        return ""
    if kind != "relay":
        return f"{caller} ({kind}) may not sync: only LCPs and relays do"
    if caller == sender:
        if tree.lcp_only:
            return f"{caller} may not sync for itself: it passes syncs on (no aggregators)"
        return ""
    if sender in tree and tree.site(sender).kind == "lcp" and sender in tree.lcps_under(caller):
        if not tree.lcp_only:
            return f"{caller} may not pass on a sync for {sender}: it aggregates its subtree"
        return ""
    return f"{caller} may not sync for {sender}: not an LCP below it"
