"""Secure aggregation rounds in one process: the unmasked sum, dropouts at every stage,
failures beyond the threshold, an honest client's refusals, forged shares, masks that
look uniform, distributed noise, and messages that pickle."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from redfl.privacy.secagg import (
    STAGES,
    ClientRefusal,
    DistributedSkellam,
    LocalRound,
    RoundFailed,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    ShareAuthenticationError,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from redfl.privacy.secagg.messages import EncryptedShare, RoutedShares
from redfl.privacy.secagg.quantize import ring_sum
from redfl.privacy.secagg.shamir import PRIME, Share

T = TypeVar("T")

TEMPLATE = {"w": np.zeros((6, 5), np.float32), "b": np.zeros(3, np.float32)}


def make_updates(clients, seed: int, max_weight: float = 1.0, scale: float = 0.5):
    rng = np.random.default_rng(seed)
    return {
        c: (
            {k: rng.normal(0, scale, v.shape).astype(np.float32) for k, v in TEMPLATE.items()},
            float(rng.uniform(0, max_weight)),
        )
        for c in clients
    }


def quantized_sum(config: SecAggConfig, updates, survivors):
    """What the round must return: the decoded sum of the survivors' encodings."""
    quantizer = config.quantizer
    encoded = []
    for client in sorted(survivors):
        parameters, weight = updates[client]
        encoded.append(quantizer.encode(parameters, weight, config.layout))
    return quantizer.decode(ring_sum(encoded, quantizer.dtype), config.layout)


def assert_exact_sum(config: SecAggConfig, result, updates, survivors) -> None:
    assert result.survivors == frozenset(survivors)
    sums, weight = quantized_sum(config, updates, survivors)
    assert result.weight == weight
    for name in TEMPLATE:
        assert np.array_equal(result.sums[name], sums[name])


class Round:
    """A round driven stage by stage, so a test can step in between."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.server = SecAggServer(config)
        self.clients = {c: SecAggClient(config, c) for c in config.clients}

    def up_to_masking(self, updates) -> dict[int, UnmaskRequest]:
        keys = self.server.collect_keys(c.advertise_keys() for c in self.clients.values())
        bundles = [self.clients[c].share_keys(keys[c]) for c in keys]
        routed = self.server.collect_shares(bundles)
        masked = [self.clients[c].mask_input(routed[c], *updates[c]) for c in routed]
        return self.server.collect_masked(masked)


# -- the sum ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clients", "settings"),
    [
        (5, {}),  # few clients: the complete graph (SecAgg)
        (30, {"neighbours": 6, "threshold": 4}),  # SecAgg+
        (12, {"modulus_bits": 64, "bits": 40, "clip": 2.0}),
        (40, {"max_weight": 100.0}),  # the default graph for 40 clients: k = 8, t = 4
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_unmasked_sum_is_the_plain_sum(clients, settings, seed) -> None:
    max_weight = settings.get("max_weight", 1.0)
    config = SecAggConfig.create(range(10, 10 + clients), TEMPLATE, rnd=seed, **settings)
    updates = make_updates(config.clients, seed, max_weight)
    result = LocalRound(config).run(updates)
    assert_exact_sum(config, result, updates, config.clients)
    quantizer = config.quantizer
    bound = clients * max_weight * quantizer.clip / (2 * quantizer.levels)
    for name in TEMPLATE:
        plain = sum(
            w * np.clip(u[name].astype(np.float64), -quantizer.clip, quantizer.clip)
            for u, w in updates.values()
        )
        assert np.abs(result.sums[name] - plain).max() <= bound
    assert result.weight == pytest.approx(sum(w for _, w in updates.values()), abs=bound)
    assert result.dropouts == {stage: frozenset() for stage in STAGES}
    mean = result.weighted_sum().mean(TEMPLATE)
    assert mean["w"].dtype == np.float32 and mean["w"].shape == (6, 5)


@settings(max_examples=25, deadline=None)
@given(
    clients=st.integers(2, 7),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(1e-4, 10.0),
    max_weight=st.floats(0.5, 1000.0),
    bits=st.integers(4, 24),
)
def test_any_round_sums_exactly_the_encodings(clients, seed, spread, max_weight, bits) -> None:
    config = SecAggConfig.create(
        range(clients), TEMPLATE, neighbours=clients - 1, bits=bits, max_weight=max_weight
    )
    updates = make_updates(config.clients, seed, max_weight, spread)
    assert_exact_sum(config, LocalRound(config).run(updates), updates, config.clients)


# -- dropouts ---------------------------------------------------------------------------------


def complete(clients: int = 12, threshold: int = 8, **settings) -> SecAggConfig:
    """SecAgg: every client is every other's neighbour."""
    return SecAggConfig.create(
        range(clients), TEMPLATE, neighbours=clients - 1, threshold=threshold, **settings
    )


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_up_to_the_threshold_leave_exactly_the_survivors_sum(stage) -> None:
    config = complete()  # 11 neighbours each, threshold 8: 3 may drop
    updates = make_updates(config.clients, 3)
    gone = {2, 5, 11}
    result = LocalRound(config).run(updates, {stage: gone})
    # Clients that drop only while unmasking sent their inputs: they stay in the sum.
    survivors = set(config.clients) - (gone if stage != "unmasking" else set())
    assert_exact_sum(config, result, updates, survivors)
    assert result.dropouts[stage] == frozenset(gone)
    assert all(not result.dropouts[other] for other in STAGES if other != stage)


