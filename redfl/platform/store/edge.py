"""Edge jobs: who submitted or aborted which job of which edge deployment through the
platform. The jobs themselves live on their edge servers; the store keeps only this record.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from redfl.platform.models import EdgeAction, User


class EdgeActionStore:
    """The edge part of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def record_edge_action(
        self, deployment: str, job_id: str, action: str, user: User, detail: str = ""
    ) -> EdgeAction:
        """Record that ``user`` did ``action`` (``submit`` or ``abort``) to job ``job_id``
        of the edge deployment ``deployment``; ``detail``: the job's name, or the reason."""
        row = EdgeAction(
            deployment=deployment,
            job_id=job_id,
            action=action,
            user_id=user.id,
            user_name=user.name,
            detail=detail,
        )
        self.session.add(row)
        self.session.commit()
        return row

    def edge_actions(
        self, deployment: str, job_ids: Collection[str] | None = None
    ) -> list[EdgeAction]:
        """The actions on jobs of ``deployment`` (only on ``job_ids`` when given), oldest
        first."""
        query = select(EdgeAction).where(EdgeAction.deployment == deployment)
        if job_ids is not None:
            query = query.where(EdgeAction.job_id.in_(list(job_ids)))
        return list(self.session.scalars(query.order_by(EdgeAction.created_at, EdgeAction.id)))
