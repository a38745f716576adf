"""The Meter (SPEC 7.3 metering) without any store: reservation arithmetic, its invariant,
and the decimal amounts it keeps exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.actors import Actor
from ledger.domain.constraints import PARAMETER_VIOLATION, Violation
from ledger.domain.errors import (
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    NotFound,
    ReservationExpired,
)
from ledger.domain.metering import (
    ABORTED,
    EXECUTED,
    EXPIRED,
    MAX_BUDGET,
    MAX_CALLS,
    Bounds,
    Meter,
    MeteredCall,
    bounds_of,
    format_units,
    metered_call,
    parse_units,
    reservation_expiry,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PEP = Actor(type="api_key", name="pep-1", role="pep")
USD = Bounds(budget="1000.00", currency="USD")


def meter(bounds: Bounds = USD) -> Meter:
    return Meter.open(mission_id="msn_test", bounds=bounds, now=NOW)


def spend(amount: str | None, call_class: str | None = None) -> MeteredCall:
    return MeteredCall(
        amount=amount, currency=None if amount is None else "USD", call_class=call_class
    )


def reserve(m: Meter, evaluation_id: str, call: MeteredCall, *, ttl: int = 300) -> None:
    m.reserve(
        call,
        evaluation_id=evaluation_id,
        expires_at=NOW + timedelta(seconds=ttl),
        mandate_id=None,
        now=NOW,
    )


def replayed(m: Meter) -> Meter:
    """The Meter rebuilt from the events it recorded (what every replica would load)."""
    rebuilt: Any = None
    for event in m.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Meter)
    return rebuilt


# ---------------------------------------------------------------------- the invariant


def test_an_amount_is_exact_up_to_36_integer_digits_and_18_fractional() -> None:
    assert parse_units("9" * 36 + "." + "9" * 18) == 10**54 - 1
    assert parse_units("1" * 37) is None  # beyond what this service takes: not an amount
    assert parse_units("1" * 5_000) is None  # (once a ValueError from int())


def test_a_reservation_that_would_exceed_the_budget_is_refused() -> None:
    m = meter()
    reserve(m, "e1", spend("600.00"))
    with pytest.raises(BudgetExceeded) as refused:
        reserve(m, "e2", spend("400.01"))
    assert refused.value.control == MAX_BUDGET
    assert m.reserved == parse_units("600.00")


def test_a_reservation_up_to_exactly_the_budget_is_accepted() -> None:
    m = meter()
    reserve(m, "e1", spend("600.00"))
    reserve(m, "e2", spend("400"))
    assert m.usage().remaining == 0


def test_releasing_a_reservation_frees_its_amount() -> None:
    m = meter()
    reserve(m, "e1", spend("1000.00"))
    m.report("e1", outcome=ABORTED, amount=None, actor=PEP, now=NOW)
    reserve(m, "e2", spend("1000.00"))
    assert m.spent == 0


def test_committing_less_than_reserved_frees_the_difference() -> None:
    m = meter()
    reserve(m, "e1", spend("800.00"))
    m.report("e1", outcome=EXECUTED, amount="300.25", actor=PEP, now=NOW)
    assert format_units(m.spent, 2) == "300.25"
    assert format_units(m.usage().remaining or 0, 2) == "699.75"


def test_committing_more_than_reserved_is_refused() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    with pytest.raises(InvalidRequest, match=r"exceeds the reserved 10\.00"):
        m.report("e1", outcome=EXECUTED, amount="10.01", actor=PEP, now=NOW)
    assert m.spent == 0
    assert "e1" in m.outstanding


def test_a_second_report_answers_the_first_outcome_and_changes_nothing() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    m.report("e1", outcome=EXECUTED, amount="4", actor=PEP, now=NOW)
    version = m.version
    settlement, again = m.report("e1", outcome=ABORTED, amount=None, actor=PEP, now=NOW)
    assert again is True
    assert settlement.outcome == EXECUTED
    assert m.version == version


def test_reports_recorded_together_are_one_event_that_replays_to_the_same_meter() -> None:
    m = meter(Bounds(budget="1000.00", currency="USD", class_limits={"pay": 5}))
    for evaluation_id in ("e1", "e2", "e3"):
        reserve(m, evaluation_id, spend("100.00", "pay"))
    before = len(m.pending_events)
    answers = m.report_many(
        [
            ("e1", EXECUTED, "40", PEP),
            ("e2", ABORTED, None, PEP),
            ("e3", EXECUTED, None, PEP),
        ],
        now=NOW,
    )
    assert len(m.pending_events) == before + 1
    assert isinstance(m.pending_events[-1], Meter.UsageReported)
    assert [a[0].outcome for a in answers if isinstance(a, tuple)] == [EXECUTED, ABORTED, EXECUTED]
    assert format_units(m.spent, 2) == "140.00"
    assert m.class_calls == {"pay": 2}  # the aborted call is no longer counted
    assert (m.calls_committed, m.calls_reserved, m.reserved) == (2, 0, 0)
    rebuilt = replayed(m)
    assert _counters(rebuilt) == _counters(m)


def _counters(m: Meter) -> tuple[Any, ...]:
    return (
        m.spent,
        m.reserved,
        m.calls_committed,
        m.calls_reserved,
        dict(m.class_calls),
        dict(m.outstanding),
        dict(m.settled),
    )


def test_reports_stored_one_event_each_replay_as_reports_recorded_together() -> None:
    # Until 2026-12-06 a report was one UsageCommitted or Released event: those stored
    # must rebuild the Meter that the same reports recorded together give.
    old, new = (
        meter(Bounds(budget="1000.00", currency="USD", class_limits={"pay": 5})) for _ in "ab"
    )
    for m in (old, new):
        for evaluation_id in ("e1", "e2"):
            reserve(m, evaluation_id, spend("100.00", "pay"))
    old.trigger_event(
        Meter.UsageCommitted, timestamp=NOW, evaluation_id="e1", amount="40", actor=PEP.to_json()
    )
    old.trigger_event(
        Meter.Released, timestamp=NOW, evaluation_id="e2", outcome=ABORTED, actor=PEP.to_json()
    )
    new.report_many([("e1", EXECUTED, "40", PEP), ("e2", ABORTED, None, PEP)], now=NOW)
    assert _counters(replayed(old)) == _counters(replayed(new)) == _counters(new)


def test_reports_of_two_actors_are_one_event_each_naming_its_actor() -> None:
    m = meter()
    other = Actor(type="api_key", name="pep-2", role="pep")
    for evaluation_id in ("e1", "e2", "e3"):
        reserve(m, evaluation_id, spend("1.00"))
    m.report_many(
        [("e1", EXECUTED, None, PEP), ("e2", EXECUTED, None, other), ("e3", ABORTED, None, PEP)],
        now=NOW,
    )
    events = [e for e in m.pending_events if isinstance(e, Meter.UsageReported)]
    assert [(e.actor, [r["evaluation_id"] for r in e.reports]) for e in events] == [
        (PEP.to_json(), ["e1", "e3"]),
        (other.to_json(), ["e2"]),
    ]


def test_a_refused_report_does_not_stop_the_others_recorded_with_it() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    reserve(m, "e2", spend("10.00"))
    answers = m.report_many(
        [
            ("e1", EXECUTED, "10.01", PEP),
            ("nope", EXECUTED, None, PEP),
            ("e2", EXECUTED, None, PEP),
        ],
        now=NOW,
    )
    assert isinstance(answers[0], InvalidRequest)
    assert isinstance(answers[1], NotFound)
    assert answers[2] == (m.settled["e2"], False)
    assert "e1" in m.outstanding
    assert format_units(m.spent, 2) == "10.00"


def test_a_report_repeated_among_reports_recorded_together_answers_its_first_outcome() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    answers = m.report_many([("e1", EXECUTED, "4", PEP), ("e1", ABORTED, None, PEP)], now=NOW)
    first = m.settled["e1"]
    assert answers == [(first, False), (first, True)]
    assert first.outcome == EXECUTED
    event = m.pending_events[-1]
    assert isinstance(event, Meter.UsageReported)
    assert [r["evaluation_id"] for r in event.reports] == ["e1"]  # recorded once


def test_reports_that_are_all_repeats_or_refusals_record_nothing() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    m.report("e1", outcome=EXECUTED, amount=None, actor=PEP, now=NOW)
    version = m.version
    answers = m.report_many([("e1", ABORTED, None, PEP), ("nope", ABORTED, None, PEP)], now=NOW)
    assert answers[0] == (m.settled["e1"], True)
    assert isinstance(answers[1], NotFound)
    assert m.version == version


def test_an_unknown_reservation_is_not_found() -> None:
    with pytest.raises(NotFound):
        meter().report("nope", outcome=EXECUTED, amount=None, actor=PEP, now=NOW)


def test_an_aborted_report_names_no_amount() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    with pytest.raises(InvalidRequest, match="aborted"):
        m.report("e1", outcome=ABORTED, amount="1", actor=PEP, now=NOW)


def test_a_reservation_in_another_currency_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="EUR is not comparable with the budget's USD"):
        reserve(meter(), "e1", MeteredCall(amount="1", currency="EUR", call_class=None))


def test_expiry_releases_each_due_reservation_once() -> None:
    m = meter()
    reserve(m, "short", spend("100"), ttl=10)
    reserve(m, "long", spend("100"), ttl=600)
    later = NOW + timedelta(seconds=10)
    assert m.expire_due(later) == 1
    assert m.expire_due(later) == 0
    assert m.settled["short"].outcome == EXPIRED
    assert list(m.outstanding) == ["long"]


def test_a_reservation_held_after_a_look_is_released_when_its_earlier_expiry_comes() -> None:
    # expire_due remembers when the next expiry can come (so that a Meter with thousands of
    # reservations is not scanned whole on every look); a reservation expiring sooner than
    # everything seen at the last look must lower that, or it would never be released.
    m = meter()
    reserve(m, "long", spend("100"), ttl=600)
    assert m.expire_due(NOW + timedelta(seconds=1)) == 0
    reserve(m, "short", spend("100"), ttl=10)
    assert m.expire_due(NOW + timedelta(seconds=10)) == 1
    assert list(m.outstanding) == ["long"]
    assert m.expire_due(NOW + timedelta(seconds=600)) == 1
    assert not m.outstanding


def test_a_report_after_expiry_is_refused_whether_or_not_the_release_was_recorded() -> None:
    m = meter()
    reserve(m, "e1", spend("100"), ttl=10)
    later = NOW + timedelta(seconds=10)
    with pytest.raises(ReservationExpired):
        m.report("e1", outcome=EXECUTED, amount=None, actor=PEP, now=later)
    m.expire_due(later)
    with pytest.raises(ReservationExpired):
        m.report("e1", outcome=EXECUTED, amount=None, actor=PEP, now=later)
    assert m.spent == 0


def test_max_calls_counts_committed_and_reserved_calls() -> None:
    m = meter(Bounds(max_calls=2))
    reserve(m, "e1", spend(None, "write"))
    m.report("e1", outcome=EXECUTED, amount=None, actor=PEP, now=NOW)
    reserve(m, "e2", spend(None))
    with pytest.raises(BudgetExceeded) as refused:
        reserve(m, "e3", spend(None))
    assert refused.value.control == MAX_CALLS
    m.report("e2", outcome=ABORTED, amount=None, actor=PEP, now=NOW)
    reserve(m, "e3", spend(None))


def test_a_call_class_limit_bounds_only_its_class() -> None:
    m = meter(Bounds(class_limits={"write": 1}))
    reserve(m, "w1", spend(None, "write"))
    with pytest.raises(BudgetExceeded, match="'write'"):
        reserve(m, "w2", spend(None, "write"))
    reserve(m, "r1", spend(None, "read"))
    reserve(m, "r2", spend(None))
    assert m.usage().calls == 3


# ---------------------------------------------------------------------- the property

AMOUNTS = st.decimals(
    min_value=Decimal(0), max_value=Decimal(400), places=2, allow_nan=False, allow_infinity=False
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), AMOUNTS, st.sampled_from([None, "write", "read"])),
        st.tuples(st.just("commit"), st.integers(0, 40), st.integers(0, 100)),
        st.tuples(st.just("abort"), st.integers(0, 40), st.none()),
        st.tuples(st.just("tick"), st.integers(0, 200), st.none()),
        st.tuples(st.just("lease"), st.integers(1, 8), st.sampled_from([None, "write"])),
        st.tuples(st.just("draw"), AMOUNTS, st.sampled_from([None, "write", "read"])),
        st.tuples(st.just("return"), st.integers(0, 40), st.none()),
        st.tuples(st.just("raise"), AMOUNTS, st.sampled_from([None, "write", "read"])),
        st.tuples(
            st.just("drawmany"),
            st.lists(st.tuples(AMOUNTS, st.sampled_from([None, "write", "read"])), max_size=4),
            st.none(),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=OPERATIONS)
def test_committed_plus_outstanding_never_exceeds_any_bound(
    operations: list[tuple[str, Any, Any]],
) -> None:
    bounds = Bounds(budget="1000.00", currency="USD", max_calls=12, class_limits={"write": 4})
    m = meter(bounds)
    budget = parse_units("1000.00") or 0
    now = NOW
    committed = 0
    made: list[str] = []
    leases: list[str] = []
    for kind, first, second in operations:
        eid = f"e{len(made)}"
        try:
            if kind in ("reserve", "draw", "raise"):
                lease_id = leases[-1] if kind == "draw" and leases else None
                if kind == "draw" and lease_id is None:
                    continue
                m.reserve(
                    MeteredCall(amount=str(first), currency="USD", call_class=second),
                    evaluation_id=eid,
                    # Lifetimes vary with the amount (1-300 s), so a later reservation may
                    # expire before earlier ones.
                    expires_at=now + timedelta(seconds=1 + int(first * 100) % 300),
                    mandate_id=None,
                    now=now,
                    lease_id=lease_id,
                    approval_id=f"apv_{eid}" if kind == "raise" else None,
                )
                made.append(eid)
            elif kind == "drawmany" and leases:
                draws = [
                    (
                        MeteredCall(amount=str(amount), currency="USD", call_class=klass),
                        f"{eid}.{n}",
                        now + timedelta(seconds=60),
                        None,
                    )
                    for n, (amount, klass) in enumerate(first)
                ]
                refusals = m.draw_many(leases[-1], draws, now=now)
                made.extend(d[1] for d, r in zip(draws, refusals, strict=True) if r is None)
            elif kind == "lease":
                lease_id = f"lse_{len(leases)}"
                m.grant_lease(
                    MeteredCall(amount="1.00", currency="USD", call_class=second),
                    lease_id=lease_id,
                    holder="rpl_a",
                    expires_at=now + timedelta(seconds=30),
                    share=first,
                    now=now,
                )
                leases.append(lease_id)
            elif kind == "return" and leases:
                m.return_lease(leases[first % len(leases)], outcome="returned", actor=PEP, now=now)
            elif kind == "commit" and made:
                eid = made[first % len(made)]
                held = m.outstanding.get(eid)
                amount = None
                if held is not None:
                    amount = format_units(held.units * second // 100)
                settlement, again = m.report(
                    eid, outcome=EXECUTED, amount=amount, actor=PEP, now=now
                )
                if not again:
                    committed += settlement.units
            elif kind == "abort" and made:
                m.report(made[first % len(made)], outcome=ABORTED, amount=None, actor=PEP, now=now)
            elif kind == "tick":
                now += timedelta(seconds=first)
                m.expire_due(now)
                assert all(held.expires_at > now for held in m.outstanding.values())
        except (BudgetExceeded, ReservationExpired, Conflict):
            pass
        # Outstanding includes what leases hold unused; raises lift the bounds.
        assert m.spent + m.reserved + m.leased <= budget + m.raised
        assert m.calls_committed + m.calls_reserved + m.leased_calls <= 12 + m.raised_calls
        assert m.class_calls.get("write", 0) + m.leased_class.get("write", 0) <= 4 + (
            m.raised_class.get("write", 0)
        )
        assert m.reserved == sum(h.units for h in m.outstanding.values())
        assert m.leased == sum(lease.units or 0 for lease in m.leases.values())
        assert m.leased_calls == sum(lease.calls or 0 for lease in m.leases.values())
        assert m.leased_class.get("write", 0) == sum(
            lease.classes.get("write", 0) for lease in m.leases.values()
        )
        assert m.spent == committed
        assert m.raised == sum(
            parse_units(e.amount or "0") or 0
            for e in m.pending_events
            if isinstance(e, Meter.BoundRaised)
        )
    rebuilt = replayed(m)
    assert (rebuilt.spent, rebuilt.reserved, rebuilt.leased, rebuilt.raised) == (
        m.spent,
        m.reserved,
        m.leased,
        m.raised,
    )
    assert rebuilt.outstanding == m.outstanding
    assert rebuilt.leases == m.leases


@given(
    st.decimals(
        min_value=Decimal(0),
        max_value=Decimal(10) ** 30,
        places=18,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_amounts_are_kept_exactly_whatever_their_digits(value: Decimal) -> None:
    with localcontext() as exact:
        exact.prec = 80
        text = format(value, "f")
        units = parse_units(text)
        assert units is not None
        assert Decimal(format_units(units)) == Decimal(text)
        assert units == int(Decimal(text).scaleb(18))


# ---------------------------------------------------------------------- bounds and calls


def test_bounds_come_from_the_intents_controls() -> None:
    bounds = bounds_of(
        {
            "max_budget": {"amount": "500.00", "currency": "EUR"},
            "max_calls": [{"call_class": "write", "max": 3}],
        }
    )
    assert bounds == Bounds(budget="500.00", currency="EUR", class_limits={"write": 3})
    assert bounds_of({"max_calls": 7}) == Bounds(max_calls=7)
    assert bounds_of({"acr": "x"}) is None


def test_an_action_with_neither_amount_nor_call_class_is_not_metered() -> None:
    assert metered_call(USD, {}, {"tool": "x"}, {}) is None


def test_a_call_class_alone_makes_an_action_metered() -> None:
    assert metered_call(USD, {"call_class": "write"}, {}, {}) == MeteredCall(None, None, "write")


def test_an_amount_in_the_context_is_metered_like_one_in_the_action() -> None:
    call = metered_call(USD, {}, {}, {"amount": "5.00", "currency": "USD"})
    assert call == MeteredCall("5.00", "USD", None)


def test_a_metered_amount_without_a_currency_is_a_parameter_violation() -> None:
    found = metered_call(USD, {}, {"amount": "5.00"}, {})
    assert isinstance(found, Violation)
    assert (found.reason, found.constraint) == (PARAMETER_VIOLATION, MAX_BUDGET)


def test_a_malformed_metered_amount_is_a_parameter_violation() -> None:
    found = metered_call(USD, {}, {"amount": "5,00", "currency": "USD"}, {})
    assert isinstance(found, Violation)
    assert "not a decimal string" in found.detail


# ---------------------------------------------------------------------- budget leases


def lease(m: Meter, lease_id: str = "lse_1", *, share: int = 4, ttl: int = 30) -> None:
    m.grant_lease(
        spend("1.00"),
        lease_id=lease_id,
        holder="rpl_a",
        expires_at=NOW + timedelta(seconds=ttl),
        share=share,
        now=NOW,
    )


def draw(m: Meter, evaluation_id: str, call: MeteredCall, lease_id: str = "lse_1") -> None:
    m.reserve(
        call,
        evaluation_id=evaluation_id,
        expires_at=NOW + timedelta(seconds=300),
        mandate_id=None,
        now=NOW,
        lease_id=lease_id,
    )


def test_a_lease_takes_its_share_of_what_remains_and_counts_as_outstanding() -> None:
    m = meter()
    reserve(m, "e1", spend("200.00"))
    lease(m, share=4)
    assert m.leases["lse_1"].units == parse_units("200.00")
    assert m.usage().to_json()["reserved"] == "400.00"
    assert m.usage().to_json()["remaining"] == "600.00"


def test_a_reservation_under_a_lease_moves_from_the_lease_to_reserved() -> None:
    m = meter()
    lease(m, share=4)
    draw(m, "e1", spend("100.00"))
    assert (m.leased, m.reserved) == (parse_units("150.00"), parse_units("100.00"))


def test_a_lease_refuses_what_it_cannot_cover() -> None:
    m = meter()
    lease(m, share=4)
    with pytest.raises(BudgetExceeded):
        draw(m, "e1", spend("250.01"))


def test_a_central_reservation_cannot_take_what_a_lease_holds() -> None:
    m = meter()
    lease(m, share=1)  # the whole budget
    with pytest.raises(BudgetExceeded):
        reserve(m, "e1", spend("0.01"))


def test_returning_a_lease_gives_back_its_unused_part_once() -> None:
    m = meter()
    lease(m, share=4)
    draw(m, "e1", spend("100.00"))
    assert m.return_lease("lse_1", outcome="returned", actor=PEP, now=NOW)
    assert not m.return_lease("lse_1", outcome="returned", actor=PEP, now=NOW)
    assert (m.leased, m.reserved) == (0, parse_units("100.00"))


def test_an_expired_lease_is_released_and_no_longer_drawn_from() -> None:
    m = meter()
    lease(m, ttl=30)
    m.expire_due(NOW + timedelta(seconds=30))
    assert m.leased == 0
    assert [type(e).__name__ for e in m.pending_events][-1] == "LeaseReturned"
    with pytest.raises(Conflict):
        draw(m, "e1", spend("1.00"))


def test_a_lease_that_cannot_cover_the_call_is_refused() -> None:
    m = meter()
    reserve(m, "e1", spend("999.50"))
    with pytest.raises(BudgetExceeded):
        lease(m)


def test_a_lease_of_calls_takes_a_share_of_each_class() -> None:
    m = meter(Bounds(max_calls=16, class_limits={"write": 8}))
    m.grant_lease(
        spend(None, "write"),
        lease_id="lse_1",
        holder="rpl_a",
        expires_at=NOW + timedelta(seconds=30),
        share=4,
        now=NOW,
    )
    assert (m.leases["lse_1"].calls, dict(m.leases["lse_1"].classes)) == (4, {"write": 2})
    assert m.usage().to_json()["calls_remaining"] == 12


# ---------------------------------------------------------------------- bound raises


def test_an_approved_increase_raises_the_bound_by_exactly_the_call_and_reserves_it() -> None:
    m = meter(Bounds(budget="100.00", currency="USD", max_calls=1))
    reserve(m, "e1", spend("90.00"))
    m.reserve(
        spend("25.00"),
        evaluation_id="e2",
        expires_at=NOW + timedelta(seconds=300),
        mandate_id=None,
        now=NOW,
        approval_id="apv_1",
    )
    raised = [e for e in m.pending_events if isinstance(e, Meter.BoundRaised)]
    assert [(e.approval_id, e.amount, e.calls) for e in raised] == [("apv_1", "25.00", 1)]
    view = m.usage().to_json()
    assert (view["raised"], view["remaining"], view["max_calls"]) == ("25.00", "10.00", 2)
    with pytest.raises(BudgetExceeded):
        reserve(m, "e3", spend("0.01"))


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ),
    st.integers(min_value=1, max_value=86_400),
)
def test_a_reservation_expires_its_ttl_later_in_whole_seconds(now: datetime, ttl: int) -> None:
    assert reservation_expiry(now, ttl) == (now + timedelta(seconds=ttl)).replace(microsecond=0)


def test_a_reservation_taken_in_a_seconds_last_microsecond_expires_in_that_second() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, 999_999, tzinfo=UTC)
    assert reservation_expiry(now, 300) == datetime(2026, 12, 6, 12, 5, 0, tzinfo=UTC)