def test_dropouts_at_every_stage_together() -> None:
    config = SecAggConfig.create(range(40), TEMPLATE, neighbours=10, threshold=5, rnd=9)
    updates = make_updates(config.clients, 4)
    drop: dict[Stage, set[int]] = {
        "advertise_keys": {0},
        "share_keys": {13},
        "masked_input": {27, 31},
        "unmasking": {5},
    }
    result = LocalRound(config).run(updates, drop)
    assert_exact_sum(config, result, updates, set(range(40)) - {0, 13, 27, 31})
    assert {stage: set(ids) for stage, ids in result.dropouts.items()} == drop


@pytest.mark.parametrize("stage", STAGES)
def test_one_dropout_too_many_fails_the_round_naming_the_stage(stage) -> None:
    config = complete(rnd=4)
    with pytest.raises(RoundFailed) as info:
        LocalRound(config).run(make_updates(config.clients, 5), {stage: {1, 2, 3, 4}})
    assert info.value.stage == stage and info.value.round == 4
    message = str(info.value)
    assert message.startswith(f"secure aggregation round 4 failed at stage {stage}: ")
    assert message.endswith("nothing was revealed")
    if stage == "unmasking":
        assert "threshold 8, after 4 of 12 survivors did not answer" in message
        assert "the self-mask seed of client 0 has 7" in message
    else:
        assert "4 clients dropped at this stage" in message
        assert "fewer than threshold=8 of their 11 neighbours" in message
        assert "keeps 7" in message


def test_secagg_plus_tolerates_dropouts_per_neighbourhood() -> None:
    # A fixed public seed: with a random one, another client losing as many neighbours
    # and sorting first would be the one the failure names.
    config = SecAggConfig.create(
        range(30), TEMPLATE, neighbours=6, threshold=4, rnd=2, seed=bytes(range(32))
    )
    graph = config.graph()
    updates = make_updates(config.clients, 6)
    victim = 17
    near = sorted(graph[victim])
    result = LocalRound(config).run(updates, {"masked_input": set(near[:2])})
    assert_exact_sum(config, result, updates, set(range(30)) - set(near[:2]))
    with pytest.raises(RoundFailed, match=f"client {victim} keeps 3"):
        LocalRound(config).run(updates, {"masked_input": set(near[:3])})


def test_too_few_inputs_to_sum_fail_the_round() -> None:
    config = complete(clients=8, threshold=3, min_survivors=6)
    with pytest.raises(RoundFailed) as info:
        LocalRound(config).run(make_updates(config.clients, 0), {"masked_input": {0, 1, 2}})
    assert info.value.stage == "masked_input"
    assert "5 clients sent masked inputs, the round needs at least min_survivors=6" in str(
        info.value
    )


