"""Bad input from a site is a clear error and loses nothing: over real mutual TLS, a site
that sends a malformed, oversized, NaN or wrongly shaped result fails (a recorded failure of
that site, with the reason a simulated client would get where there is one) while the other
site's work is aggregated; a second connection claiming a connected site replaces nothing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sites_rig import RawSite, credential, tls_context
from waiting import free_port, wait_until

from redfl.algorithms.fedavg import FedAvg
from redfl.core.arrays import Parameters
from redfl.core.result import FederationResult
from redfl.examples.echo import EchoClient
from redfl.runtime.sites.agent import SiteAgent
from redfl.runtime.sites.config import SitesConfig
from redfl.runtime.sites.wire import FitReply, Task, read_task, reply_frame
from redfl.schemas.star import StarFederation
from redfl.trust import Bundle, TrustHome

NAMES = ["a", "b"]
SIZE = 8


@dataclass
class Round:
    """One round of a two-site federation: ``a`` a well-behaved site, ``b`` the test's."""

    federation: StarFederation
    home: TrustHome
    port: int
    b: RawSite
    done: threading.Event
    result: list[FederationResult]

    def task(self) -> Task:
        """Wait for b's task and return it."""
        response = self.b.poll()
        assert response.status_code == 200, response.text
        return read_task(response.content)

    def finish(self) -> FederationResult:
        assert self.done.wait(60), "the round did not end"
        return self.result[0]

    def reasons(self) -> list[tuple[str, str]]:
        return [(f.node_id, f.reason) for f in self.federation.failures]


@pytest.fixture
def one_round(tmp_path: Path) -> Iterator[Round]:
    home = TrustHome.init(tmp_path / "home")
    port = free_port()
    table = SitesConfig(
        home=str(home.path), listen=f"127.0.0.1:{port}", expected=NAMES, join_timeout=60
    )
    federation = StarFederation(
        EchoClient,
        2,
        initial_parameters=EchoClient.initial_parameters(SIZE),
        options={"size": SIZE},
        client_ids=NAMES,
        strategy=FedAvg(min_fit_clients=1),
        runtime="sites",
        sites=table,
    )
    done, result = threading.Event(), []

    def train() -> None:
        try:
            result.append(federation.train(1))
        finally:
            done.set()

    stop = threading.Event()
    good = Bundle.load(credential(home, "a", port, tmp_path / "a.json"))
    agent = SiteAgent(good, EchoClient, {"size": SIZE}, echo=lambda line: None, stop=stop)
    threading.Thread(target=train, daemon=True).start()
    threading.Thread(target=agent.run, daemon=True).start()
    b = RawSite(port, tls_context(home, Bundle.load(credential(home, "b", port, tmp_path / "b"))))
    assert wait_until(lambda: joined(b), 30)
    try:
        yield Round(federation, home, port, b, done, result)
    finally:
        stop.set()
        federation.stop()


def joined(site: RawSite) -> bool:
    """Whether ``site`` joined now (``False`` while the server does not listen yet)."""
    try:
        return site.join().status_code == 200
    except httpx.TransportError:
        return False


def answer(update: Parameters) -> Callable[[Round, Task], int]:
    def send(run: Round, task: Task) -> int:
        return run.b.reply(task.job, reply_frame(FitReply(task.job, True, update, 5))).status_code

    return send


def test_a_malformed_result_is_a_failure_of_that_site(one_round: Round) -> None:
    task = one_round.task()
    response = one_round.b.reply(task.job, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    assert response.status_code == 400
    result = one_round.finish()
    reason = "the site sent a malformed reply: the header is not JSON: "
    assert one_round.reasons()[0][0] == "b" and one_round.reasons()[0][1].startswith(reason)
    assert response.json()["error"] == one_round.reasons()[0][1]
    assert (result.history[0].succeeded, result.history[0].failed) == (1, 1)


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"w": np.full(SIZE, np.nan, np.float32)}, "parameter 'w' contains NaN or infinity"),
        ({"w": np.zeros(3, np.float32)}, "parameter 'w' has shape (3,), expected (8,)"),
        (
            {"v": np.zeros(SIZE, np.float32)},
            "parameter names differ: missing ['w'], unexpected ['v']",
        ),
    ],
)
def test_a_nan_or_misshapen_result_fails_as_a_simulated_client_does(
    one_round: Round, update: Parameters, reason: str
) -> None:
    task = one_round.task()
    assert answer(update)(one_round, task) == 200  # well formed: the update is the client's
    result = one_round.finish()
    assert one_round.reasons() == [("b", reason)]
    assert result.history[0].succeeded == 1  # a's update made the round


def test_an_oversized_result_is_refused_before_its_body_is_read(one_round: Round) -> None:
    task = one_round.task()
    declared = 500_000_000  # never sent: the server answers after the headers
    head = (
        f"POST /v1/reply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
        f"X-Redfl-Session: {one_round.b.session}\r\nX-Redfl-Job: {task.job}\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", one_round.port), timeout=30) as raw,
        one_round.b.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head.encode() + b"x" * 1000)
        status = tls.recv(4096).split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    one_round.finish()
    limit = 2 * SIZE * 4 + (1 << 20)
    assert one_round.reasons() == [
        ("b", f"the site's reply has {declared} bytes, more than the {limit} allowed")
    ]


def test_a_second_connection_claiming_a_connected_site_replaces_nothing(
    one_round: Round,
) -> None:
    impostor = RawSite(one_round.port, one_round.b.context)  # b's own credential, again
    refused = impostor.join()
    assert refused.status_code == 409
    assert "site 'b' is connected already" in refused.json()["error"]
    task = one_round.task()  # the first connection still holds the site
    assert answer({"w": np.ones(SIZE, np.float32)})(one_round, task) == 200
    result = one_round.finish()
    assert result.history[0].succeeded == 2 and one_round.reasons() == []
