"""One edge job on the server: FedBuff, the selection, its run folder and its state on disk.

A job is a run like any other: its folder (``<jobs>/<job id>/``) holds ``config.json`` (the
job as submitted, options validated), ``events.jsonl``, ``metrics.jsonl`` (one line per model
version: a :class:`~redfl.core.result.RoundRecord` whose round is the version, with the
server-side evaluation's loss, accuracy and metrics), ``failures.jsonl`` (devices whose
``fit`` failed, a failing evaluation), ``model.safetensors`` (the current version, with the
device class and its options in its metadata, as a run's model) and, once the job has ended,
``summary.json``. Its ``state/`` folder (:mod:`redfl.edge.state`) lets a restarted server
take the job back where it was, with every acknowledged update (:meth:`EdgeJob.resume`).

What a sync changes is written before the sync is answered: a new version writes a snapshot
(then its metrics line, its model file), a sync that only folded into the buffer appends a
journal line. Events a sync causes are written once its state is safe, so a crash never
leaves a version in ``metrics.jsonl`` that the state does not hold.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from redfl.core.events import (
    Event,
    FailureRecorded,
    JobResumed,
    JobStalled,
    RoundFinished,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
)
from redfl.core.result import Failure, RoundRecord
from redfl.edge.fedbuff import FedBuff, PartialSum
from redfl.edge.jobs import BuiltJob, JobSpec, build_job
from redfl.edge.protocol import decode_arrays, encode_arrays
from redfl.edge.selection import Selector
from redfl.edge.state import Snapshot, StateFolder
from redfl.edge.wire import JobInfo, JobState, JobStatus, JobSync, VerdictMsg, foreign_ids
from redfl.run.folder import save_parameters, write_summary
from redfl.run.recorder import RunRecorder

__all__ = ["EdgeJob", "job_summary"]

log = logging.getLogger(__name__)

SCHEMA = "edge"
"""The ``schema`` of an edge job's run folder."""


