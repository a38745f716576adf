"""When a writer that is behind counts as starved (``api.workers.starvation``): between two
looks, it waited runnable on a run queue for at least half the time, or it was runnable at
both and hardly ran."""

from __future__ import annotations

from api.workers.starvation import RAN_SHARE, STARVED_AFTER, Sample, StarvationWatch


class _Looks:
    """What a fake process shows, one sample per look."""

    def __init__(self, *samples: Sample | None) -> None:
        self._samples = list(samples)

    def __call__(self, pid: int) -> Sample | None:
        return self._samples.pop(0)


def _asleep(ran: float, waited: float) -> Sample:
    return Sample(ran, waited, runnable=False)


def _runnable(ran: float, waited: float) -> Sample:
    return Sample(ran, waited, runnable=True)


T = STARVED_AFTER


def test_a_writer_that_waited_runnable_most_of_the_time_is_starved() -> None:
    watch = StarvationWatch(1, _Looks(_asleep(5.0, 10.0), _asleep(5.0, 10.0 + 0.6 * T)))
    assert not watch.starved(100.0)
    assert watch.starved(100.0 + T)


def test_a_writer_that_waited_runnable_less_than_half_the_time_is_not() -> None:
    watch = StarvationWatch(1, _Looks(_asleep(5.0, 10.0), _asleep(5.0, 10.0 + 0.4 * T)))
    assert not watch.starved(100.0)
    assert not watch.starved(100.0 + T)


def test_a_writer_runnable_at_both_looks_that_hardly_ran_is_starved() -> None:
    # Linux counts a wait on a run queue only once it ends: this one has not yet.
    ran = 0.5 * RAN_SHARE * T
    watch = StarvationWatch(1, _Looks(_runnable(5.0, 10.0), _runnable(5.0 + ran, 10.0)))
    assert not watch.starved(100.0)
    assert watch.starved(100.0 + T)


def test_a_writer_runnable_at_both_looks_that_ran_is_not() -> None:
    watch = StarvationWatch(1, _Looks(_runnable(5.0, 10.0), _runnable(5.0 + 0.5 * T, 10.0)))
    assert not watch.starved(100.0)
    assert not watch.starved(100.0 + T)


def test_a_writer_asleep_at_a_look_that_hardly_ran_is_not() -> None:
    # Waiting for its store: asleep, not kept from the CPU.
    watch = StarvationWatch(1, _Looks(_asleep(5.0, 10.0), _runnable(5.0, 10.0)))
    assert not watch.starved(100.0)
    assert not watch.starved(100.0 + T)


def test_the_first_look_only_notes_where_the_writer_stands() -> None:
    watch = StarvationWatch(1, _Looks(_runnable(0.0, 1_000.0)))
    assert not watch.starved(100.0)


def test_a_look_too_soon_after_the_last_does_nothing() -> None:
    watch = StarvationWatch(
        1, _Looks(_asleep(5.0, 10.0), _asleep(5.0, 10.0 + T), _asleep(5.0, 10.0 + 2 * T))
    )
    assert not watch.starved(100.0)
    assert not watch.starved(100.0 + T / 4)
    assert watch.starved(100.0 + T)


def test_a_writer_that_caught_up_starts_a_new_spell() -> None:
    watch = StarvationWatch(
        1, _Looks(_asleep(5.0, 10.0), _asleep(5.0, 10.0 + T), _asleep(5.0, 20.0))
    )
    assert not watch.starved(100.0)
    watch.caught_up()
    assert not watch.starved(100.0 + T)  # a new first look
    assert watch.starved(100.0 + 2 * T)


def test_a_process_the_system_says_nothing_about_is_never_starved() -> None:
    watch = StarvationWatch(1, _Looks(None, None))
    assert not watch.starved(100.0)
    assert not watch.starved(100.0 + T)
