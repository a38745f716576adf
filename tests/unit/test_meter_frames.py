"""The Meter writer pipe's messages (``api.workers.meter_frames``): what the server sends
is what the writer process applies, and what it answers is what the server hears."""

from __future__ import annotations

from datetime import UTC, datetime

from api.workers.meter_frames import decode_group, decode_reply, encode_group, encode_reply
from ledger.application.meter_operations import (
    Applied,
    Draw,
    Expire,
    GrantedLease,
    Operation,
    Renew,
    Report,
    Reported,
    Reserve,
    ReturnLease,
)
from ledger.domain.actors import Actor
from ledger.domain.errors import BudgetExceeded, Unavailable
from ledger.domain.metering import Bounds, MeteredCall, Settlement

NOW = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
PEP = Actor(type="api_key", name="pep-1", role="pep")
OTHER_PEP = Actor(type="oidc", name="gw", role="pep", iss="https://idp.example", client_id="gw")
BOUNDS = Bounds(budget="1000.00", currency="USD", max_calls=None, class_limits={"search": 5})


def _group() -> list[Operation]:
    return [
        Draw("msn_a", "lse_1", MeteredCall("1.25", "USD", None), "ev_1.msn_a", "mdt_1", NOW),
        Draw("msn_a", "lse_1", MeteredCall(None, None, "search"), "ev_2.msn_a", None, NOW),
        Report("msn_a", "ev_0.msn_a", "executed", "0.50", PEP),
        Report("msn_b", "ev_9.msn_b", "aborted", None, OTHER_PEP),
        Report("msn_a", "ev_3.msn_a", "executed", None, PEP),
        Reserve("msn_c", BOUNDS, MeteredCall("2.00", "USD", None), "ev_4.msn_c", "mdt_2", NOW),
        Expire("msn_a"),
        ReturnLease("msn_a", "lse_1"),
        Renew("msn_b", "lse_2", BOUNDS),
    ]


def test_every_kind_of_operation_arrives_as_it_was_sent_in_order() -> None:
    group = _group()
    assert decode_group(encode_group(group)) == group


def test_each_report_keeps_its_own_actor() -> None:
    received = decode_group(encode_group(_group()))
    actors = [op.actor for op in received if isinstance(op, Report)]
    assert actors == [PEP, OTHER_PEP, PEP]


def test_every_kind_of_outcome_arrives_as_it_was_answered() -> None:
    lease = GrantedLease("msn_a", "lse_3", BOUNDS, 5000, None, {"search": 2}, NOW)
    applied = Applied(
        outcomes=[
            None,
            Reported(Settlement("executed", 50, "0.50"), replayed=False),
            Reported(Settlement("aborted", 0), replayed=True),
            3,
            BudgetExceeded("the Mission's max_budget would be exceeded", control="max_budget"),
        ],
        granted=[lease],
        conflicts=1,
        apply_seconds=0.001,
        save_seconds=0.004,
    )
    decoded, positions, topics, failure = decode_reply(
        encode_reply(applied, [7, 8], frozenset({"ledger.domain.metering:Meter.Drawn"}), None)
    )
    assert decoded is not None
    assert decoded.outcomes[:4] == applied.outcomes[:4]
    refusal = decoded.outcomes[4]
    assert isinstance(refusal, BudgetExceeded)
    assert refusal.detail == "the Mission's max_budget would be exceeded"
    assert refusal.control == "max_budget"
    assert (decoded.granted, decoded.conflicts) == ([lease], 1)
    assert (decoded.apply_seconds, decoded.save_seconds) == (0.001, 0.004)
    assert (positions, topics) == ([7, 8], frozenset({"ledger.domain.metering:Meter.Drawn"}))
    assert failure is None


def test_a_group_that_failed_answers_with_its_failure_and_nothing_applied() -> None:
    applied, positions, topics, failure = decode_reply(
        encode_reply(None, [], frozenset(), Unavailable("the store is down"))
    )
    assert applied is None
    assert (positions, topics) == ([], frozenset())
    assert isinstance(failure, Unavailable)
    assert failure.detail == "the store is down"