def job_summary(folder: Path) -> dict[str, Any] | None:
    """The ``summary.json`` of an ended job's folder (None while it has none)."""
    try:
        data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class EdgeJob:
    """The server's side of one job.

    Build one with :meth:`create` (a new job) or :meth:`resume` (a job whose server
    restarted).

    Parameters
    ----------
    built : BuiltJob
        The job, resolved.
    job_id : str
        Its id (``<name>-<8 hex>``).
    folder : Path
        Its run folder.
    clock : Callable[[], float]
        Monotonic seconds (selection deadlines, the job's time).
    fsync : bool
        Sync every journal line to disk.
    snapshot_interval : float
        Seconds between snapshots while only the selection or the buffer changes.
    """

    def __init__(
        self,
        built: BuiltJob,
        job_id: str,
        folder: Path,
        clock: Callable[[], float] = time.monotonic,
        fsync: bool = False,
        snapshot_interval: float = 2.0,
    ) -> None:
        spec = built.spec
        self.built, self.spec, self.job_id, self.folder = built, spec, job_id, folder
        self.clock = clock
        self.fedbuff = FedBuff(spec.fedbuff(), built.initial)
        self.selector = Selector(spec.selection(), clock)
        self.history: list[dict[str, float]] = []
        self.last: dict[str, tuple[str, int, list[VerdictMsg]]] = {}  # sender -> boot, seq
        self.status: JobStatus = "running"
        self.reason = ""
        self.failures = 0
        self.stalled = False
        self.ended_at: float | None = None  # clock() when it ended
        self.store = StateFolder(folder / "state", fsync)
        self.snapshot_interval = snapshot_interval
        self.recorder: RunRecorder | None = None
        self.info = JobInfo(
            job_id=job_id,
            name=spec.name,
            client=spec.client,
            options=built.options,
            seed=spec.seed,
            config=spec.config,
            limits=spec.limits(),
        )
        self._elapsed = 0.0  # job time before this process took it
        self._since = clock()
        self._snapshot_at = clock()
        self._dirty = False
        self._new_ids: list[str] = []
        self._events: list[Event] = []
        self._failed_in_version = 0
        self._encoded = (-1, "")

    # -- life -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        built: BuiltJob,
        jobs_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        fsync: bool = False,
        snapshot_interval: float = 2.0,
    ) -> EdgeJob:
        """A new job: its run folder, its first snapshot, version 0 evaluated."""
        job_id = f"{built.spec.name}-{uuid.uuid4().hex[:8]}"
        folder = Path(jobs_dir) / job_id
        folder.mkdir(parents=True)
        config = built.spec.model_dump(mode="json", exclude={"initial_parameters"})
        config["options"] = built.options
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        job = cls(built, job_id, folder, clock, fsync, snapshot_interval)
        job.recorder = RunRecorder(folder)
        spec = built.spec
        job._events.append(RunStarted(job_id, SCHEMA, spec.max_model_version, 1, ()))
        job.history.append(job._evaluate(0))
        job._persist(snapshot=True)
        return job

    @classmethod
    def resume(
        cls,
        folder: Path,
        clock: Callable[[], float] = time.monotonic,
        allowed_prefixes: Sequence[str] | None = None,
        fsync: bool = False,
        snapshot_interval: float = 2.0,
    ) -> EdgeJob:
        """Take back the job of ``folder`` where its state on disk left it.

        Raises
        ------
        StateError
            If its state cannot be read.
        ConfigError
            If its config no longer builds (a class that moved, say).
        """
        start = time.perf_counter()
        store = StateFolder(folder / "state", fsync)
        snapshot, ids, records = store.load()
        spec = JobSpec.model_validate_json((folder / "config.json").read_text(encoding="utf-8"))
        model = {
            k.removeprefix("model/"): v
            for k, v in snapshot.arrays.items()
            if k.startswith("model/")
        }
        built = build_job(spec, model, allowed_prefixes)
        job = cls(built, folder.name, folder, clock, fsync, snapshot_interval)
        job.store = store
        meta = snapshot.meta
        job.fedbuff.restore(meta["fedbuff"], snapshot.arrays, set(ids))
        job.selector.restore(meta["selection"])
        job.history = meta["history"]
        job.last = {
            s: (b, q, [VerdictMsg(**v) for v in vs]) for s, (b, q, vs) in meta["last"].items()
        }
        job.failures = int(meta["failures"])
        job.stalled = bool(meta["stalled"])
        job.status, job.reason = meta["status"], meta["reason"]
        job._elapsed = float(meta["elapsed"])
        for record in records:
            job._replay(record)
        failures = [Failure(**f) for f in _read_lines(folder / "failures.jsonl")]
        job.recorder = RunRecorder(folder, append=True)
        job.recorder.rewrite([_record_of(h) for h in job.history[1:]], failures)
        version = job.fedbuff.version
        job._events.append(RunStarted(job.job_id, SCHEMA, spec.max_model_version, version + 1, ()))
        job._events.append(JobResumed(version, len(records), round(time.perf_counter() - start, 4)))
        job._persist(snapshot=True)
        return job

    def time(self) -> float:
        """Seconds of the job's life (across restarts of its server)."""
        return self._elapsed + self.clock() - self._since

    @property
    def running(self) -> bool:
        """Whether it still takes updates."""
        return self.status == "running"

    # -- syncs ------------------------------------------------------------------------

    def take(
        self, sender: str, boot: str, seq: int, part: JobSync, lcps: frozenset[str]
    ) -> list[VerdictMsg]:
        """Fold a sender's partial sums, note its failures and candidates; return the verdict
        of each partial sum (the same ones again for a repeated sync).

        ``lcps`` are the LCPs at or below the sender: task ids, candidates and failures of
        others are refused. What changed is on disk before this returns.
        """
        previous = self.last.get(sender)
        if previous is not None and previous[:2] == (boot, seq):
            return previous[2]
        verdicts: list[VerdictMsg] = []
        folded: list[dict[str, Any]] = []
        reported: list[str] = []
        versions = self.fedbuff.version
        for partial in part.partials:
            reported.extend(partial.devices)
            for device in partial.devices:
                self.selector.reported(device)
            verdict, fold = self._fold(
                partial.base_version, partial.sums, partial.weight, partial.task_ids, lcps
            )
            if fold:
                folded.append(
                    {
                        "base_version": partial.base_version,
                        "sums": partial.sums,
                        "weight": partial.weight,
                        "task_ids": partial.task_ids,
                    }
                )
            verdicts.append(verdict)
        failures = [f for f in part.failures if not foreign_ids([f.task_id], lcps)]
        for failure in failures:
            reported.append(failure.device)
            self.selector.reported(failure.device)
            self._fail(Failure(failure.device, failure.base_version, "fit", failure.reason))
        if self.running:
            for lcp, devices in part.offered.items():
                if lcp in lcps:
                    for device in devices:
                        self.selector.offer(device, lcp)
        self.last[sender] = (boot, seq, verdicts)
        self._dirty = self._dirty or bool(part.partials or part.offered or failures)
        if self.fedbuff.version != versions:
            if self.fedbuff.done and self.running:
                self._end("succeeded", "")
            self._persist(snapshot=True)
        elif folded or failures:
            record = {
                "sender": sender,
                "boot": boot,
                "seq": seq,
                "folded": folded,
                "verdicts": [v.model_dump() for v in verdicts],
                "reported": reported,
                "failures": [f.model_dump() for f in failures],
            }
            self.store.append(record)
            self._flush_events()
        return verdicts

    def _fold(
        self, base: int, sums: str, weight: float, task_ids: list[str], lcps: frozenset[str]
    ) -> tuple[VerdictMsg, bool]:
        """Submit one partial sum to FedBuff: its verdict, and whether it was folded."""
        foreign = foreign_ids(task_ids, lcps)
        if foreign:
            self.fedbuff.rejected["not its tasks"] += len(task_ids)
            reason = f"not its tasks: {foreign[0]!r} was not issued below the sender"
            return VerdictMsg(accepted=False, reason=reason), False
        cap = self.spec.max_samples_per_update * len(task_ids)
        if weight > cap:
            self.fedbuff.rejected["over the cap"] += len(task_ids)
            reason = f"over the cap: weight {weight:g} for {len(task_ids)} updates (at most {cap})"
            return VerdictMsg(accepted=False, reason=reason), False
        try:
            arrays = decode_arrays(sums, dtype=np.float64)
        except ValueError as exc:
            self.fedbuff.rejected["invalid"] += len(task_ids)
            return VerdictMsg(accepted=False, reason=f"invalid: {exc}"), False
        verdict = self.fedbuff.submit(PartialSum(base, arrays, weight, tuple(task_ids)))
        fold = verdict.accepted and verdict.reason != "already folded"
        if fold:
            self._new_ids.extend(task_ids)
        if verdict.new_version:
            self._version_made()
        return VerdictMsg(accepted=verdict.accepted, reason=verdict.reason), fold

    def _replay(self, record: dict[str, Any]) -> None:
        """Fold a journal line again (recovery): the same sums onto the same state."""
        for partial in record["folded"]:
            arrays = decode_arrays(partial["sums"], dtype=np.float64)
            ids = tuple(partial["task_ids"])
            self.fedbuff.submit(PartialSum(partial["base_version"], arrays, partial["weight"], ids))
            self._new_ids.extend(ids)
        for device in record["reported"]:
            self.selector.reported(device)
        self.failures += len(record["failures"])
        verdicts = [VerdictMsg(**v) for v in record["verdicts"]]
        self.last[record["sender"]] = (record["boot"], record["seq"], verdicts)

    def state_for(
        self,
        part: JobSync | None,
        lcps: Sequence[str],
        fresh: bool,
        verdicts: list[VerdictMsg],
    ) -> JobState:
        """The job for one sender: its description when the sender does not know it
        (``part`` is None, or it holds no parameters of it), the parameters when its copy is
        older, and the selections of ``lcps`` (the LCPs at or below it) that changed (all of
        them when ``fresh``: the sender knows another boot of the server)."""
        fb = self.fedbuff
        selected: dict[str, list[str]] = {}
        epochs: dict[str, int] = {}
        for lcp in lcps:
            epoch = self.selector.epochs[lcp]
            if fresh or part is None or part.selection_epochs.get(lcp) != epoch:
                selected[lcp] = list(self.selector.by_lcp.get(lcp, ()))
                epochs[lcp] = epoch
        return JobState(
            job_id=self.job_id,
            info=self.info if part is None or part.known_version < 0 else None,
            version=fb.version,
            status=self.status,
            reason=self.reason,
            parameters=""
            if part is not None and part.known_version == fb.version
            else self.parameters_text(),
            selected=selected,
            selection_epochs=epochs,
            verdicts=verdicts,
        )

    def parameters_text(self) -> str:
        """The current parameters, encoded once per version."""
        if self._encoded[0] != self.fedbuff.version:
            self._encoded = (self.fedbuff.version, encode_arrays(self.fedbuff.parameters))
        return self._encoded[1]

    def tick(self) -> None:
        """Evict late devices and refill the selection; note a stall; snapshot now and then."""
        if self.running:
            self.selector.tick()
            exhausted = self.selector.exhausted
            if exhausted and not self.stalled:
                reason = (
                    "no device left to select: every device that asked has been used "
                    "once (device_reuse = false); waiting for new devices"
                )
                log.warning("edge job %s: %s", self.job_id, reason)
                self._events.append(JobStalled(self.fedbuff.version, reason))
                self._flush_events()
            self.stalled = exhausted
        if self._dirty and self.clock() - self._snapshot_at >= self.snapshot_interval:
            self._persist(snapshot=True)

    def abort(self, reason: str) -> None:
        """End the job now: no more updates, its folder says ``cancelled``."""
        if not self.running:
            return
        why = reason or "aborted by the operator"
        self.fedbuff.stop(f"job aborted: {why}")
        self._end("cancelled", why)
        self._persist(snapshot=True)

    def close(self) -> None:
        """Write what is pending and close the files (the server stops)."""
        if self._dirty:
            self._persist(snapshot=True)
        self.store.close()
        if self.recorder is not None:
            self.recorder.close()

    # -- versions, failures, the end ---------------------------------------------------

    def _evaluate(self, version: int) -> dict[str, float]:
        """The history entry of the current version: its time and evaluation."""
        entry: dict[str, float] = {"version": version, "time": round(self.time(), 6)}
        evaluate = self.built.evaluate
        if evaluate is None:
            return entry
        try:
            loss, metrics = evaluate(self.fedbuff.parameters)
            entry["loss"] = float(loss)
            entry.update({k: float(v) for k, v in metrics.items()})
        except Exception as exc:  # the user's code: a recorded failure, the job goes on
            log.warning("edge job %s: evaluate failed:\n%s", self.job_id, traceback.format_exc())
            self._fail(Failure("server", version, "evaluate", f"{type(exc).__name__}: {exc}"))
        return entry

    def _version_made(self) -> None:
        fb = self.fedbuff
        entry = self._evaluate(fb.version)
        entry["updates"] = fb.folded_last
        previous = self.history[-1]["time"] if self.history else 0.0
        self.history.append(entry)
        record = _record_of(entry, round(entry["time"] - previous, 6), self._failed_in_version)
        self._failed_in_version = 0
        self._events.append(RoundFinished(record))

    def _fail(self, failure: Failure) -> None:
        self.failures += 1
        self._failed_in_version += 1
        self._events.append(FailureRecorded(failure))

    def _end(self, status: JobStatus, reason: str) -> None:
        self.status, self.reason = status, reason
        self.ended_at = self.clock()
        self.selector.clear()
        summary = self.summary()
        if status == "succeeded":
            self._events.append(RunFinished(self.fedbuff.version, summary))
        elif status == "cancelled":
            self._events.append(RunCancelled(self.fedbuff.version))
        else:
            self._events.append(RunFailed(self.fedbuff.version, reason))

    def _persist(self, snapshot: bool) -> None:
        """Snapshot (when asked), then the model and summary files, then the events."""
        if snapshot:
            meta, arrays = self.fedbuff.state()
            last = {s: [b, q, [v.model_dump() for v in vs]] for s, (b, q, vs) in self.last.items()}
            state = {
                "fedbuff": meta,
                "selection": self.selector.state(),
                "history": self.history,
                "last": last,
                "failures": self.failures,
                "stalled": self.stalled,
                "elapsed": self.time(),
                "status": self.status,
                "reason": self.reason,
            }
            self.store.snapshot(Snapshot(arrays, state), self._new_ids)
            self._new_ids = []
            self._dirty = False
            self._snapshot_at = self.clock()
            self._save_model()
            if not self.running:
                write_summary(self.folder / "summary.json", self.summary())
        self._flush_events()
        if not self.running and self.recorder is not None:
            self.recorder.close()
            self.recorder = None
            self.store.close()

    def _save_model(self) -> None:
        """The run folder's model file: the current version, written whole."""
        final = self.history[-1] if self.history else {}
        metadata = {
            "name": self.spec.name,
            "client": {"target": self.spec.client, "options": self.built.options},
            "rounds": self.fedbuff.version,
            "seed": self.spec.seed,
            "accuracy": final.get("accuracy"),
            "job_id": self.job_id,
        }
        temp = self.folder / ".model.safetensors.tmp"
        save_parameters(temp, self.fedbuff.parameters, metadata)
        temp.replace(self.folder / "model.safetensors")

    def _flush_events(self) -> None:
        if self.recorder is not None:
            for event in self._events:
                self.recorder.on_event(event)
        self._events = []

    # -- reports ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What ``GET /jobs`` lists and ``summary.json`` holds."""
        fb = self.fedbuff
        final = self.history[-1] if self.history else {}
        return {
            "job_id": self.job_id,
            "name": self.spec.name,
            "schema": SCHEMA,
            "client": self.spec.client,
            "status": self.status,
            "error": self.reason or None,
            "version": fb.version,
            "rounds": fb.version,
            "rounds_planned": self.spec.max_model_version,
            "accepted": fb.accepted,
            "rejected": dict(fb.rejected),
            "buffered": fb.buffered,
            "failures": self.failures,
            "selected": len(self.selector.selected),
            "evicted": self.selector.evicted,
            "stalled": self.stalled,
            "accuracy": final.get("accuracy"),
            "loss": final.get("loss"),
            "wall_seconds": round(self.time(), 3),
            "folder": str(self.folder),
        }

    def status_report(self, ids: bool = False) -> dict[str, Any]:
        """The summary, the history of every version and (with ``ids``) the folded ids."""
        out = {**self.summary(), "accepted_unique": len(self.fedbuff.accepted_ids)}
        out["history"] = self.history
        if ids:
            out["task_ids"] = sorted(self.fedbuff.accepted_ids)
        return out


def _record_of(entry: dict[str, float], seconds: float = 0.0, failed: int = 0) -> RoundRecord:
    """A version's history entry as a round record (the round is the version)."""
    skip = {"version", "time", "loss", "accuracy", "updates"}
    updates = int(entry.get("updates", 0))
    return RoundRecord(
        round=int(entry["version"]),
        sampled=updates,
        succeeded=updates,
        failed=failed,
        seconds=seconds,
        loss=entry.get("loss"),
        accuracy=entry.get("accuracy"),
        metrics={k: v for k, v in entry.items() if k not in skip},
    )


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
