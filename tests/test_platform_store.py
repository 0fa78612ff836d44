"""The platform store: one suite, run on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pg_server import create_database, postgres_server_fixture  # noqa: F401  (session fixture)
from platform_app import store_run
from sqlalchemy import Engine, inspect, text
from waiting import wait_until

from redfl.platform.api.schemas import RunOut
from redfl.platform.db import (
    DatabaseError,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    ping,
    session_factory,
    sqlite_url,
    upgrade,
)
from redfl.platform.models import Base, RefreshToken
from redfl.platform.store import Conflict, NotFound, RunFilter, Store

TABLES = {
    "users",
    "refresh_tokens",
    "revoked_tokens",
    "projects",
    "project_members",
    "runs",
    "run_tags",
    "round_metrics",
    "failures",
    "events",
    "login_attempts",
    "leases",
    "deployments",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = create_database(request.getfixturevalue("postgres_server"))
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Iterator[Store]:
    """A store over one session of the migrated database."""
    with session_factory(engine)() as session:
        yield Store(session)


def _run(store: Store, owner_id: int | None, project_id: int | None = None) -> str:
    return store_run(store, owner_id, project_id=project_id, rounds=3, config="[client]\n")


def test_migrations_build_the_models_schema_and_are_idempotent(engine: Engine) -> None:
    assert current_revision(engine) == head_revision() == "0004"
    assert set(inspect(engine).get_table_names()) >= TABLES
    upgrade(engine)  # a second upgrade is a no-op
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert ping(engine)


def test_downgrade_drops_everything_and_upgrade_restores(engine: Engine) -> None:
    downgrade(engine)
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_unsupported_url_is_refused_with_the_scheme() -> None:
    with pytest.raises(DatabaseError, match=r"unsupported scheme 'mysql'"):
        make_engine("mysql://x/y")


def test_users_roles_and_the_last_admin(store: Store) -> None:
    ada = store.create_user("ada", "admin", "h1")
    store.create_user("bob", "viewer", "h2")
    assert [u.name for u in store.list_users()] == ["ada", "bob"]
    assert ada.created_at.tzinfo is not None
    with pytest.raises(Conflict, match="user 'ada' already exists"):
        store.create_user("ada", "viewer", "h3")
    with pytest.raises(Conflict, match="user 'Ada' already exists \\(as 'ada'\\)"):
        store.create_user("Ada", "viewer", "h3")
    assert store.require_user("ADA").name == "ada"  # one user, any case
    with pytest.raises(ValueError, match=r"role: must be one of .* got 'root'"):
        store.create_user("eve", "root", "h")
    with pytest.raises(Conflict, match="last admin"):
        store.set_role("ada", "viewer")
    with pytest.raises(Conflict, match="last admin"):
        store.delete_user("ada")
    assert store.set_role("bob", "admin").role == "admin"
    store.delete_user("ada")
    assert store.user_by_name("ada") is None
    with pytest.raises(NotFound, match="user 'ada' does not exist"):
        store.set_role("ada", "viewer")


def test_refresh_tokens_are_single_use_and_expire(store: Store) -> None:
    ada = store.create_user("ada", "admin", "h")
    later = datetime.now(UTC) + timedelta(hours=1)
    store.add_refresh_token(ada.id, "a" * 64, later, "fam-a")
    store.add_refresh_token(ada.id, "b" * 64, datetime.now(UTC) - timedelta(seconds=1), "fam-b")
    store.add_refresh_token(ada.id, "c" * 64, later, "fam-c")
    spent = store.use_refresh_token("a" * 64)
    assert spent is not None and (spent.user.name, spent.family) == ("ada", "fam-a")
    assert store.use_refresh_token("b" * 64) is None  # expired
    assert store.use_refresh_token("d" * 64) is None  # unknown
    assert store.revoke_refresh_token("c" * 64) == "fam-c"
    assert store.use_refresh_token("c" * 64) is None
    store.add_refresh_token(ada.id, "e" * 64, later, "fam-e")
    store.set_password_hash("ada", "new")
    assert store.use_refresh_token("e" * 64) is None  # a new password revokes them
    stored = store.session.query(RefreshToken).count()
    assert stored == 4  # digests only, never deleted by use
    revoked = {token_id for _, token_id, _ in store.revoked_since(0)}
    assert revoked == {"fam-c", "fam-e"}  # their access tokens are refused too


def test_a_spent_refresh_token_used_again_revokes_its_family(store: Store) -> None:
    ada = store.create_user("ada", "admin", "h")
    later = datetime.now(UTC) + timedelta(hours=1)
    store.add_refresh_token(ada.id, "a" * 64, later, "fam-1")
    assert store.use_refresh_token("a" * 64) is not None
    store.add_refresh_token(ada.id, "b" * 64, later, "fam-1")  # its successor
    store.add_refresh_token(ada.id, "c" * 64, later, "fam-2")  # another login
    assert store.revoked_since(0) == []
    assert store.use_refresh_token("a" * 64) is None  # replayed
    assert store.use_refresh_token("b" * 64) is None  # so the successor is dead too
    assert store.use_refresh_token("c" * 64) is not None  # the other login lives on
    ((_, token_id, expires),) = store.revoked_since(0)
    assert token_id == "fam-1" and abs((expires - later).total_seconds()) < 1


def test_old_attempts_and_expired_revocations_are_pruned(store: Store) -> None:
    ada = store.create_user("ada", "admin", "h")
    now = datetime.now(UTC)
    store.record_login("ada", "10.0.0.1", False, "bad password")
    store.revoke_token_id("gone", now - timedelta(seconds=5))
    store.revoke_token_id("live", now + timedelta(hours=1))
    store.add_refresh_token(ada.id, "a" * 64, now - timedelta(seconds=5), "fam")
    assert store.prune(now - timedelta(days=1), now) == 2  # the expired revocation and token
    assert len(store.login_attempts()) == 1
    assert store.prune(now + timedelta(seconds=1), now) == 1  # the attempt, now old enough
    assert [t for _, t, _ in store.revoked_since(0)] == ["live"]


def test_failed_logins_count_per_user_and_address_in_a_window(store: Store) -> None:
    for _ in range(3):
        store.record_login("ada", "10.0.0.1", False, "bad password")
    store.record_login("ada", "10.0.0.2", False, "bad password")
    store.record_login("bob", "10.0.0.1", False, "unknown user")
    store.record_login("ada", "10.0.0.1", True, "ok")
    store.record_login("Ada", "10.0.0.3", False, "rate limited")  # refused: not a failure
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert store.failed_logins(since, username="ADA") == 4  # a name counts in any case
    assert store.failed_logins(since, address="10.0.0.1") == 4
    assert store.failed_logins(since, username="ada", address="10.0.0.2") == 1
    assert store.failed_logins(datetime.now(UTC) + timedelta(seconds=1), username="ada") == 0
    assert [a.reason for a in store.login_attempts(2)] == ["rate limited", "ok"]
    assert len(store.failure_times(since, address="10.0.0.1", limit=2)) == 2


def test_projects_with_members(store: Store) -> None:
    ada = store.create_user("ada", "researcher", "h")
    store.create_user("bob", "viewer", "h")
    project = store.create_project("mnist", "digits runs", ada, ["bob", "ada"])
    assert project.owner is not None and project.owner.name == "ada"
    assert [m.name for m in project.members] == ["ada", "bob"]  # by name
    with pytest.raises(Conflict, match="project 'mnist' already exists"):
        store.create_project("mnist", "", ada, [])
    with pytest.raises(NotFound, match="members: no such user 'zed'"):
        store.create_project("other", "", ada, ["zed"])
    updated = store.update_project(project.id, description="new", members=["ada"])
    assert (updated.description, [m.name for m in updated.members]) == ("new", ["ada"])
    run_id = _run(store, ada.id, project.id)
    store.delete_project(project.id)
    store.session.expire_all()
    assert store.list_projects() == []
    assert store.require_run(run_id).project_id is None
    with pytest.raises(NotFound, match="project 999 does not exist"):
        store.update_project(999, name="x")


def test_run_status_life_and_cancel(store: Store) -> None:
    ada = store.create_user("ada", "researcher", "h")
    first, second, third = (_run(store, ada.id) for _ in range(3))
    run = store.require_run(first)
    assert (run.status, run.cancel_requested, run.owner_id) == ("queued", False, ada.id)
    with pytest.raises(Conflict, match="cannot go from 'queued' to 'succeeded'"):
        store.set_status(first, "succeeded")
    assert store.set_status(first, "running").started_at is not None
    done = store.set_status(first, "succeeded")
    assert done.finished_at is not None and done.finished_at >= done.created_at
    with pytest.raises(Conflict, match=f"run '{first}' is already succeeded"):
        store.request_cancel(first)
    cancelled = store.request_cancel(second)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    store.set_status(third, "running")
    marked = store.request_cancel(third)
    assert (marked.status, marked.cancel_requested) == ("running", True)
    failed = store.set_status(third, "failed", error="worker died")
    assert failed.error == "worker died"
    counts = store.runs_by_status()
    assert counts == {
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 1,
        "stopped": 0,
    }
    assert {r["id"] for r in store.run_summaries(RunFilter(status="failed"))} == {third}
    assert len(store.run_summaries(limit=2)) == 2
    with pytest.raises(NotFound, match="run 'nope' does not exist"):
        store.request_cancel("nope")


def test_metrics_failures_and_events_round_trip(store: Store) -> None:
    run_id = _run(store, None)
    store.add_round_metric(run_id, 2, {"round": 2, "accuracy": 0.5, "metrics": {"eps": 1.5}})
    store.add_round_metric(run_id, 1, {"round": 1, "accuracy": None, "loss": 2.25})
    assert store.round_metrics(run_id) == [
        {"round": 1, "accuracy": None, "loss": 2.25},
        {"round": 2, "accuracy": 0.5, "metrics": {"eps": 1.5}},
    ]
    assert store.require_round_metrics(run_id) == store.round_metrics(run_id)
    assert store.require_round_metrics(_run(store, None)) == []
    with pytest.raises(NotFound, match="run 'nope' does not exist"):
        store.require_round_metrics("nope")
    with pytest.raises(Conflict, match="already has round 1"):
        store.add_round_metric(run_id, 1, {})
    store.add_failure(run_id, 1, "client-7", "fit", "ValueError: nan")
    assert [(f.node, f.phase, f.reason) for f in store.failures(run_id)] == [
        ("client-7", "fit", "ValueError: nan")
    ]
    seqs = [store.append_event(run_id, "round_finished", {"round": r}) for r in range(3)]
    assert seqs == [0, 1, 2]
    assert [(e.seq, e.data["round"]) for e in store.events(run_id, after=0)] == [(1, 1), (2, 2)]
    other = _run(store, None)
    assert store.append_event(other, "run_started", {}) == 0


def test_run_summaries_are_the_list_view_of_the_runs(store: Store) -> None:
    ada = store.create_user("ada", "researcher", "h")
    bob = store.create_user("bob", "researcher", "h")
    project = store.create_project("mnist", "", ada, [])
    ids = [_run(store, ada.id, project.id), _run(store, bob.id), _run(store, None)]
    store.set_status(ids[0], "running")
    store.set_status(ids[0], "failed", error="worker died")
    store.request_cancel(ids[1])
    store.delete_user("bob")
    store.session.expire_all()
    newest_first = sorted(ids, key=lambda i: (-store.require_run(i).created_at.timestamp(), i))
    for where, page, expected_ids in (
        (RunFilter(), {}, newest_first),
        (RunFilter(status="cancelled"), {}, [ids[1]]),
        (RunFilter(project_id=project.id), {}, [ids[0]]),
        (RunFilter(), {"limit": 2, "offset": 1}, newest_first[1:]),
    ):
        views = [
            RunOut.model_validate(store.require_run(i)).model_dump() | {"tags": []}
            for i in expected_ids
        ]
        assert store.run_summaries(where, **page) == views
        assert store.count_runs(where) == (3 if page else len(expected_ids))
    rows = {r["id"]: r for r in store.run_summaries()}
    assert (rows[ids[0]]["project"], rows[ids[0]]["owner"], rows[ids[0]]["error"]) == (
        "mnist",
        "ada",
        "worker died",
    )
    assert (rows[ids[1]]["owner"], rows[ids[1]]["status"]) == (None, "cancelled")
    assert rows[ids[0]]["finished_at"].tzinfo is not None
    store.check_run(ids[2])
    with pytest.raises(NotFound, match="run 'nope' does not exist"):
        store.check_run("nope")


def test_deleting_an_owner_keeps_the_runs(store: Store) -> None:
    ada = store.create_user("ada", "admin", "h")
    bob = store.create_user("bob", "researcher", "h")
    store.add_refresh_token(bob.id, "f" * 64, datetime.now(UTC) + timedelta(hours=1), "fam")
    run_id = _run(store, bob.id)
    store.delete_user("bob")
    store.session.expire_all()
    assert store.require_run(run_id).owner_id is None
    assert store.session.query(RefreshToken).count() == 0
    assert store.get_user(ada.id) is not None


def test_queue_lifecycle_and_the_cancel_flag_seen_by_another_session(
    store: Store, engine: Engine
) -> None:
    first, second, third = (_run(store, None) for _ in range(3))
    assert [r.id for r in store.waiting(2)] == [first, second]
    store.set_job_id(first, "job-1")
    assert [r.id for r in store.in_flight()] == [first]  # queued, handed to a job
    assert [r.id for r in store.waiting(5)] == [second, third]
    assert store.record_status(first, "running") == 0
    with session_factory(engine)() as other:  # the API's session, while the job reads on
        Store(other).request_cancel(first)
    assert store.cancel_requested(first) is True
    store.end_run(first, "failed", "its Ray job is gone")
    store.cancel_queued(second)
    kinds = [(e.type, e.data.get("status")) for e in store.events(first)]
    assert kinds == [("status", "running"), ("run_failed", None), ("status", "failed")]
    assert store.events(first)[1].data["error"] == "its Ray job is gone"
    assert [e.type for e in store.events(second)] == ["run_cancelled", "status"]
    assert (store.require_run(second).status, store.in_flight()) == ("cancelled", [])
    with pytest.raises(Conflict, match="cannot go from 'failed' to 'failed'"):
        store.end_run(first, "failed", "again")
    assert len(store.events(first)) == 3  # nothing appended by the refused end
    mark = store.last_event_id()
    store.append_event(third, "round_finished", {"record": {"round": 1}})
    store.append_event(third, "clients_progress", {})
    assert [e.type for e in store.events_since(mark, ("round_finished", "failure"))] == [
        "round_finished"
    ]


def test_runs_filter_by_owner_text_and_tag_and_keep_their_round_figures(store: Store) -> None:
    ada = store.create_user("ada", "researcher", "h")
    bob = store.create_user("bob", "researcher", "h")
    first = store_run(store, ada.id, name="digits-fedavg", rounds=3)
    second = store_run(store, bob.id, name="ring_dsgd", rounds=3)
    store.set_tags(first, ["baseline", "lr-0.1"])
    store.set_tags(second, ["lr-0.1"])

    def ids(where: RunFilter) -> set[str]:
        return {r["id"] for r in store.run_summaries(where)}

    assert ids(RunFilter(owner="ADA")) == {first}
    assert ids(RunFilter(text="FEDAVG")) == {first}
    assert ids(RunFilter(text=second[:6])) == {second}  # the start of an id
    assert ids(RunFilter(text="baseline")) == {first}  # a whole tag
    assert ids(RunFilter(text="_")) == {second}  # LIKE's wildcards are plain characters
    assert ids(RunFilter(tag="lr-0.1")) == {first, second}
    assert ids(RunFilter(tag="lr-0.1", owner="bob")) == {second}
    before = store.require_run(second).updated_at  # the last change so far
    store.set_status(first, "running")
    for rnd, accuracy in ((1, 0.5), (2, 0.75), (3, 0.625)):
        store.add_round_metric(first, rnd, {"round": rnd, "accuracy": accuracy})
    row = store.run_summary(first)
    assert (row["rounds_done"], row["best_accuracy"], row["final_accuracy"]) == (3, 0.75, 0.625)
    assert row["tags"] == ["baseline", "lr-0.1"] and row["updated_at"] > before
    changed = store.changed_summaries(before)  # at or after: the oldest change first
    assert [r["id"] for r in changed] == [second, first]


def test_stop_ends_a_queued_run_and_marks_a_running_one(store: Store) -> None:
    queued, running = store_run(store, None), store_run(store, None)
    assert store.stop_run(queued, "stopped by ada").status == "cancelled"
    store.set_status(running, "running")
    assert store.stop_request(running) is None
    marked = store.stop_run(running, "stopped by ada: too slow")
    assert (marked.status, marked.stop_requested) == ("running", True)
    assert store.stop_request(running) == "stopped by ada: too slow"
    store.end_run(running, "stopped", "stopped by ada: too slow")
    assert [e.type for e in store.events(running)][-2:] == ["run_stopped", "status"]
    with pytest.raises(Conflict, match="is already stopped"):
        store.stop_run(running, "again")


def test_one_lease_holder_at_a_time(store: Store, engine: Engine) -> None:
    assert store.hold_lease("executor", "a", 30)
    with session_factory(engine)() as other:
        assert not Store(other).hold_lease("executor", "b", 30)  # held by a
        assert store.hold_lease("executor", "a", 30)  # renewed by its holder
        store.release_lease("executor", "a")
        assert Store(other).hold_lease("executor", "b", 1.0)
        assert not store.hold_lease("executor", "a", 30)
        assert wait_until(lambda: store.hold_lease("executor", "a", 30), 5)  # b's lapsed


def test_a_queued_run_is_claimed_once(store: Store, engine: Engine) -> None:
    run_id = store_run(store, None)
    with session_factory(engine)() as other:
        assert Store(other).claim_run(run_id, "redfl-x")
    assert not store.claim_run(run_id, "redfl-x")
    assert store.require_run(run_id).job_id == "redfl-x"


def test_the_upgrade_refuses_names_that_differ_only_in_case(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine, "0001")
    with engine.begin() as connection:
        for name in ("alice", "Alice"):
            connection.execute(
                text(
                    "INSERT INTO users (name, role, password_hash, created_at) "
                    "VALUES (:n, 'viewer', 'h', '2026-01-01 00:00:00')"
                ),
                {"n": name},
            )
    with pytest.raises(RuntimeError, match=r"\[\['Alice', 'alice'\]\]"):
        upgrade(engine)
    assert current_revision(engine) == "0001"


def test_a_run_has_one_deployment_and_loses_it_with_the_run(store: Store) -> None:
    rita = store.create_user("rita", "researcher", "h")
    run_id = _run(store, rita.id)
    made = store.create_deployment(run_id, rita.id, 2, 8)
    assert (made.name, made.status, made.replicas, made.max_batch) == (
        f"run-{run_id}",
        "deploying",
        2,
        8,
    )
    with pytest.raises(Conflict, match=f"run {run_id} is deployed already"):
        store.create_deployment(run_id, rita.id, 1, 1)
    assert store.deployment_of_run(run_id) is not None
    store.set_deployment_status(made.id, "failed", "no replicas")
    assert [(d.status, d.error) for d in store.list_deployments()] == [("failed", "no replicas")]
    assert store.list_deployments(("deploying", "running")) == []
    with pytest.raises(ValueError, match="status: must be one of"):
        store.set_deployment_status(made.id, "sleeping")
    store.session.delete(store.require_run(run_id))
    store.session.commit()
    store.session.expunge_all()  # the database's cascade, not the session's copies
    with pytest.raises(NotFound, match=f"deployment {made.id} does not exist"):
        store.require_deployment(made.id)
