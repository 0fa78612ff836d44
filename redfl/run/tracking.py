"""Experiment tracking: a run also logged to MLflow, TensorBoard or Weights & Biases.

The ``[tracking]`` table turns each on (an empty sub-table takes every default)::

    [tracking.mlflow]          # MLflow: a local file store by default
    experiment = "digits"      # default: federation.name
    [tracking.tensorboard]     # TensorBoard event files
    [tracking.wandb]           # Weights & Biases, offline by default
    project = "redfl"

Each tracker is a :class:`~redfl.schemas.callbacks.Callback` that :func:`redfl.run` adds for
the run: the config's every field (defaults included, dotted keys) as parameters, each
round's record as metrics at that step (``loss``, ``accuracy``, ``train_loss``, ``seconds``,
``sampled``, ``succeeded``, ``failed`` and the round's own ``metrics``), and when the run
ends its model (``model.safetensors``) and ``summary.json`` as artifacts (TensorBoard keeps
no files: the summary goes in as text), and its final status.

Defaults put the logs where the run's tools find them: MLflow's file store in ``mlruns/``
beside the run folder (shared by the runs of one root, so MLflow's UI compares them: ``mlflow
ui --backend-store-uri runs/mlruns``), TensorBoard's event files in the run folder's
``tensorboard/`` (``tensorboard --logdir runs``), W&B's offline run in the run folder's
``wandb/`` (``wandb sync`` uploads it later). MLflow 3 keeps its file store only on request:
with a ``file:`` tracking URI this module sets ``MLFLOW_ALLOW_FILE_STORE=true`` for the
process, as MLflow asks. The packages are the ``tracking`` extra (``pip install
'redfl[tracking]'``), imported only when a tracker is on.

A tracker that fails (a store that cannot be written) says so once in the log and stops
tracking; the run goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from redfl.core.config import SERVER_FILE, ConfigError, Strict
from redfl.core.events import (
    Event,
    RoundFinished,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStopped,
)
from redfl.core.result import RoundRecord
from redfl.schemas.callbacks import Callback

LOG = logging.getLogger("redfl.tracking")
CLOSING = (RunFinished, RunFailed, RunCancelled, RunStopped)
STATUS = {
    RunFinished: "succeeded",
    RunFailed: "failed",
    RunCancelled: "cancelled",
    RunStopped: "stopped",
}
MODEL_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
NAME = r"^[A-Za-z0-9_.:/ -]{1,128}$"


class MlflowTracking(Strict):
    """``[tracking.mlflow]``: where and under which experiment the run is logged."""

    tracking_uri: str | None = Field(
        default=None, min_length=1, max_length=1000, json_schema_extra=SERVER_FILE
    )
    """An MLflow tracking URI (``file:/path``, ``sqlite:///path``, ``http://host``);
    default: the file store ``mlruns/`` beside the run folder."""
    experiment: str | None = Field(default=None, pattern=NAME)
    """Default: ``federation.name``."""
    run_name: str | None = Field(default=None, pattern=NAME)
    """Default: the run folder's name."""


class TensorBoardTracking(Strict):
    """``[tracking.tensorboard]``: where the event files go."""

    log_dir: str | None = Field(
        default=None, min_length=1, max_length=1000, json_schema_extra=SERVER_FILE
    )
    """Default: ``tensorboard/`` in the run folder."""


class WandbTracking(Strict):
    """``[tracking.wandb]``: the W&B project and how runs reach it."""

    project: str = Field(default="redfl", pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    entity: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    mode: Literal["offline", "online", "disabled"] = "offline"
    """``offline`` (the default) writes the run to disk only; ``online`` uploads it as it
    goes (needs the network and ``WANDB_API_KEY``)."""
    dir: str | None = Field(
        default=None, min_length=1, max_length=1000, json_schema_extra=SERVER_FILE
    )
    """Where W&B writes its ``wandb/`` folder; default: the run folder."""


class TrackingConfig(Strict):
    """The ``[tracking]`` table: which trackers log the run (none by default)."""

    mlflow: MlflowTracking | None = None
    tensorboard: TensorBoardTracking | None = None
    wandb: WandbTracking | None = None


def round_metrics(record: RoundRecord) -> dict[str, float]:
    """A round's record as metric values (the ``None`` ones left out).

    Examples
    --------
    >>> round_metrics(RoundRecord(3, 10, 9, 1, 0.5, loss=0.25, metrics={"epsilon": 2.0}))
    {'sampled': 10.0, 'succeeded': 9.0, 'failed': 1.0, 'seconds': 0.5, 'loss': 0.25, 'epsilon': 2.0}
    """
    values: dict[str, Any] = {
        "sampled": record.sampled,
        "succeeded": record.succeeded,
        "failed": record.failed,
        "seconds": record.seconds,
        "train_loss": record.train_loss,
        "loss": record.loss,
        "accuracy": record.accuracy,
        **record.metrics,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


class Tracker(Callback):
    """Base of the trackers: calls :meth:`round` with each round's record and :meth:`end`
    when the run ends; an error of either turns the tracker off (logged once)."""

    kind = "tracker"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broken = False

    def on_event(self, event: Event) -> bool | None:
        """Log a round; end with the run."""
        if self.broken:
            return None
        try:
            if isinstance(event, RoundFinished):
                self.round(event.record.round, round_metrics(event.record))
            elif isinstance(event, CLOSING):
                self.end(STATUS[type(event)])
        except Exception as error:  # a tracker must not end the run
            self.broken = True
            LOG.warning("%s tracking stopped: %s: %s", self.kind, type(error).__name__, error)
        return None

    def round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics at ``step``."""
        raise NotImplementedError

    def end(self, status: str) -> None:
        """The run ended with ``status``: log its files, close."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The run's model and summary, those present."""
        return [p for p in (self.folder / MODEL_FILE, self.folder / SUMMARY_FILE) if p.is_file()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "null" if value is None else repr(value)


MLFLOW_STATUS = {
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "cancelled": "KILLED",
    "stopped": "KILLED",
}
"""MLflow's run status for each of a run's final statuses."""


class MlflowTracker(Tracker):
    """Logs the run as one MLflow run (parameters, metrics by step, artifacts, status)."""

    kind = "MLflow"

    def __init__(
        self, table: MlflowTracking, params: Mapping[str, Any], folder: Path, name: str
    ) -> None:
        super().__init__(folder)
        uri = table.tracking_uri or (folder.resolve().parent / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3's opt-in to its file store
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        experiment = table.experiment or name
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(
            experiment_id,
            run_name=table.run_name or folder.name,
            tags={"redfl.run_folder": str(folder.resolve())},
        )
        self.run_id = run.info.run_id
        items = [Param(k[:250], _text(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes 100 parameters a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Every metric of the round at ``step``."""
        now = int(time.time() * 1000)
        batch = [self._metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def end(self, status: str) -> None:
        """The model and summary as artifacts; the run's status."""
        for path in self.files():
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, MLFLOW_STATUS[status])


class TensorBoardTracker(Tracker):
    """Writes TensorBoard event files: scalars by round, the config as hyperparameters
    (the HParams tab) and as text, the summary as text when the run ends."""

    kind = "TensorBoard"

    def __init__(self, table: TensorBoardTracking, params: Mapping[str, Any], folder: Path):
        super().__init__(folder)
        from tensorboard.compat.proto.event_pb2 import Event as TbEvent
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import summary_v2 as hparams
        from tensorboard.plugins.text import summary_v2 as text
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._text = TbEvent, Summary, text
        self.log_dir = Path(table.log_dir) if table.log_dir else folder / "tensorboard"
        self.writer = EventFileWriter(str(self.log_dir))
        values = {
            k: v if isinstance(v, bool | int | float | str) else _text(v) for k, v in params.items()
        }
        self._write(0, hparams.hparams_pb(values, trial_id=folder.name))
        table_text = "\n".join(f"| {k} | {_text(v)} |" for k, v in params.items())
        self._write(0, text.text_pb("config", "| key | value |\n|---|---|\n" + table_text))
        self.writer.flush()

    def _write(self, step: int, summary: Any) -> None:
        self.writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))

    def round(self, step: int, metrics: Mapping[str, float]) -> None:
        """One scalar per metric at ``step``."""
        values = [self._summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]
        self._write(step, self._summary(value=values))
        self.writer.flush()

    def end(self, status: str) -> None:
        """The summary as text (with the status), then close the files."""
        path = self.folder / SUMMARY_FILE
        body = path.read_text(encoding="utf-8") if path.is_file() else "{}"
        self._write(0, self._text.text_pb("summary", f"status: {status}\n\n```\n{body}\n```"))
        self.writer.close()


class WandbTracker(Tracker):
    """Logs the run to Weights & Biases (offline by default): config, history by step,
    the model and summary as an artifact, the exit status."""

    kind = "W&B"

    def __init__(
        self, table: WandbTracking, params: Mapping[str, Any], folder: Path, name: str
    ) -> None:
        super().__init__(folder)
        import wandb

        self._wandb = wandb
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
        self.run = wandb.init(
            project=table.project,
            entity=table.entity,
            mode=table.mode,
            dir=table.dir or str(folder),
            name=folder.name,
            group=name,
            config=dict(params),
            settings=settings,
            reinit="create_new",
        )

    def round(self, step: int, metrics: Mapping[str, float]) -> None:
        """The round's metrics as the history row of ``step``."""
        self.run.log(dict(metrics), step=step)

    def end(self, status: str) -> None:
        """The model and summary as one artifact; finish with the run's exit code."""
        files = self.files()
        if files:
            artifact = self._wandb.Artifact(f"model-{self.folder.name}", type="model")
            for path in files:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "succeeded" else 1)


PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}
"""The package each tracker imports, by its table."""


def check_tracking(table: TrackingConfig) -> None:
    """Refuse trackers whose package is not installed (nothing is imported).

    Raises
    ------
    ConfigError
        Naming the table and the package (``pip install 'redfl[tracking]'``).
    """
    for key, package in PACKAGES.items():
        if getattr(table, key) is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"invalid config: tracking.{key}: needs the package {package!r}: "
                "pip install 'redfl[tracking]'"
            )


def tracking_callbacks(
    table: TrackingConfig, params: Mapping[str, Any], folder: Path, name: str
) -> list[Tracker]:
    """The trackers ``table`` turns on for the run in ``folder`` (``params``: the config's
    dotted fields; ``name``: ``federation.name``). One that cannot start (a store that
    cannot be opened) is left out, said once in the log: the run goes on without it."""
    makers: dict[str, Callable[[], Tracker]] = {}
    if table.mlflow is not None:
        mlflow = table.mlflow
        makers["mlflow"] = lambda: MlflowTracker(mlflow, params, folder, name)
    if table.tensorboard is not None:
        board = table.tensorboard
        makers["tensorboard"] = lambda: TensorBoardTracker(board, params, folder)
    if table.wandb is not None:
        wandb = table.wandb
        makers["wandb"] = lambda: WandbTracker(wandb, params, folder, name)
    made: list[Tracker] = []
    for key, make in makers.items():
        try:
            made.append(make())
        except Exception as error:  # a tracker must not stop the run
            LOG.warning("%s tracking not started: %s: %s", key, type(error).__name__, error)
    return made