def test_survivors_split_into_groups_are_not_unmasked() -> None:
    """With a low threshold the neighbourhoods can survive while the ring breaks in two
    places: each half's sum would be revealed, so the server stops."""
    config = SecAggConfig.create(range(20), TEMPLATE, neighbours=4, threshold=1, rnd=1)
    ring = [config.clients[0]]
    graph = config.graph()
    while len(ring) < 20:  # walk the ring: the next is the common neighbour not yet seen
        last = ring[-1]
        options = sorted(graph[last] - set(ring), key=lambda c: -len(graph[c] & graph[last]))
        ring.append(options[0])
    gaps = {ring[3], ring[4], ring[13], ring[14]}
    with pytest.raises(RoundFailed, match="separate groups"):
        LocalRound(config).run(make_updates(config.clients, 0), {"masked_input": gaps})


# -- an honest client's refusals ---------------------------------------------------------


def test_a_client_refuses_both_shares_of_one_neighbour() -> None:
    config = complete(clients=6, threshold=3)
    play = Round(config)
    requests = play.up_to_masking(make_updates(config.clients, 1))
    request = requests[0]
    neighbour = sorted(request.survivors)[0]
    both = replace(request, dropped=request.dropped | {neighbour})
    with pytest.raises(ClientRefusal) as info:
        play.clients[0].unmask(both)
    assert str(info.value) == (
        "client 0 refuses to unmask: the server asks for both the self-mask seed share and "
        f"the mask key share of client(s) [{neighbour}]"
    )


def test_a_client_refuses_both_shares_across_two_requests() -> None:
    config = complete(clients=6, threshold=3)
    play = Round(config)
    request = play.up_to_masking(make_updates(config.clients, 1))[0]
    first = play.clients[0].unmask(request)
    assert set(first.seed_shares) == set(request.survivors) and not first.key_shares
    assert play.clients[0].unmask(request).seed_shares == first.seed_shares  # a retry
    neighbour = sorted(request.survivors)[0]
    second = replace(
        request, survivors=request.survivors - {neighbour}, dropped=frozenset({neighbour})
    )
    with pytest.raises(ClientRefusal, match=rf"share of client\(s\) \[{neighbour}\]"):
        play.clients[0].unmask(second)


def test_a_client_refuses_to_unmask_a_small_sum_or_itself_dropped() -> None:
    config = complete(clients=6, threshold=3, min_survivors=4)
    play = Round(config)
    request = play.up_to_masking(make_updates(config.clients, 1))[2]
    with pytest.raises(ClientRefusal, match=r"a sum of 3 inputs: .* min_survivors=4"):
        play.clients[2].unmask(replace(request, survivor_count=3))
    with pytest.raises(ClientRefusal, match="names it dropped"):
        play.clients[2].unmask(replace(request, dropped=frozenset({2})))


# -- forged shares ----------------------------------------------------------------------------


def routed_for(config: SecAggConfig):
    play = Round(config)
    keys = play.server.collect_keys(c.advertise_keys() for c in play.clients.values())
    routed = play.server.collect_shares(play.clients[c].share_keys(keys[c]) for c in keys)
    return play, routed


def test_an_altered_share_stops_the_client_before_it_sends_its_input() -> None:
    config = complete(clients=5, threshold=3, rnd=7)
    play, routed = routed_for(config)
    message = routed[3]
    share = message.shares[1]
    altered = bytearray(share.ciphertext)
    altered[20] ^= 0x40
    forged = (
        *message.shares[:1],
        EncryptedShare(share.sender, share.recipient, bytes(altered)),
        *message.shares[2:],
    )
    with pytest.raises(
        ShareAuthenticationError,
        match=f"share from client {share.sender} to client 3 in round 7 failed authentication",
    ):
        play.clients[3].mask_input(replace(message, shares=forged), *make_updates([3], 0)[3])


