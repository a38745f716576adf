"""The replica's garbage-collector policy: frozen survivors, and a periodic full collection
that still finds cyclic garbage among them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from api.gc_policy import GcPolicy


class Cycle:
    def __init__(self) -> None:
        self.me = self


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def policy(clock: Monotonic) -> Iterator[GcPolicy]:
    policy = GcPolicy(full_every_seconds=3600, monotonic=clock)
    yield policy
    policy.stop()


def test_start_freezes_what_survived_start_up(policy: GcPolicy) -> None:
    survivor = Cycle()
    policy.start()
    assert gc.is_tracked(survivor)
    assert policy.frozen() > 0
    policy.stop()
    assert policy.frozen() == 0


def test_frozen_cyclic_garbage_waits_for_the_periodic_full_collection(
    policy: GcPolicy, clock: Monotonic
) -> None:
    policy.start()
    cycle = Cycle()
    ref = weakref.ref(cycle)
    policy.tick()  # frozen while alive
    del cycle
    gc.collect()
    assert ref() is not None  # a frozen cycle is not found by ordinary collections
    clock.now += 3599
    policy.tick()
    assert ref() is not None
    assert policy.full_collections == 0
    clock.now += 1
    policy.tick()
    assert ref() is None
    assert policy.full_collections == 1


def test_frozen_objects_without_cycles_are_still_freed_at_once(policy: GcPolicy) -> None:
    policy.start()
    value = {"x": [1, 2, 3]}
    ref_target = Leaf(value)
    ref = weakref.ref(ref_target)
    policy.tick()
    del ref_target
    assert ref() is None  # reference counting, not the collector


class Leaf:
    def __init__(self, value: object) -> None:
        self.value = value


def test_cyclic_garbage_younger_than_a_tick_is_collected_not_frozen(policy: GcPolicy) -> None:
    policy.start()
    cycle = Cycle()
    ref = weakref.ref(cycle)
    del cycle
    policy.tick()
    assert ref() is None


@pytest.fixture
def young(clock: Monotonic) -> Iterator[GcPolicy]:
    policy = GcPolicy(full_every_seconds=3600, young_threshold=50_000, monotonic=clock)
    yield policy
    policy.stop()


def test_start_collects_the_youngest_generation_less_often(young: GcPolicy) -> None:
    _, middle, oldest = gc.get_threshold()
    young.start()
    assert gc.get_threshold() == (50_000, middle, oldest)


def test_stop_restores_the_collectors_thresholds(young: GcPolicy) -> None:
    before = gc.get_threshold()
    young.start()
    young.stop()
    assert gc.get_threshold() == before


def test_without_a_young_threshold_the_collectors_thresholds_stay(policy: GcPolicy) -> None:
    before = gc.get_threshold()
    policy.start()
    assert gc.get_threshold() == before
