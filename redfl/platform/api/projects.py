"""``/api/projects``: viewers read; researchers create; the owner or an admin changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from redfl.platform.api.deps import Researcher, StoreDep, Viewer
from redfl.platform.api.schemas import ProjectCreate, ProjectOut, ProjectUpdate
from redfl.platform.models import Project, User

router = APIRouter(prefix="/api/projects", tags=["projects"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such project"}}
ProjectId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _check_owner(project: Project, user: User) -> None:
    if user.role != "admin" and project.owner_id != user.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="only the project's owner or an admin may change it"
        )


@router.get("")
def list_projects(_: Viewer, store: StoreDep) -> list[ProjectOut]:
    """Every project, by name."""
    return [ProjectOut.model_validate(p) for p in store.list_projects()]


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"description": "Taken"}})
def create_project(body: ProjectCreate, user: Researcher, store: StoreDep) -> ProjectOut:
    """Create a project owned by the caller."""
    project = store.create_project(body.name, body.description, user, body.members)
    return ProjectOut.model_validate(project)


@router.get("/{project_id}", responses=NOT_FOUND)
def get_project(project_id: ProjectId, _: Viewer, store: StoreDep) -> ProjectOut:
    """One project."""
    return ProjectOut.model_validate(store.require_project(project_id))


@router.patch("/{project_id}", responses=NOT_FOUND)
def update_project(
    project_id: ProjectId, body: ProjectUpdate, user: Researcher, store: StoreDep
) -> ProjectOut:
    """Change a project's name, description or members (its owner or an admin)."""
    _check_owner(store.require_project(project_id), user)
    project = store.update_project(project_id, body.name, body.description, body.members)
    return ProjectOut.model_validate(project)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_project(project_id: ProjectId, user: Researcher, store: StoreDep) -> None:
    """Delete a project (its owner or an admin); its runs stay, without project."""
    _check_owner(store.require_project(project_id), user)
    store.delete_project(project_id)