def test_a_share_redirected_to_another_client_does_not_open() -> None:
    config = complete(clients=5, threshold=3)
    play, routed = routed_for(config)
    stolen = next(s for s in routed[1].shares if s.sender == 0)  # 0's share for 1 ...
    own = [s for s in routed[2].shares if s.sender != 0]
    redirected = RoutedShares(config.round, 2, (*own, replace(stolen, recipient=2)))  # ... to 2
    with pytest.raises(ShareAuthenticationError, match="from client 0 to client 2"):
        play.clients[2].mask_input(redirected, *make_updates([2], 0)[2])


@pytest.mark.parametrize(
    ("alter", "message"),
    [
        # Off by a small multiple of one: a key of the right length, but not the key
        # client 4 advertised.
        (lambda v: (v[0] ^ 1, v[1], v[2]), "the mask key rebuilt for client 4 does not match"),
        # A last chunk far off: the shares interpolate to no 32-byte secret.
        (lambda v: (v[0], v[1], PRIME - 5), "shares of the mask key of client 4 do not fit"),
    ],
)
def test_an_altered_key_share_is_caught_when_unmasking(alter, message) -> None:
    config = complete(clients=6, threshold=3)
    play = Round(config)
    updates = make_updates(config.clients, 2)
    keys = play.server.collect_keys(c.advertise_keys() for c in play.clients.values())
    routed = play.server.collect_shares(play.clients[c].share_keys(keys[c]) for c in keys)
    # Client 4 shared its keys but sends no input: its mask key is rebuilt.
    masked = [play.clients[c].mask_input(routed[c], *updates[c]) for c in routed if c != 4]
    requests = play.server.collect_masked(masked)
    replies = [play.clients[c].unmask(requests[c]) for c in requests]
    assert all(4 in reply.key_shares for reply in replies)
    share = replies[0].key_shares[4]
    forged = Share(share.x, alter(share.values), share.length)
    replies[0] = UnmaskReply(config.round, replies[0].client, replies[0].seed_shares, {4: forged})
    with pytest.raises(SecAggError, match=message):
        play.server.collect_unmask(replies)


# -- what the server sees ---------------------------------------------------------------------


def high_byte_pvalue(vector: np.ndarray) -> float:
    counts = np.bincount((vector >> 24).astype(np.int64), minlength=256)
    return float(stats.chisquare(counts).pvalue)


def test_a_masked_input_looks_uniform_while_the_encoding_does_not() -> None:
    size = 60_000
    template = {"x": np.zeros(size, np.float32)}
    config = SecAggConfig.create(range(3), template, threshold=2, rnd=1)
    rng = np.random.default_rng(0)
    updates = {c: ({"x": rng.normal(0, 0.05, size).astype(np.float32)}, 1.0) for c in range(3)}
    play = Round(config)
    keys = play.server.collect_keys(c.advertise_keys() for c in play.clients.values())
    routed = play.server.collect_shares(play.clients[c].share_keys(keys[c]) for c in keys)
    masked = play.clients[0].mask_input(routed[0], *updates[0])
    encoded = config.quantizer.to_ring(config.quantizer.encode(*updates[0], config.layout))
    assert masked.vector.dtype == np.uint32
    assert high_byte_pvalue(masked.vector) > 1e-6
    assert high_byte_pvalue(encoded) < 1e-100
    low = np.bincount((masked.vector & 0xFF).astype(np.int64), minlength=256)
    assert stats.chisquare(low).pvalue > 1e-6


def test_distributed_noise_reaches_the_sum_with_the_calibrated_spread() -> None:
    size, clients = 20_000, 20
    template = {"x": np.zeros(size, np.float32)}
    noise = DistributedSkellam(noise_multiplier=0.5, l2_clip=10.0, honest_clients=16)
    config = SecAggConfig.create(range(clients), template, noise=noise, clip=0.5, bits=16)
    assert config.min_survivors == 16
    updates = {c: ({"x": np.full(size, 0.01, np.float32)}, 1.0) for c in range(clients)}
    result = LocalRound(config).run(updates)
    error = result.sums["x"] - clients * 0.01
    # Twenty clients each add V / 16: the spread is z C sqrt(20 / 16).
    assert error.std() == pytest.approx(0.5 * 10.0 * np.sqrt(20 / 16), rel=0.03)
    assert abs(error.mean()) < 0.2
    assert result.weight == clients


