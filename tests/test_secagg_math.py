"""Secure aggregation's building blocks: Shamir sharing, keys and share encryption, the
mask generator, fixed-point encoding, the graph and its sizing, distributed noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from redfl.privacy import RdpAccountant
from redfl.privacy.accountant import DEFAULT_ORDERS
from redfl.privacy.secagg import graph as graphs
from redfl.privacy.secagg.dp import (
    DistributedSkellam,
    quantized_sensitivity,
    skellam,
    skellam_rdp,
)
from redfl.privacy.secagg.errors import ShareAuthenticationError
from redfl.privacy.secagg.keys import (
    KeyPair,
    agree,
    cipher_key,
    decrypt,
    encrypt,
    mask_seed,
    public_key,
)
from redfl.privacy.secagg.prg import expand
from redfl.privacy.secagg.quantize import Quantizer, layout_of, ring_sum
from redfl.privacy.secagg.shamir import PRIME, Share, lagrange_at_zero, reconstruct, split

# -- Shamir ----------------------------------------------------------------------------------


def interpolate(points: list[tuple[int, int]], x: int) -> int:
    """The value at ``x`` of the polynomial through ``points`` (Lagrange, mod PRIME)."""
    value = 0
    for j, (xj, yj) in enumerate(points):
        term = yj
        for m, (xm, _) in enumerate(points):
            if m != j:
                term = term * (x - xm) * pow(xj - xm, -1, PRIME) % PRIME
        value += term
    return value % PRIME


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    holders=st.integers(1, 10),
    data=st.data(),
)
def test_any_threshold_shares_reconstruct_the_secret(secret, holders, data) -> None:
    threshold = data.draw(st.integers(1, holders))
    xs = data.draw(st.lists(st.integers(1, 2**40), min_size=holders, max_size=holders, unique=True))
    shares = split(secret, threshold, xs)
    chosen = data.draw(st.lists(st.sampled_from(shares), min_size=threshold, unique=True))
    assert reconstruct(chosen, threshold) == secret


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    other=st.binary(min_size=32, max_size=32),
    threshold=st.integers(2, 8),
)
def test_fewer_than_threshold_shares_fit_every_secret(secret, other, threshold) -> None:
    """t - 1 shares are consistent with any other secret: a t-th share exists that turns
    them into a sharing of it, so they cannot tell the two apart."""
    shares = split(secret, threshold, list(range(1, threshold + 1)))
    known = shares[: threshold - 1]
    forged_x = threshold + 100
    values = []
    for index, value in enumerate(split(other, 1, [1])[0].values):
        points = [(0, value)] + [(share.x, share.values[index]) for share in known]
        values.append(interpolate(points, forged_x))
    forged = Share(forged_x, tuple(values), 32)
    assert reconstruct([*known, forged], threshold) == other
    with pytest.raises(ValueError, match=f"{threshold - 1} shares cannot reconstruct a secret"):
        reconstruct(known, threshold)


def test_a_share_depends_on_the_polynomial_not_the_secret() -> None:
    """With t >= 2 one share's values are spread over the whole field for any secret."""
    low = [split(bytes(32), 2, [7, 8])[0].values[0] for _ in range(200)]
    assert len(set(low)) == 200
    assert sum(v > PRIME // 2 for v in low) in range(60, 141)


def test_lagrange_coefficients_at_zero() -> None:
    signed = [c if c < PRIME // 2 else c - PRIME for c in lagrange_at_zero([1, 2, 3])]
    assert signed == [3, -3, 1]


def test_shares_travel_as_bytes() -> None:
    share = split(b"k" * 32, 3, [4, 5, 6])[1]
    data = share.to_bytes()
    assert len(data) == 48
    assert Share.from_bytes(5, data, 32) == share
    with pytest.raises(ValueError, match="has 48 bytes, got 47"):
        Share.from_bytes(5, data[:-1], 32)
    with pytest.raises(ValueError, match="not an element of the field"):
        Share.from_bytes(5, b"\xff" * 48, 32)


def test_split_and_reconstruct_refuse_bad_inputs() -> None:
    with pytest.raises(ValueError, match="distinct"):
        split(b"s", 2, [1, 1, 2])
    with pytest.raises(ValueError, match=r"threshold must be in \[1, 3\]"):
        split(b"s", 4, [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        split(b"", 1, [1])
    with pytest.raises(ValueError, match="share points"):
        split(b"s", 1, [0])
    a, b = split(b"x" * 32, 2, [1, 2]), split(b"x" * 16, 2, [3, 4])
    with pytest.raises(ValueError, match="different lengths"):
        reconstruct([a[0], b[0]], 2)
    with pytest.raises(ValueError, match="same point"):
        reconstruct([a[0], a[0]], 2)


def test_shares_of_different_secrets_do_not_interpolate() -> None:
    a, b = split(b"a" * 32, 2, [1, 2]), split(b"b" * 32, 2, [1, 2])
    with pytest.raises(ValueError, match="do not interpolate"):
        reconstruct([a[0], b[1]], 2)


# -- keys and share encryption -------------------------------------------------------------


def test_agreement_and_derived_keys_are_symmetric_and_separated() -> None:
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    [ab] = agree(a.private, [b.public])
    assert agree(b.private, [a.public]) == [ab]
    assert agree(a.private, [c.public]) != [ab]
    assert public_key(a.private) == a.public
    salt = bytes(range(32))
    seed = mask_seed(ab, salt, 5, 1, 2)
    assert seed == mask_seed(ab, salt, 5, 2, 1)
    others = {
        mask_seed(ab, salt, 6, 1, 2),
        mask_seed(ab, bytes(32), 5, 1, 2),
        mask_seed(ab, salt, 5, 1, 3),
        cipher_key(ab, salt, 5, 1, 2),
    }
    assert seed not in others and len(others) == 4
    assert a.private.hex() not in repr(a)


def test_a_share_opens_only_untouched_for_its_pair_and_round() -> None:
    key = bytes(range(32))
    sealed = encrypt(key, b"payload", 4, 1, 2)
    assert decrypt(key, sealed, 4, 1, 2) == b"payload"
    for index in (0, 12, len(sealed) - 1):  # nonce, ciphertext, tag
        altered = bytearray(sealed)
        altered[index] ^= 1
        with pytest.raises(ShareAuthenticationError, match="from client 1 to client 2 in round 4"):
            decrypt(key, bytes(altered), 4, 1, 2)
    for rnd, sender, recipient in [(5, 1, 2), (4, 2, 1), (4, 1, 3)]:
        with pytest.raises(ShareAuthenticationError, match="failed authentication"):
            decrypt(key, sealed, rnd, sender, recipient)
    with pytest.raises(ShareAuthenticationError):
        decrypt(key, sealed[:20], 4, 1, 2)
    with pytest.raises(ShareAuthenticationError):
        decrypt(bytes(32), sealed, 4, 1, 2)


# -- mask generator -------------------------------------------------------------------------


def test_masks_are_deterministic_little_endian_keystreams() -> None:
    seed = bytes(range(32))
    long = expand(seed, 1000, np.uint32)
    assert np.array_equal(expand(seed, 10, np.uint32), long[:10])
    assert np.array_equal(expand(seed, 500, np.uint64).view(np.uint32), long)
    assert not np.array_equal(expand(bytes(32), 1000, np.uint32), long)
    assert expand(seed, 0, np.uint64).shape == (0,)
    with pytest.raises(ValueError, match="32 bytes, got 31"):
        expand(seed[:31], 4, np.uint32)
    with pytest.raises(ValueError, match="uint32 or uint64"):
        expand(seed, 4, np.uint16)


def test_mask_bytes_are_uniform() -> None:
    counts = np.bincount(expand(bytes(32), 100_000, np.uint32).view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-6


# -- fixed-point encoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modulus_bits", "bits", "clip"), [(32, 20, 1.0), (64, 40, 3.0), (32, 8, 0.5)]
)
def test_decoded_sum_is_within_the_stated_bound(modulus_bits, bits, clip) -> None:
    rng = np.random.default_rng(modulus_bits + bits)
    n, max_weight = 40, 50.0
    quantizer = Quantizer(n, clip, bits, modulus_bits, max_weight)
    template = {"a": np.zeros((20, 30)), "b": np.zeros(7)}
    layout = layout_of(template)
    encoded, expected, weights = [], {k: np.zeros(v.shape) for k, v in template.items()}, 0.0
    for _ in range(n):
        update = {k: rng.normal(0, clip, v.shape) for k, v in template.items()}
        weight = float(rng.uniform(0, max_weight))
        encoded.append(quantizer.encode(update, weight, layout))
        for k in update:
            expected[k] += weight * np.clip(update[k], -clip, clip)
        weights += weight
    sums, weight = quantizer.decode(ring_sum(encoded, quantizer.dtype), layout)
    bound = n * max_weight * clip / (2 * quantizer.levels)
    for k in template:
        error = np.abs(sums[k] - expected[k]).max()
        assert error <= bound
        assert error > bound / 100  # rounding does happen: the bound is not vacuous
    assert abs(weight - weights) <= n * max_weight / (2 * quantizer.levels)


def test_equal_weights_give_an_exact_weight_and_negative_sums_wrap_back() -> None:
    quantizer = Quantizer(3, clip=2.0, bits=10)
    layout = layout_of({"x": np.zeros(4)})
    update = {"x": np.array([-2.0, -0.5, 0.0, 5.0])}
    total = ring_sum([quantizer.encode(update, 1.0, layout)] * 3, quantizer.dtype)
    sums, weight = quantizer.decode(total, layout)
    assert weight == 3.0
    assert sums["x"] == pytest.approx([-6.0, -1.5, 0.0, 6.0], abs=3 * 2.0 / (2 * 511))


def test_l2_clip_bounds_the_encoded_norm() -> None:
    quantizer = Quantizer(1, clip=10.0, bits=24)
    layout = layout_of({"x": np.zeros(100)})
    encoded = quantizer.encode({"x": np.full(100, 1.0)}, 1.0, layout, l2_clip=2.0)
    norm = np.linalg.norm(encoded[:-1]) / quantizer.scale
    assert norm == pytest.approx(2.0, rel=1e-5)


def test_a_sum_that_cannot_fit_the_modulus_is_refused_with_the_settings() -> None:
    with pytest.raises(ValueError) as info:
        Quantizer(5000, bits=20)
    message = str(info.value)
    assert "5000 * (2^19 - 1)" in message and "modulus 2^32" in message
    assert "modulus_bits=64" in message
    assert Quantizer(5000, bits=20, modulus_bits=64).levels == 2**19 - 1
    assert Quantizer(4095, bits=20).clients == 4095
    with pytest.raises(ValueError, match="noise room"):
        Quantizer(4000, bits=20, noise_variance=1e10)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"modulus_bits": 16}, "modulus_bits must be 32 or 64"),
        ({"bits": 32}, r"bits must be in \[2, 31\]"),
        ({"clip": 0.0}, "clip must be > 0"),
        ({"max_weight": math.inf}, "max_weight must be > 0"),
        ({"clients": 0}, "clients must be >= 1"),
    ],
)
def test_quantizer_settings_are_checked(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        Quantizer(**{"clients": 2, **settings})


def test_encoding_refuses_updates_that_do_not_fit() -> None:
    quantizer = Quantizer(2, max_weight=10.0)
    layout = layout_of({"x": np.zeros(3)})
    with pytest.raises(ValueError, match=r"weight must be in \[0, max_weight=10.0\], got 11"):
        quantizer.encode({"x": np.zeros(3)}, 11, layout)
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantizer.encode({"x": np.array([0.0, np.nan, 0.0])}, 1, layout)
    with pytest.raises(ValueError, match=r"missing \['x'\], unexpected \['y'\]"):
        quantizer.encode({"y": np.zeros(3)}, 1, layout)
    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(3,\)"):
        quantizer.encode({"x": np.zeros(4)}, 1, layout)


# -- graph ----------------------------------------------------------------------------------


def test_the_graph_is_regular_symmetric_and_a_function_of_the_seed() -> None:
    clients = list(range(100, 150))
    graph = graphs.harary_graph(clients, 8, bytes(32))
    assert set(graph) == set(clients)
    assert all(len(ns) == 8 and c not in ns for c, ns in graph.items())
    assert all(c in graph[n] for c, ns in graph.items() for n in ns)
    assert graphs.harary_graph(list(reversed(clients)), 8, bytes(32)) == graph
    assert graphs.harary_graph(clients, 8, bytes(31) + b"\x01") != graph
    assert all(graphs.neighbours_of(clients, 8, bytes(32), c) == graph[c] for c in clients)
    complete = graphs.harary_graph(clients, 49, bytes(32))
    assert all(ns == set(clients) - {c} for c, ns in complete.items())


def test_the_ring_neighbourhoods_overlap_like_a_ring() -> None:
    """Neighbourhoods on a ring: two neighbours share k - 2 others when adjacent, and each
    client has exactly two neighbours sharing k - 2 with it (its two ring neighbours)."""
    graph = graphs.harary_graph(range(30), 6, bytes(32))
    for ns in graph.values():
        overlaps = sorted(len(ns & graph[n]) for n in ns)
        assert overlaps == [2, 2, 3, 3, 4, 4]


def test_neighbour_counts_are_checked() -> None:
    with pytest.raises(ValueError, match=r"even number in \[2, 8\] or 9"):
        graphs.harary_graph(range(10), 5, bytes(32))
    with pytest.raises(ValueError, match="at least 2 clients"):
        graphs.harary_graph([1], 0, bytes(32))
    with pytest.raises(ValueError, match="distinct"):
        graphs.harary_graph([1, 1, 2], 2, bytes(32))


def test_connectivity_uses_only_edges_among_the_nodes() -> None:
    ring = {i: frozenset({(i - 1) % 6, (i + 1) % 6}) for i in range(6)}
    assert graphs.connected({0, 1, 2, 3, 4, 5}, ring)
    assert graphs.connected({0, 1, 2}, ring)
    assert not graphs.connected({0, 1, 3, 4}, ring)
    assert graphs.connected(set(), ring)


@pytest.mark.parametrize("clients", [50, 100, 300, 1000, 5000])
def test_chosen_neighbourhood_meets_its_targets(clients) -> None:
    k, t = graphs.choose_neighbourhood(clients)
    dropped, colluding = math.ceil(0.1 * clients), math.ceil(0.05 * clients)
    fails = clients * stats.hypergeom.sf(k - t, clients - 1, dropped, k)
    leaks = clients * stats.hypergeom.sf(t - 1, clients - 1, colluding, k)
    assert fails <= 2**-20 * 1.0001 and leaks <= 2**-40 * 1.0001
    assert k % 2 == 0 and k < clients - 1
    # The smallest such k: k - 2 has no threshold meeting both.
    smaller = k - 2
    assert all(
        clients * stats.hypergeom.sf(smaller - u, clients - 1, dropped, smaller) > 2**-20
        or clients * stats.hypergeom.sf(u - 1, clients - 1, colluding, smaller) > 2**-40
        for u in range(1, smaller + 1)
    )


def test_neighbourhoods_grow_logarithmically() -> None:
    sizes = {n: graphs.choose_neighbourhood(n)[0] for n in (1000, 10_000, 100_000)}
    assert sizes[1000] < sizes[10_000] < sizes[100_000] <= 60


def test_few_clients_get_the_complete_graph() -> None:
    assert graphs.choose_neighbourhood(4) == (3, 2)  # 1 drop and 1 colluder tolerated
    assert graphs.choose_neighbourhood(3) == (2, 2)  # no threshold does both: a majority
    assert graphs.choose_neighbourhood(2, dropout=0, corrupted=0) == (1, 1)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        graphs.choose_neighbourhood(10, dropout=1.0)


# -- distributed noise ----------------------------------------------------------------------


def test_skellam_noise_sums_to_the_target_variance() -> None:
    rng = np.random.default_rng(7)
    one = skellam(8.0, 200_000, rng)
    assert one.dtype == np.int64
    assert abs(one.mean()) < 0.05 and one.var() == pytest.approx(8.0, rel=0.02)
    total = np.sum([skellam(40.0 / 5, 200_000, rng) for _ in range(5)], axis=0)
    assert total.var() == pytest.approx(40.0, rel=0.02)
    assert not skellam(0.0, 5, rng).any()


def test_the_accountant_multiplier_bounds_the_skellam_rdp() -> None:
    noise = DistributedSkellam(noise_multiplier=0.8, l2_clip=0.5, honest_clients=20)
    for scale, dimension in [(2.0**8, 1000), (2.0**12, 100_000), (2.0**19, 10_000)]:
        z = noise.accountant_noise_multiplier(scale, dimension)
        assert z < 0.8
        d2, d1 = quantized_sensitivity(0.5, scale, dimension)
        variance = noise.total_variance(scale)
        for order in DEFAULT_ORDERS:
            assert order / (2 * z * z) >= skellam_rdp(order, variance, d2, d1) * (1 - 1e-12)
    fine = noise.accountant_noise_multiplier(2.0**19, 10_000)
    coarse = noise.accountant_noise_multiplier(2.0**8, 10_000)
    assert coarse < fine and fine == pytest.approx(0.8, rel=1e-3)


def test_accounting_with_the_multiplier_is_conservative() -> None:
    noise = DistributedSkellam(noise_multiplier=1.0, l2_clip=1.0, honest_clients=10)
    scale, dimension, steps, delta = 2.0**10, 5000, 50, 1e-5
    accountant = RdpAccountant()
    accountant.step(noise.accountant_noise_multiplier(scale, dimension), 1.0, steps)
    d2, d1 = quantized_sensitivity(1.0, scale, dimension)
    variance = noise.total_variance(scale)
    direct = min(
        steps * skellam_rdp(a, variance, d2, d1) + math.log(1 / delta) / (a - 1)
        for a in DEFAULT_ORDERS
    )
    assert direct <= accountant.epsilon(delta) <= direct * 1.1


def test_client_variance_splits_the_total_among_honest_clients() -> None:
    noise = DistributedSkellam(noise_multiplier=2.0, l2_clip=0.1, honest_clients=8)
    assert noise.total_variance(100.0) == pytest.approx(400.0)
    assert noise.client_variance(100.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="honest_clients must be >= 1"):
        DistributedSkellam(noise_multiplier=1.0, l2_clip=1.0, honest_clients=0)
    with pytest.raises(ValueError, match="order must be > 1"):
        skellam_rdp(1, 1.0, 1.0, 1.0)
