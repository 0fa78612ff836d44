"""Tests for worker bundle splits and cluster capacity checks (pure dicts, no Ray)."""

from __future__ import annotations

from typing import Any

import pytest

from redfl.runtime.resources import ResourceError, ResourcesConfig, check_capacity, worker_bundles


def spec(**kwargs: Any) -> ResourcesConfig:
    return ResourcesConfig(**kwargs)


# -- uniform --------------------------------------------------------------------------------


def test_uniform_default_count_is_one_worker_per_available_cpu() -> None:
    bundles = worker_bundles(spec(), {"CPU": 8.0}, num_hosted=100)
    assert bundles == [{"CPU": 1.0}] * 8


def test_uniform_default_count_divides_cpus_by_worker_size() -> None:
    assert worker_bundles(spec(worker={"CPU": 2}), {"CPU": 8.0}, 100) == [{"CPU": 2.0}] * 4
    assert worker_bundles(spec(worker={"CPU": 3}), {"CPU": 8.0}, 100) == [{"CPU": 3.0}] * 2
    assert worker_bundles(spec(worker={"CPU": 0.5}), {"CPU": 4.0}, 100) == [{"CPU": 0.5}] * 8


def test_uniform_is_capped_by_hosted_nodes() -> None:
    assert worker_bundles(spec(), {"CPU": 8.0}, num_hosted=3) == [{"CPU": 1.0}] * 3
    assert worker_bundles(spec(num_workers=6), {"CPU": 8.0}, num_hosted=2) == [{"CPU": 1.0}] * 2


def test_uniform_explicit_count_ignores_available_cpus() -> None:
    assert worker_bundles(spec(num_workers=5), {"CPU": 2.0}, 100) == [{"CPU": 1.0}] * 5


def test_uniform_has_at_least_one_worker() -> None:
    assert worker_bundles(spec(worker={"CPU": 4}), {"CPU": 2.0}, 10) == [{"CPU": 4.0}]
    assert len(worker_bundles(spec(), {}, 10)) == 1


def test_uniform_drops_zero_amounts_and_keeps_gpus() -> None:
    bundles = worker_bundles(spec(worker={"CPU": 1, "GPU": 0.5, "TPU": 0}), {"CPU": 2.0}, 10)
    assert bundles == [{"CPU": 1.0, "GPU": 0.5}] * 2


# -- explicit -------------------------------------------------------------------------------


def test_explicit_returns_the_bundles() -> None:
    given = [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}, {"CPU": 0.5, "GPU": 0.0}]
    bundles = worker_bundles(spec(split="explicit", bundles=given), {"CPU": 1.0}, 10)
    assert bundles == [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}, {"CPU": 0.5}]