def test_noise_for_more_honest_clients_than_a_sum_may_hold_is_refused() -> None:
    noise = DistributedSkellam(noise_multiplier=1.0, l2_clip=1.0, honest_clients=10)
    with pytest.raises(ValueError, match=r"calibrated for 10 honest clients.*min_survivors=5"):
        SecAggConfig.create(range(20), TEMPLATE, noise=noise, min_survivors=5)


# -- messages and misuse ------------------------------------------------------------------------


def test_everything_pickles_and_a_client_resumes_after_pickling() -> None:
    config = complete(clients=5, threshold=3, rnd=3)
    updates = make_updates(config.clients, 8)
    server = SecAggServer(pickle.loads(pickle.dumps(config)))
    clients = {c: SecAggClient(config, c) for c in config.clients}

    def travel(message: T) -> T:
        copy: T = pickle.loads(pickle.dumps(message))
        return copy

    keys = server.collect_keys(travel(c.advertise_keys()) for c in clients.values())
    clients = {c: travel(client) for c, client in clients.items()}
    routed = server.collect_shares(travel(clients[c].share_keys(travel(keys[c]))) for c in keys)
    clients = {c: travel(client) for c, client in clients.items()}
    masked = [travel(clients[c].mask_input(travel(routed[c]), *updates[c])) for c in routed]
    requests = server.collect_masked(masked)
    result = travel(server.collect_unmask(travel(clients[c].unmask(requests[c])) for c in requests))
    assert_exact_sum(config, result, updates, config.clients)


def test_stages_run_in_order_and_messages_of_another_round_are_refused() -> None:
    config = complete(clients=5, threshold=3, rnd=2)
    server = SecAggServer(config)
    with pytest.raises(RuntimeError, match="share_keys cannot be collected after nothing"):
        server.collect_shares([])
    client = SecAggClient(config, 1)
    advert = client.advertise_keys()
    with pytest.raises(
        RuntimeError, match="advertise_keys is stage 1, but the client is at stage 1"
    ):
        client.advertise_keys()
    with pytest.raises(ValueError, match="a message of round 3 in round 2"):
        server.collect_keys([replace(advert, round=3)])
    with pytest.raises(ValueError, match="client 7 is not one of the round's clients"):
        SecAggClient(config, 7)


def test_a_repeated_or_unexpected_message_is_refused() -> None:
    config = complete(clients=5, threshold=3)
    clients = [SecAggClient(config, c) for c in config.clients]
    adverts = [c.advertise_keys() for c in clients]
    with pytest.raises(ValueError, match="from client 2, which is not expected"):
        SecAggServer(config).collect_keys([*adverts, adverts[2]])
    server = SecAggServer(config)
    keys = server.collect_keys(adverts[:4])  # client 4 dropped
    bundles = [clients[c].share_keys(keys[c]) for c in keys]
    late = SecAggClient(config, 4)
    late.advertise_keys()
    with pytest.raises(ValueError, match="from client 4, which is not expected"):
        server.collect_shares([*bundles, late.share_keys(replace(keys[0], client=4))])


def test_config_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \[1, neighbours=4\]"):
        SecAggConfig.create(range(10), TEMPLATE, neighbours=4, threshold=5)
    with pytest.raises(ValueError, match=r"min_survivors must be in \[1, 10\]"):
        SecAggConfig.create(range(10), TEMPLATE, min_survivors=11)
    with pytest.raises(ValueError, match="seed must have 32 bytes"):
        SecAggConfig.create(range(10), TEMPLATE, seed=b"short")
    with pytest.raises(ValueError, match="sorted and distinct"):
        replace(complete(clients=5, threshold=3), clients=(0, 2, 1, 3, 4))
    default = SecAggConfig.create(range(100), TEMPLATE)
    assert (default.neighbours, default.threshold, default.min_survivors) == (16, 7, 7)
    assert SecAggConfig.create(range(10), TEMPLATE, neighbours=4).threshold == 3
