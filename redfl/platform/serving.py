"""Serving runs' models from the platform, on the Ray cluster that runs them.

The platform deploys a succeeded run's model with :func:`redfl.run.serving.deploy_run`
(one Ray Serve application per deployment, named ``run-<run id>``), **without** Ray Serve's
HTTP route: the only way in is ``POST /api/deployments/{id}/predict``, which authenticates
the caller with the platform's own tokens and passes the body to the replicas from inside
the cluster (:func:`redfl.run.serving.predict_body`), through the same checks and batching
as a model served with ``redfl model serve``.

The database is the record of what should be served (:class:`~redfl.platform.models.Deployment`);
the deployments' signing keys and model copies that ``deploy_run`` keeps are in
``<data>/models``. When the server starts (``redfl serve``), :meth:`ModelServer.reconcile`
compares the two with Ray Serve: a deployment Ray Serve still runs is ``running``; one it no
longer has (its Ray head was restarted, say) is **deployed again** from its run folder, and
marked ``lost`` with the reason if that fails.

The server joins Ray as a driver on first use: the cluster of ``ray_address`` (a GCS address,
``host:port``), or the data folder's embedded head (started if need be), authenticating with
the head's token (:func:`use_head_token`, which ``redfl serve`` calls as it starts).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from redfl.core.config import ConfigError
from redfl.platform.models import Run
from redfl.platform.settings import Settings
from redfl.platform.store import NotFound, Store
from redfl.platform.store.deployments import ACTIVE
from redfl.runtime.jobs import TOKEN_FILE, ensure_head
from redfl.runtime.serving_requests import Answer

LOG = logging.getLogger("redfl.platform")
RECONCILE_LEASE = "deployments"
RECONCILE_SECONDS = 900.0
"""How long one server may take to reconcile the deployments before another may."""
SERVING = ("RUNNING", "DEPLOYING", "UPDATING")
"""Ray Serve's statuses of an application that serves, or is about to."""
MODELS_DIR = "models"
"""The folder of ``<data>`` that holds the served models' keys and model copies."""


class ServingError(RuntimeError):
    """The platform cannot reach Ray Serve (its cluster is not reachable or not
    joinable)."""


def use_head_token(settings: Settings) -> None:
    """Make this process authenticate to the data folder's embedded Ray head (with its
    token) when it joins it as a driver; a no-op with ``ray_address`` set.

    Ray reads its authentication settings once per process, from the environment: call this
    before anything in the process uses Ray (``redfl serve`` does, as it starts).
    """
    if settings.ray_address in (None, "local"):
        data = Path(settings.data_dir).resolve()
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(data / TOKEN_FILE)