def test_explicit_never_more_workers_than_hosted_nodes() -> None:
    # worker_bundles documents "Never more workers than hosted nodes" for every split.
    given = [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    bundles = worker_bundles(spec(split="explicit", bundles=given), {"CPU": 8.0}, num_hosted=2)
    assert len(bundles) <= 2


# -- adaptive -------------------------------------------------------------------------------


def test_adaptive_splits_cpus_and_fractional_gpus_evenly() -> None:
    bundles = worker_bundles(
        spec(split="adaptive", num_workers=4), {"CPU": 4.0, "GPU": 1.0}, num_hosted=100
    )
    assert bundles == [{"CPU": 1.0, "GPU": 0.25}] * 4


def test_adaptive_default_count_is_one_worker_per_cpu() -> None:
    bundles = worker_bundles(spec(split="adaptive"), {"CPU": 4.0, "GPU": 2.0}, 100)
    assert bundles == [{"CPU": 1.0, "GPU": 0.5}] * 4


def test_adaptive_capped_by_hosted_nodes() -> None:
    bundles = worker_bundles(spec(split="adaptive"), {"CPU": 8.0, "GPU": 1.0}, num_hosted=2)
    assert bundles == [{"CPU": 4.0, "GPU": 0.5}] * 2


def test_adaptive_without_gpus_asks_for_none() -> None:
    bundles = worker_bundles(spec(split="adaptive", num_workers=2), {"CPU": 6.0}, 10)
    assert bundles == [{"CPU": 3.0}] * 2


def test_adaptive_uneven_split_never_exceeds_what_is_available() -> None:
    available = {"CPU": 4.0, "GPU": 1.0}
    bundles = worker_bundles(spec(split="adaptive", num_workers=3), available, 10)
    assert len(bundles) == 3
    for key, amount in available.items():
        assert sum(b[key] for b in bundles) <= amount
        for bundle in bundles:
            assert bundle[key] == pytest.approx(amount / 3, abs=0.01)
    check_capacity(bundles, "PACK", available, [available])


# -- check_capacity -------------------------------------------------------------------------


def test_fitting_request_passes_for_every_strategy() -> None:
    machines = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    available = {"CPU": 8.0, "GPU": 2.0}
    bundles = [{"CPU": 2.0, "GPU": 0.5}, {"CPU": 2.0, "GPU": 0.5}]
    for strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        check_capacity(bundles, strategy, available, machines)  # raises if it does not fit


def test_exactly_full_cluster_passes() -> None:
    bundles = [{"CPU": 0.1}] * 10
    check_capacity(bundles, "PACK", {"CPU": 1.0}, [{"CPU": 1.0}])


def test_over_capacity_says_what_was_asked_and_what_is_available() -> None:
    bundles = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    with pytest.raises(ResourceError) as info:
        check_capacity(bundles, "PACK", {"CPU": 8.0, "GPU": 1.0}, [{"CPU": 8.0, "GPU": 1.0}])
    message = str(info.value)
    assert "asked {CPU: 2, GPU: 2}" in message
    assert "2 bundle(s)" in message
    assert "available {CPU: 8, GPU: 1}" in message


def test_resource_the_cluster_lacks_is_reported_as_zero() -> None:
    with pytest.raises(ResourceError) as info:
        check_capacity([{"CPU": 1.0, "GPU": 0.5}], "SPREAD", {"CPU": 4.0}, [{"CPU": 4.0}])
    assert "GPU: 0.5" in str(info.value)
    assert "GPU: 0}" in str(info.value)


def test_strict_pack_needs_everything_on_one_machine() -> None:
    machines = [{"CPU": 4.0}, {"CPU": 4.0}]
    bundles = [{"CPU": 2.0}] * 3
    check_capacity(bundles, "PACK", {"CPU": 8.0}, machines)
    with pytest.raises(ResourceError) as info:
        check_capacity(bundles, "STRICT_PACK", {"CPU": 8.0}, machines)
    message = str(info.value)
    assert "STRICT_PACK" in message
    assert "{CPU: 6}" in message
    assert "{CPU: 4}" in message


def test_strict_spread_needs_one_machine_per_bundle() -> None:
    machines = [{"CPU": 4.0}, {"CPU": 4.0}]
    bundles = [{"CPU": 1.0}] * 3
    check_capacity(bundles, "SPREAD", {"CPU": 8.0}, machines)
    with pytest.raises(ResourceError) as info:
        check_capacity(bundles, "STRICT_SPREAD", {"CPU": 8.0}, machines)
    message = str(info.value)
    assert "STRICT_SPREAD" in message
    assert "3 bundles" in message
    assert "2 machine(s)" in message


def test_strict_spread_needs_each_bundle_to_fit_its_own_machine() -> None:
    # Two machines, but only one has a GPU: two GPU bundles cannot go on distinct machines.
    machines = [{"CPU": 4.0, "GPU": 2.0}, {"CPU": 4.0}]
    bundles = [{"CPU": 1.0, "GPU": 1.0}] * 2
    with pytest.raises(ResourceError, match="STRICT_SPREAD"):
        check_capacity(bundles, "STRICT_SPREAD", {"CPU": 8.0, "GPU": 2.0}, machines)


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD"])
def test_bundle_larger_than_every_machine_cannot_be_placed(strategy: str) -> None:
    # A bundle is reserved on one machine; 8 CPUs in total do not make an 8-CPU machine.
    machines = [{"CPU": 4.0}, {"CPU": 4.0}]
    with pytest.raises(ResourceError):
        check_capacity([{"CPU": 8.0}], strategy, {"CPU": 8.0}, machines)


def test_uniform_default_count_is_capped_by_custom_resources() -> None:
    # Pinning to a silo: as many workers as the silo's units allow, not one per CPU.
    worker = {"CPU": 0.5, "site_a": 0.5}
    bundles = worker_bundles(spec(worker=worker), {"CPU": 3.0, "site_a": 1.0}, 100)
    assert bundles == [{"CPU": 0.5, "site_a": 0.5}] * 2


def test_strict_spread_error_counts_the_machines_that_can_hold_a_bundle() -> None:
    # A head with no CPU and three 1-CPU machines: four bundles, three usable machines.
    machines = [{"memory": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    with pytest.raises(ResourceError) as info:
        check_capacity([{"CPU": 0.25}] * 4, "STRICT_SPREAD", {"CPU": 3.0}, machines)
    message = str(info.value)
    assert "asked 4 bundles" in message
    assert "only 3 of the cluster's 4 machine(s) can hold one" in message
