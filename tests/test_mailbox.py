"""Tests for per-node mailboxes: selection by header, blocking, timeouts and stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from redfl.core.message import Message
from redfl.runtime.mailbox import FederationStopped, Mailbox

JOIN_S = 10.0


def msg(header: str, body: Any = None, sender: str = "s") -> Message:
    return Message(header, sender, ("x",), body)


def wait_until_blocked(mailbox: Mailbox, waiters: int = 1) -> None:
    """Wait (with a deadline) until ``waiters`` threads are blocked in ``take``."""
    deadline = time.monotonic() + JOIN_S
    while mailbox.waiting() < waiters:
        assert time.monotonic() < deadline, "taker never blocked"
        time.sleep(0.001)


class Taker(threading.Thread):
    """Runs one ``take`` and keeps its result or error."""

    def __init__(self, mailbox: Mailbox, node_id: str, header: str | None, timeout: float | None):
        super().__init__(daemon=True)
        self.args_ = (mailbox, node_id, header, timeout)
        self.result: Message | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        mailbox, node_id, header, timeout = self.args_
        try:
            self.result = mailbox.take(node_id, header, True, timeout)
        except BaseException as error:
            self.error = error


def test_take_by_header_leaves_others_queued_in_order() -> None:
    box = Mailbox()
    first, second, third, fourth = msg("a", 1), msg("b", 2), msg("a", 3), msg("c", 4)
    for message in (first, second, third, fourth):
        box.put(message, ["x"])
    assert box.take("x", "b", block=False, timeout=None) is second
    assert box.pending("x") == 3
    assert box.take("x", "a", block=False, timeout=None) is first
    assert box.take("x", None, block=False, timeout=None) is third
    assert box.take("x", None, block=False, timeout=None) is fourth
    assert box.pending("x") == 0


def test_messages_go_only_to_their_nodes() -> None:
    box = Mailbox()
    message = msg("h")
    box.put(message, ["x", "y"])
    assert box.pending("x") == 1
    assert box.pending("y") == 1
    assert box.pending("z") == 0
    assert box.take("y", "h", block=False, timeout=None) is message
    assert box.take("x", "h", block=False, timeout=None) is message
    assert box.take("z", None, block=False, timeout=None) is None


def test_non_blocking_take_returns_none_and_keeps_the_queue() -> None:
    box = Mailbox()
    other = msg("other")
    box.put(other, ["x"])
    assert box.take("x", "wanted", block=False, timeout=None) is None
    assert box.pending("x") == 1
    assert box.take("x", "other", block=False, timeout=None) is other


def test_timeout_raises_naming_node_and_header() -> None:
    box = Mailbox()
    box.put(msg("other"), ["node-7"])
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        box.take("node-7", "grads", block=True, timeout=0.05)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.05
    assert elapsed < JOIN_S
    message = str(info.value)
    assert "'node-7'" in message
    assert "'grads'" in message
    assert box.pending("node-7") == 1  # the non-matching message is still there


def test_timeout_without_header_says_no_message() -> None:
    with pytest.raises(TimeoutError) as info:
        Mailbox().take("n1", None, block=True, timeout=0.0)
    assert "'n1'" in str(info.value)
    assert "got no message" in str(info.value)


def test_blocked_take_is_woken_by_a_matching_put() -> None:
    box = Mailbox()
    taker = Taker(box, "x", "wanted", timeout=JOIN_S)
    taker.start()
    wait_until_blocked(box)
    box.put(msg("unrelated"), ["x"])
    wanted = msg("wanted", 42)
    box.put(wanted, ["x"])
    taker.join(JOIN_S)
    assert not taker.is_alive()
    assert taker.error is None
    assert taker.result is wanted
    assert box.pending("x") == 1


def test_stop_wakes_a_blocked_taker_with_federation_stopped() -> None:
    box = Mailbox()
    taker = Taker(box, "node-3", "never", timeout=None)
    taker.start()
    wait_until_blocked(box)
    box.stop()
    taker.join(JOIN_S)
    assert not taker.is_alive(), "stop() did not wake the blocked take"
    assert isinstance(taker.error, FederationStopped)
    assert "'node-3'" in str(taker.error)


def test_stop_wakes_every_blocked_taker() -> None:
    box = Mailbox()
    takers = [Taker(box, f"n{i}", None, timeout=None) for i in range(3)]
    for taker in takers:
        taker.start()
    wait_until_blocked(box, waiters=3)
    box.stop()
    for taker in takers:
        taker.join(JOIN_S)
        assert not taker.is_alive()
        assert isinstance(taker.error, FederationStopped)


def test_take_after_stop_raises_instead_of_blocking() -> None:
    box = Mailbox()
    box.stop()
    with pytest.raises(FederationStopped):
        box.take("x", None, block=True, timeout=None)
