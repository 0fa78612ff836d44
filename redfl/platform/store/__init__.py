"""The repository layer: every read and write of the platform's tables goes through
:class:`Store`, one per database session.

Examples
--------
>>> from redfl.platform.db import make_engine, session_factory, upgrade
>>> engine = make_engine("sqlite://")
>>> upgrade(engine)
>>> with session_factory(engine)() as session:
...     store = Store(session)
...     store.create_user("ada", "admin", "hash").role
'admin'
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from redfl.platform.store.deployments import DeploymentStore
from redfl.platform.store.edge import EdgeActionStore
from redfl.platform.store.errors import Conflict, NotFound, StoreError
from redfl.platform.store.leases import LeaseStore
from redfl.platform.store.projects import ProjectStore
from redfl.platform.store.queue import CLOSING_EVENTS, QueueStore
from redfl.platform.store.runs import RunFilter, new_run_id
from redfl.platform.store.users import SpentToken, UserStore

__all__ = [
    "CLOSING_EVENTS",
    "Conflict",
    "NotFound",
    "RunFilter",
    "SpentToken",
    "Store",
    "StoreError",
    "new_run_id",
]


class Store(UserStore, ProjectStore, QueueStore, LeaseStore, DeploymentStore, EdgeActionStore):
    """Users, projects, runs, leases, deployments and edge actions over one SQLAlchemy
    session."""

    def __init__(self, session: Session) -> None:
        self.session = session
