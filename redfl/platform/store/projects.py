"""Projects: a name, a description, an owner and members."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from redfl.platform.models import Project, User, name_key
from redfl.platform.store.errors import NotFound, commit_or_conflict, require_row


class ProjectStore:
    """The project part of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def _members(self, names: list[str]) -> list[User]:
        keys = [name_key(n) for n in names]
        query = select(User).where(User.name_key.in_(keys))
        found = {u.name_key: u for u in self.session.scalars(query)}
        missing = [n for n, k in zip(names, keys, strict=True) if k not in found]
        if missing:
            raise NotFound(f"members: no such user {missing[0]!r}")
        return list({found[k].id: found[k] for k in keys}.values())

    def create_project(
        self, name: str, description: str, owner: User | None, members: list[str]
    ) -> Project:
        """Add a project; a taken name is a :class:`Conflict`, an unknown member a
        :class:`NotFound`."""
        project = Project(
            name=name,
            description=description,
            owner_id=None if owner is None else owner.id,
            members=self._members(members),
        )
        self.session.add(project)
        commit_or_conflict(self.session, f"project {name!r} already exists")
        self.session.refresh(project)
        return project

    def require_project(self, project_id: int) -> Project:
        """The project with ``project_id``; a :class:`NotFound` if there is none."""
        return require_row(self.session, Project, project_id, f"project {project_id}")

    def project_by_name(self, name: str) -> Project | None:
        """The project called ``name``, or ``None``."""
        return self.session.scalars(select(Project).where(Project.name == name)).one_or_none()

    def list_projects(self) -> list[Project]:
        """Every project, by name."""
        return list(self.session.scalars(select(Project).order_by(Project.name)))

    def update_project(
        self,
        project_id: int,
        name: str | None = None,
        description: str | None = None,
        members: list[str] | None = None,
    ) -> Project:
        """Change the given fields of a project."""
        project = self.require_project(project_id)
        if name is not None:
            project.name = name
        if description is not None:
            project.description = description
        if members is not None:
            project.members = self._members(members)
        commit_or_conflict(self.session, f"project {project.name!r} already exists")
        return project

    def delete_project(self, project_id: int) -> None:
        """Delete a project (its runs stay, without project)."""
        self.session.delete(self.require_project(project_id))
        self.session.commit()
