"""The one Mandate validity rule (``ledger.domain.mandates.validity``), without any store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ledger.domain.mandates import MandateWindow, Validity, validity

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TS = NOW.timestamp()


@dataclass(frozen=True)
class Window:
    state: str = "active"
    not_before_ts: float = TS - 60
    expires_ts: float = TS + 60


def invalid(reason: str, state: str) -> Validity:
    return Validity(active=False, reason=reason, state=state)


def check(
    mandate: MandateWindow = Window(),
    *,
    ancestors: tuple[MandateWindow | None, ...] = (),
    mission_state: str | None = "active",
    instance_revoked: bool = False,
    now: datetime = NOW,
) -> Validity:
    return validity(
        mandate,
        ancestors=ancestors,
        mission_state=mission_state,
        instance_revoked=instance_revoked,
        now=now,
    )


def test_a_mandate_whose_four_conditions_hold_is_valid() -> None:
    assert check(ancestors=(Window(), Window())) == Validity(active=True)


def test_a_mandate_recorded_inactive_is_invalid_in_its_recorded_state() -> None:
    for state in ("revoked", "cascaded", "expired"):
        assert check(Window(state=state)) == invalid(f"mandate_{state}", state)


def test_a_mandate_is_expired_from_its_expiry_instant_before_it_is_recorded() -> None:
    assert check(Window(expires_ts=TS)) == invalid("mandate_expired", "expired")
    assert check(Window(expires_ts=TS + 0.001)).active


def test_a_mandate_is_not_valid_before_its_issuance() -> None:
    assert check(Window(not_before_ts=TS + 1)) == invalid("mandate_not_yet_valid", "active")
    assert check(Window(not_before_ts=TS)).active


def test_an_ancestor_out_of_its_window_makes_the_mandate_invalid() -> None:
    for ancestor in (
        Window(state="revoked"),
        Window(expires_ts=TS),
        Window(not_before_ts=TS + 1),
        None,  # an ancestor the reader does not hold: fail closed
    ):
        assert check(ancestors=(Window(), ancestor)) == invalid("parent_inactive", "cascaded")


def test_a_suspended_mission_suspends_its_mandates() -> None:
    assert check(mission_state="suspended") == invalid("mission_suspended", "suspended")


def test_an_ended_or_unknown_mission_cascades_its_mandates() -> None:
    assert check(mission_state="revoked") == invalid("mission_revoked", "cascaded")
    assert check(mission_state=None) == invalid("mission_inactive", "cascaded")


def test_a_revoked_instance_makes_its_mandates_invalid() -> None:
    assert check(instance_revoked=True) == invalid("instance_revoked", "revoked")


def test_the_mandates_own_window_is_reported_before_its_chain_and_mission() -> None:
    verdict = check(
        Window(expires_ts=TS),
        ancestors=(None,),
        mission_state="suspended",
        instance_revoked=True,
    )
    assert verdict.reason == "mandate_expired"
    assert check(ancestors=(None,), mission_state="suspended").reason == "parent_inactive"
    assert check(mission_state="suspended", instance_revoked=True).reason == "mission_suspended"


def test_the_rule_reads_the_clock_only_through_now() -> None:
    later = NOW + timedelta(seconds=61)
    assert check(now=NOW).active
    assert check(now=later).reason == "mandate_expired"
