"""``/api/users``: admins list, create and delete users, change their roles and set their
passwords (which ends their sessions).

Every change clears the cache of known users, so it applies from the next request on.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from redfl.platform.api.deps import Admin, KnownUsersDep, StoreDep, UserNamePath
from redfl.platform.api.schemas import PasswordChange, RoleChange, UserCreate, UserOut
from redfl.platform.security import hash_password

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("")
def list_users(_: Admin, store: StoreDep) -> list[UserOut]:
    """Every user, by name."""
    return [UserOut.model_validate(u) for u in store.list_users()]


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"description": "Taken"}})
def create_user(body: UserCreate, _: Admin, store: StoreDep, known: KnownUsersDep) -> UserOut:
    """Create a user with a role and an initial password."""
    user = store.create_user(body.name, body.role, hash_password(body.password))
    known.clear()
    return UserOut.model_validate(user)


@router.patch("/{name}", responses={404: {"description": "No such user"}})
def change_role(
    name: UserNamePath, body: RoleChange, _: Admin, store: StoreDep, known: KnownUsersDep
) -> UserOut:
    """Change a user's role (the last admin keeps theirs: 409)."""
    user = store.set_role(name, body.role)
    known.clear()
    return UserOut.model_validate(user)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(name: UserNamePath, _: Admin, store: StoreDep, known: KnownUsersDep) -> None:
    """Delete a user; their runs stay, without owner (the last admin stays: 409)."""
    store.delete_user(name)
    known.clear()


@router.put(
    "/{name}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such user"}},
)
def set_password(
    name: UserNamePath,
    body: PasswordChange,
    _: Admin,
    store: StoreDep,
    known: KnownUsersDep,
    request: Request,
) -> None:
    """Set a user's password; every session of theirs ends (their refresh and access tokens
    are revoked), so they log in again with the new one."""
    store.set_password_hash(name, hash_password(body.password))
    known.clear()
    request.app.state.revoked.load(request.app.state.sessions)
