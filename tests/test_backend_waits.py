"""Waiting on worker calls (``Backend.gather``, ``wait_next``, ``wait_any``), in-process.

Both runtimes share one implementation of waiting over their ``finished`` primitive; the
in-process one runs ``blocking`` requests on threads, so a call can be held back here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from redfl.runtime.backend import Plan, WorkerSpec
from redfl.runtime.local import LocalBackend
from redfl.runtime.protocol import Handlers, Request, Runner, Unfinished
from redfl.runtime.topology_manager import TopologyManager

HELD_S = 30.0
"""How long a held call waits for its release at most (a failing test never hangs)."""


class HoldRunner(Runner):
    """Answers at once, fails at once, or holds its answer until released."""

    def register(self, handlers: Handlers) -> None:
        handlers.add(Now, self.now)
        handlers.add(Held, self.held)

    def now(self, request: Now) -> str:
        if request.fail:
            raise ValueError(f"refused {request.text}")
        return f"{self.host.index}:{request.text}"

    def held(self, request: Held) -> str:
        request.release.wait(HELD_S)
        return f"held {request.text}"


@dataclass(frozen=True)
class Now(Request[str]):
    runner = HoldRunner

    text: str
    fail: bool = False


@dataclass(frozen=True)
class Held(Request[str]):
    runner = HoldRunner
    blocking = True

    text: str
    release: threading.Event


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    local = LocalBackend()
    workers = [WorkerSpec(f"w{i}", {}, []) for i in range(2)]
    local.start(Plan("waits", 0, 0, workers, TopologyManager(None, {})))
    yield local
    local.stop()


def test_a_timeout_leaves_the_held_call_unfinished_and_reports_the_others(
    backend: LocalBackend,
) -> None:
    release = threading.Event()
    done: list[int] = []
    pending = [
        backend.call(0, Held("a", release)),
        backend.call(1, Now("b")),
        backend.call(0, Now("c", fail=True)),
    ]
    started = time.monotonic()
    outcomes = backend.gather(pending, on_done=done.append, timeout=0.2)
    assert time.monotonic() - started < HELD_S / 2
    release.set()
    assert isinstance(outcomes[0].error, Unfinished)
    assert str(outcomes[0].error) == "no reply within 0.2 s"
    assert outcomes[1].value == "1:b"
    assert isinstance(outcomes[2].error, ValueError) and str(outcomes[2].error) == "refused c"
    assert sorted(done) == [1, 2]
    assert backend.gather([pending[0]], timeout=HELD_S)[0].value == "held a"


def test_fail_fast_returns_at_the_error_and_keeps_calls_finished_with_it(
    backend: LocalBackend,
) -> None:
    release = threading.Event()
    pending = [
        backend.call(0, Held("a", release)),
        backend.call(1, Now("b", fail=True)),
        backend.call(1, Now("c")),
    ]
    outcomes = backend.gather(pending, fail_fast=True)
    release.set()
    assert isinstance(outcomes[0].error, Unfinished)
    assert str(outcomes[0].error) == "still running"
    assert str(outcomes[1].error) == "refused b"
    assert outcomes[2].value == "1:c"


def test_without_a_limit_gather_waits_for_every_call(backend: LocalBackend) -> None:
    release = threading.Event()
    pending = [backend.call(0, Held("a", release)), backend.call(1, Now("b"))]
    timer = threading.Timer(0.1, release.set)
    timer.start()
    outcomes = backend.gather(pending)
    timer.join()
    assert [o.value for o in outcomes] == ["held a", "1:b"]


def test_wait_next_gives_the_first_finished_call_or_none_at_its_timeout(
    backend: LocalBackend,
) -> None:
    release = threading.Event()
    held = backend.call(0, Held("a", release))
    assert backend.wait_next([held], 0.05) is None
    position, outcome = backend.wait_next([held, backend.call(1, Now("b"))], HELD_S) or (-1, None)
    assert position == 1 and outcome is not None and outcome.value == "1:b"
    release.set()
    position, outcome = backend.wait_any([held])
    assert (position, outcome.value) == (0, "held a")
    with pytest.raises(ValueError, match="wait_any needs at least one pending call"):
        backend.wait_any([])
