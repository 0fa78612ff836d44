"""FedBuff server math, LCP buffers and device selection, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from redfl.edge.fedbuff import (
    FedBuff,
    FedBuffConfig,
    LcpBuffer,
    PartialSum,
    Verdict,
    staleness_weight,
)
from redfl.edge.selection import SelectionConfig, Selector


def part(v: int, value: float, weight: float, ids: tuple[str, ...]) -> PartialSum:
    return PartialSum(v, {"w": np.full(2, value)}, weight, ids)


def test_staleness_weight_values() -> None:
    assert staleness_weight(3, 3) == 1.0
    assert staleness_weight(4, 3) == 0.5
    assert staleness_weight(5, 1) == pytest.approx(1 / 3)
    assert staleness_weight(5, 1, enabled=False) == 1.0


def test_new_version_is_the_staleness_weighted_buffer() -> None:
    cfg = FedBuffConfig(num_updates_for_model=3, max_model_version=10, global_lr=0.5)
    fb = FedBuff(cfg, {"w": np.zeros(2, np.float32)})
    fb.version = 4  # pretend four versions passed
    fb.parameters["w"][:] = 1.0
    assert fb.submit(part(4, 6.0, 2.0, ("a", "b"))) == Verdict(True)
    verdict = fb.submit(part(3, 2.0, 1.0, ("c",)))
    assert verdict.accepted and verdict.new_version
    # new = 1 + 0.5 * (1 * 6 + 1/(1+1) * 2) / (2 + 1) = 1 + 0.5 * 7 / 3
    np.testing.assert_allclose(fb.parameters["w"], 1 + 0.5 * 7 / 3, rtol=1e-6)
    assert fb.version == 5 and fb.accepted == 3


def test_without_staleness_weight_all_versions_count_fully() -> None:
    cfg = FedBuffConfig(num_updates_for_model=2, staleness_weight=False, max_model_history=9)
    fb = FedBuff(cfg, {"w": np.zeros(2, np.float32)})
    fb.version = 3
    fb.submit(part(3, 4.0, 1.0, ("a",)))
    fb.submit(part(0, 2.0, 1.0, ("b",)))
    np.testing.assert_allclose(fb.parameters["w"], (4 + 2) / 2)


def test_stale_unknown_duplicate_and_shape_are_rejected_with_reasons() -> None:
    cfg = FedBuffConfig(num_updates_for_model=100, max_model_history=2, max_model_version=9)
    fb = FedBuff(cfg, {"w": np.zeros(2, np.float32)})
    fb.version = 5
    stale = fb.submit(part(2, 1.0, 2.0, ("s1", "s2")))
    assert not stale.accepted and stale.reason.startswith("stale: base version 2")
    assert fb.submit(part(3, 1.0, 1.0, ("ok",))).accepted  # 5 - 3 = 2 is within history
    assert fb.submit(part(6, 1.0, 1.0, ("x",))).reason == "unknown version: 6 (current 5)"
    again = fb.submit(part(5, 1.0, 1.0, ("ok",)))  # a retry: acknowledged, not folded twice
    assert again.accepted and again.reason == "already folded"
    assert fb.submit(part(5, 1.0, 1.0, ("ok", "new"))).reason.startswith("duplicate task ids")
    bad = PartialSum(5, {"w": np.zeros(3)}, 1.0, ("y",))
    assert fb.submit(bad).reason.startswith("shape mismatch")
    assert fb.rejected == {
        "stale": 2,
        "unknown version": 1,
        "duplicate task ids": 2,  # both updates of the partial sum that repeats one id
        "shape mismatch": 1,
    }
    assert fb.accepted == 1


def test_job_ends_at_max_model_version() -> None:
    fb = FedBuff(FedBuffConfig(num_updates_for_model=1, max_model_version=2), {"w": np.zeros(2)})
    assert fb.submit(part(0, 1.0, 1.0, ("a",))).new_version
    assert fb.submit(part(1, 1.0, 1.0, ("b",))).new_version
    assert fb.done and fb.version == 2
    late = fb.submit(part(2, 1.0, 1.0, ("c",)))
    assert not late.accepted and late.reason.startswith("job done")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="num_updates_for_model must be >= 1, got 0"):
        FedBuffConfig(num_updates_for_model=0)
    with pytest.raises(ValueError, match="global_lr must be > 0"):
        FedBuffConfig(global_lr=math.nan)
    with pytest.raises(ValueError, match=r"min_hole_to_fill must be in \[1, 5\], got 6"):
        SelectionConfig(device_selection_size=5, min_hole_to_fill=6)


def test_lcp_buffer_counts_a_retried_task_once() -> None:
    buf = LcpBuffer()
    assert buf.add("t1", 0, {"w": np.array([1.0, 2.0])}, 2.0)
    assert not buf.add("t1", 0, {"w": np.array([1.0, 2.0])}, 2.0)  # the retry
    assert buf.add("t2", 1, {"w": np.array([3.0, 3.0])}, 1.0)
    assert buf.add("t3", 0, {"w": np.array([1.0, 0.0])}, 1.0)
    parts = buf.drain()
    assert [(p.base_version, p.weight, p.task_ids) for p in parts] == [
        (0, 3.0, ("t1", "t3")),
        (1, 1.0, ("t2",)),
    ]
    np.testing.assert_allclose(parts[0].sums["w"], [3.0, 4.0])
    assert buf.drain() == []
    assert not buf.add("t2", 1, {"w": np.zeros(2)}, 1.0)  # still remembered after the drain


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_selection_is_balanced_across_lcps() -> None:
    sel = Selector(SelectionConfig(device_selection_size=4))
    for i in range(6):
        sel.offer(f"a{i}", "lcp-a")
    sel.offer("b0", "lcp-b")
    sel.offer("b1", "lcp-b")
    sel.tick()
    assert sorted(sel.selected) == ["a0", "a1", "b0", "b1"]


def test_balance_follows_reports_and_evictions() -> None:
    """Refills go to the LCP that has the fewest selected devices now, not at first."""
    clock = Clock()
    sel = Selector(SelectionConfig(device_selection_size=4, device_timeout=10.0), clock)
    for i in range(6):
        sel.offer(f"a{i}", "lcp-a")
        sel.offer(f"b{i}", "lcp-b")
    sel.tick()
    assert sorted(sel.selected) == ["a0", "a1", "b0", "b1"]
    sel.reported("a0")
    sel.reported("a1")
    clock.now = 5.0
    sel.tick()  # lcp-a holds none now: both holes go there
    assert sorted(sel.selected) == ["a2", "a3", "b0", "b1"]
    assert dict(sel.load) == {"lcp-a": 2, "lcp-b": 2}
    clock.now = 10.0  # b0, b1 (deadline 10) are evicted; a2, a3 (deadline 15) stay
    assert sel.tick() == ["b0", "b1"]
    assert sorted(sel.selected) == ["a2", "a3", "b2", "b3"] and sel.evicted == 2


def test_random_selection_is_seeded() -> None:
    def pick(seed: int) -> list[str]:
        sel = Selector(SelectionConfig(device_selection_size=5, method="random", seed=seed))
        for i in range(50):
            sel.offer(f"d{i}", f"lcp-{i % 3}")
        sel.tick()
        return sorted(sel.selected)

    assert pick(1) == pick(1)
    assert pick(1) != pick(2)


def test_holes_are_filled_only_from_min_hole_to_fill() -> None:
    sel = Selector(SelectionConfig(device_selection_size=3, min_hole_to_fill=2))
    for i in range(10):
        sel.offer(f"d{i}", "lcp")
    sel.tick()
    assert sorted(sel.selected) == ["d0", "d1", "d2"]
    assert sel.reported("d0")
    sel.tick()
    assert len(sel.selected) == 2  # one hole < min_hole_to_fill
    sel.reported("d1")
    sel.tick()
    assert sorted(sel.selected) == ["d2", "d3", "d4"]


def test_a_silent_device_is_evicted_and_its_slot_refilled() -> None:
    clock = Clock()
    sel = Selector(SelectionConfig(device_selection_size=2, device_timeout=10.0), clock)
    for d in ("d0", "d1", "d2"):
        sel.offer(d, "lcp")
    sel.tick()
    clock.now = 5.0
    sel.reported("d0")
    sel.tick()  # d2 takes d0's slot, deadline 15
    clock.now = 10.0
    assert sel.tick() == ["d1"]
    assert sorted(sel.selected) == ["d2"] and sel.evicted == 1
    sel.offer("d1", "lcp")  # it comes back and asks again
    sel.tick()
    assert sorted(sel.selected) == ["d1", "d2"]


def test_without_reuse_a_device_is_selected_once() -> None:
    sel = Selector(SelectionConfig(device_selection_size=1, device_reuse=False))
    sel.offer("d0", "lcp")
    sel.tick()
    sel.reported("d0")
    sel.offer("d0", "lcp")
    sel.tick()
    assert sel.selected == {}


def test_a_small_pool_with_reuse_never_stalls() -> None:
    """100 devices, 50 selected, 50 updates per version: 10 versions complete."""
    clock = Clock()
    sel = Selector(SelectionConfig(device_selection_size=50, device_timeout=5.0), clock)
    fb = FedBuff(FedBuffConfig(num_updates_for_model=50, max_model_version=10), {"w": np.zeros(1)})
    devices = [f"d{i}" for i in range(100)]
    rng = np.random.default_rng(0)
    tasks = 0
    for _step in range(2_000):
        if fb.done:
            break
        clock.now += 0.1
        for d in devices:
            sel.offer(d, f"lcp-{int(d[1:]) % 4}")
        sel.tick()
        for d in rng.choice(sorted(sel.selected), size=10, replace=False):
            tasks += 1
            sel.reported(str(d))
            fb.submit(PartialSum(fb.version, {"w": np.ones(1)}, 1.0, (f"t{tasks}",)))
    assert fb.done and fb.version == 10
    np.testing.assert_allclose(fb.parameters["w"], 10.0)  # each version adds lr * mean(1)
