"""Served models: a run's deployment on Ray Serve, as the platform records it.

The store keeps what was asked (which run, by whom, replicas and batching) and what came
of it (``status``, ``error``); the serving itself is :mod:`redfl.platform.serving`'s.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from redfl.platform.models import DEPLOYMENT_STATUSES, Deployment, utcnow
from redfl.platform.store.errors import commit_or_conflict, require_row

ACTIVE = ("deploying", "running")
"""Statuses of a deployment that Ray Serve is meant to serve."""


class DeploymentStore:
    """The deployment part of :class:`~redfl.platform.store.Store` (needs
    ``self.session``)."""

    session: Session

    def create_deployment(
        self, run_id: str, owner_id: int | None, replicas: int, max_batch: int
    ) -> Deployment:
        """Record a new deployment of run ``run_id`` (status ``deploying``), named
        ``run-<run id>`` on Ray Serve; a run deployed already is a :class:`Conflict`."""
        deployment = Deployment(
            id=uuid.uuid4().hex,
            name=f"run-{run_id}",
            run_id=run_id,
            owner_id=owner_id,
            status="deploying",
            replicas=replicas,
            max_batch=max_batch,
        )
        self.session.add(deployment)
        commit_or_conflict(
            self.session, f"run {run_id} is deployed already (stop its deployment first)"
        )
        return deployment

    def require_deployment(self, deployment_id: str) -> Deployment:
        """The deployment ``deployment_id``; a :class:`NotFound` if there is none."""
        return require_row(self.session, Deployment, deployment_id, f"deployment {deployment_id}")

    def deployment_of_run(self, run_id: str) -> Deployment | None:
        """The deployment of run ``run_id``, if it has one."""
        query = select(Deployment).where(Deployment.run_id == run_id)
        return self.session.scalars(query).one_or_none()

    def list_deployments(self, statuses: tuple[str, ...] | None = None) -> list[Deployment]:
        """Every deployment (only those with one of ``statuses`` when given), newest first."""
        query = select(Deployment).order_by(Deployment.created_at.desc(), Deployment.id)
        if statuses is not None:
            query = query.where(Deployment.status.in_(statuses))
        return list(self.session.scalars(query))

    def set_deployment_status(
        self, deployment_id: str, status: str, error: str | None = None
    ) -> Deployment:
        """Set the status (and error, cleared when ``None``) of a deployment.

        Raises
        ------
        NotFound
            If it was deleted meanwhile.
        ValueError
            For an unknown status.
        """
        if status not in DEPLOYMENT_STATUSES:
            raise ValueError(f"status: must be one of {list(DEPLOYMENT_STATUSES)}, got {status!r}")
        deployment = self.require_deployment(deployment_id)
        deployment.status, deployment.error, deployment.updated_at = status, error, utcnow()
        self.session.commit()
        return deployment

    def delete_deployment(self, deployment_id: str) -> None:
        """Forget a deployment."""
        self.session.delete(self.require_deployment(deployment_id))
        self.session.commit()
