"""AuthZEN search over the evaluation index: who may, on what, and which actions.

Results come from currently valid Mandates (the domain's one validity rule: own state,
validity window, every ancestor, an effectively active Mission). Constraints depend on
request parameters that a search does not carry, so a result means "covered by granted
authority"; the PEP still evaluates each concrete action. Results are sorted, so paging is
stable on a static data set.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ledger.domain.actions import is_concrete, is_family
from ledger.domain.mandates import validity
from ledger.domain.resources import parse_request, resource_covers
from projections.evaluation_index import EvaluationIndex, MandateEntry, MissionEntry


def _valid(index: EvaluationIndex, mandate: MandateEntry, now: datetime) -> MissionEntry | None:
    """The Mandate's Mission when the domain's validity rule holds for the Mandate."""
    mission = index.mission(mandate.mission_id)
    verdict = validity(
        mandate,
        ancestors=index.chain(mandate),
        mission_state=None if mission is None else mission.mission.effective_state(now),
        instance_revoked=False,  # as in the decision point: the index holds none
        now=now,
    )
    return mission if verdict.active else None


def _valid_mandates(
    index: EvaluationIndex, now: datetime, client_id: str | None = None
) -> Iterator[tuple[MandateEntry, MissionEntry]]:
    candidates = (
        list(index.mandates.values()) if client_id is None else index.mandates_of(client_id)
    )
    for mandate in candidates:
        mission = _valid(index, mandate, now)
        if mission is not None:
            yield mandate, mission


def _allowed(mandate: MandateEntry, mission: MissionEntry, uri: str, action: str) -> bool:
    if not is_concrete(action):
        return False
    target = parse_request(uri)
    return (
        any(e.covers(target, action) for e in mandate.entries)
        and any(e.covers(target, action) for e in mission.entries)
        and not any(c.covers(target, action) for c in mission.contained)
    )


def subjects(
    index: EvaluationIndex, *, subject_type: str, action: str, uri: str, now: datetime
) -> list[dict[str, Any]]:
    if subject_type != "agent":
        return []
    found: set[tuple[str, str | None]] = set()
    for mandate, mission in _valid_mandates(index, now):
        if _allowed(mandate, mission, uri, action):
            found.add((mandate.client_id, mandate.instance_id))
    results = []
    for client_id, instance_id in sorted(found, key=lambda f: (f[0], f[1] or "")):
        item: dict[str, Any] = {"type": "agent", "id": client_id}
        if instance_id is not None:
            item["properties"] = {"instance_id": instance_id}
        results.append(item)
    return results


def _holds(mandate: MandateEntry, instance_id: object) -> bool:
    """Without ``subject.properties.instance_id`` every instance of the agent counts."""
    return instance_id is None or mandate.instance_id in (None, instance_id)


def resources(
    index: EvaluationIndex,
    *,
    subject_id: str,
    instance_id: object,
    action: str,
    resource_type: str,
    now: datetime,
) -> list[dict[str, Any]]:
    found: set[str] = set()
    for mandate, mission in _valid_mandates(index, now, subject_id):
        if not _holds(mandate, instance_id):
            continue
        for compiled in mandate.entries:
            if _allowed(mandate, mission, compiled.entry.resource, action):
                found.add(compiled.entry.resource)
    return [{"type": resource_type, "id": uri} for uri in sorted(found)]


def actions(
    index: EvaluationIndex, *, subject_id: str, instance_id: object, uri: str, now: datetime
) -> list[dict[str, Any]]:
    found: set[str] = set()
    for mandate, mission in _valid_mandates(index, now, subject_id):
        if not _holds(mandate, instance_id):
            continue
        for compiled in mandate.entries:
            entry = compiled.entry
            if not resource_covers(entry.resource, entry.resource_match, uri):
                continue
            for action in entry.actions:
                # A family (``invoices.*``) is reported as such: the PEP evaluates members.
                probe = action[:-2] + ".any" if is_family(action) else action
                if _allowed(mandate, mission, uri, probe):
                    found.add(action)
    return [{"name": name} for name in sorted(found)]