class ModelServer:
    """Deploys, stops, reconciles and asks the platform's served models.

    Parameters
    ----------
    settings:
        The platform's settings (``ray_address``, ``serving_*``, ``client_packages``).
    sessions:
        The store's sessions (deployment rows are read and updated through them).
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.home = Path(settings.data_dir) / MODELS_DIR
        self._lock = threading.Lock()
        self._joined = False

    def connect(self) -> None:
        """Join the Ray cluster the platform runs on (once; a no-op after).

        Raises
        ------
        ServingError
            ``ray_address`` names a job server (``http://...``), which a driver cannot join,
            or the cluster cannot be reached.
        """
        with self._lock:
            if self._joined:
                return
            from redfl.runtime.serving import join

            address = self.settings.ray_address
            if address is not None and address.startswith(("http://", "https://")):
                raise ServingError(
                    "ray_address: serving models needs the cluster's address (host:port), "
                    f"not its job server ({address})"
                )
            if address in (None, "local"):
                data = Path(self.settings.data_dir).resolve()
                head = ensure_head(data, self.settings.ray_num_cpus, nice=self.settings.ray_nice)
                address = head.address
            try:
                join(address, self.settings.serving_timeout_seconds)
            except ConnectionError as error:
                raise ServingError(str(error)) from None
            self._joined = True

    def check(self, run: Run) -> None:
        """Refuse a run whose folder cannot be served: no model, a client class outside the
        allowed packages or without a predict hook, or one that fails to predict.

        Raises
        ------
        ConfigError
            Naming the problem.
        """
        from redfl.run.serving import load_run

        load_run(run.run_dir, self.settings.client_packages)

    def deploy(self, deployment_id: str, failed: str = "failed") -> str:
        """Deploy the stored deployment ``deployment_id`` and record how it went: status
        ``running``, or ``failed`` (``failed`` says which) with the reason; the status set.

        A deployment deleted while it was being deployed is removed from Ray Serve again.
        """
        with self.sessions() as session:
            store = Store(session)
            try:
                row = store.require_deployment(deployment_id)
            except NotFound:
                return "deleted"
            run = store.require_run(row.run_id)
            name, replicas, max_batch, folder = row.name, row.replicas, row.max_batch, run.run_dir
        try:
            self.connect()
            from redfl.run.deployments import DeploymentStore
            from redfl.run.serving import ServeOptions, deploy_run

            DeploymentStore(self.home).remove(name)  # what an interrupted deployment left
            options = ServeOptions.of(
                name=name,
                replicas=replicas,
                max_batch=max_batch,
                replica_cpus=self.settings.serving_replica_cpus,
                http=False,
                connect_timeout=self.settings.serving_timeout_seconds,
            )
            deploy_run(
                folder, options, home=self.home, allowed_prefixes=self.settings.client_packages
            )
        except Exception as error:  # bad folder, cluster, replicas: all end as the row's error
            reason = (
                f"{type(error).__name__}: {error}"
                if not isinstance(error, ConfigError)
                else str(error)
            )
            LOG.warning(
                "deployment failed",
                extra={"event": "deployment_failed", "deployment": deployment_id, "reason": reason},
            )
            return self._record(deployment_id, failed, reason)
        status = self._record(deployment_id, "running", None)
        if status == "deleted":
            self.stop(name)
        return status

    def _record(self, deployment_id: str, status: str, error: str | None) -> str:
        with self.sessions() as session:
            try:
                Store(session).set_deployment_status(deployment_id, status, error)
            except NotFound:
                return "deleted"
        return status

    def stop(self, name: str) -> None:
        """Remove the served model ``name`` from Ray Serve and its key and model copy (no
        error when it is not there)."""
        self.connect()
        from redfl.run.deployments import DeploymentStore
        from redfl.runtime.serving import remove

        remove(name)
        DeploymentStore(self.home).remove(name)

    def predict(self, name: str, body: bytes) -> Answer:
        """The answer of the served model ``name`` to a predict body.

        Raises
        ------
        KeyError
            Ray Serve has no model of that name.
        TimeoutError
            No answer within ``serving_timeout_seconds``.
        """
        self.connect()
        from redfl.run.serving import predict_body

        return predict_body(name, body, self.settings.serving_timeout_seconds)

    def reconcile(self) -> dict[str, str]:
        """Compare the deployments meant to be served with Ray Serve: those it runs are
        ``running``; the others are deployed again (``lost`` if that fails). The status of
        each deployment looked at, by id.

        Servers sharing the database take turns (a lease): one that starts while another
        reconciles leaves it to that one (and returns nothing).
        """
        holder = uuid.uuid4().hex
        with self.sessions() as session:
            if not Store(session).hold_lease(RECONCILE_LEASE, holder, RECONCILE_SECONDS):
                return {}
        try:
            return self._reconcile()
        finally:
            with self.sessions() as session:
                Store(session).release_lease(RECONCILE_LEASE, holder)

    def _reconcile(self) -> dict[str, str]:
        with self.sessions() as session:
            wanted = [(d.id, d.name) for d in Store(session).list_deployments(ACTIVE)]
        if not wanted:
            return {}
        try:
            self.connect()
        except ServingError as error:
            return {i: self._record(i, "lost", str(error)) for i, _ in wanted}
        from redfl.runtime.serving import deployment_states

        states = deployment_states()
        done = {}
        for deployment_id, name in wanted:
            state = states.get(name)
            if state is not None and state.status in SERVING:
                done[deployment_id] = self._record(deployment_id, "running", None)
                continue
            if state is not None:  # there, but failed: deployed again below
                self.stop(name)
            LOG.info(
                "redeploying a deployment Ray Serve no longer runs",
                extra={"event": "deployment_redeployed", "deployment": deployment_id},
            )
            self._record(deployment_id, "deploying", None)
            done[deployment_id] = self.deploy(deployment_id, failed="lost")
        return done
