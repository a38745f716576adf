"""The records a server hands its decision log writer process (``projections.decision_log``
``encode_wires`` / ``decode_wires``, ``api.workers.decision_frames``): what the writer
stores from the bytes it receives is exactly the row the server would have stored itself,
whatever the request held and however its body was written."""

from __future__ import annotations

import codecs
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from api.json_body import parse_json_fast
from api.workers.decision_frames import AckReader, FrameReader, committed, frame
from ledger.domain.actors import Actor
from projections.decision_log import DecisionRecord, decode_wires, encode_wires, row_of
from projections.pdp import Decision

PEP = Actor(type="api_key", name="pep-1", role="pep")
AT = datetime(2026, 12, 5, 9, 30, 0, 123456, tzinfo=UTC)
_IDS = itertools.count(1)


def _record(request: object, *, text: bytes | None = None, permit: bool = True) -> DecisionRecord:
    context: dict[str, Any] = {
        "evaluation_id": f"ev_wire{next(_IDS):06d}",
        "mission": {"id": "msn_1", "version": 3},
    }
    if not permit:
        context["reason"] = "out_of_authority"
    decision = Decision(decision=permit, context=context, mandate_id="mdt_1", position=7)
    return DecisionRecord(AT, PEP, request, decision, text)


REQUEST = {
    "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
    "action": {"name": "invoices.pay", "properties": {"amount": 250.5, "currency": "USD"}},
    "resource": {"type": "api", "id": "https://erp.example.com/invoices/1"},
    "context": {"mandate": "eyJ" + "x" * 900, "proof": {"jkt": "y" * 43}},
}
BODIES = {
    "compact": b'{"subject":{"type":"agent","id":"agent-1"},"action":{"name":"a"},'
    b'"resource":{"type":"api","id":"r"}}',
    "spaced, members out of order": b' {\n  "resource": {"id": "r", "type": "api"},\n'
    b'  "action": {"name": "a"}, "subject": {"id": "agent-1", "type": "agent"} }\n',
    "non-ASCII and escapes": '{"subject":{"type":"agent","id":"agént-\\u00e9\\n"},'
    '"action":{"name":"a"},"resource":{"type":"api","id":"r/\\u2028"}}'.encode(),
    "an integer beyond 64 bits": b'{"subject":{"type":"agent","id":"a"},"action":{"name":"a",'
    b'"properties":{"n":123456789012345678901234567890}},"resource":{"type":"api","id":"r"}}',
    "a byte order mark": codecs.BOM_UTF8 + b'{"subject":{"type":"agent","id":"a"},'
    b'"action":{"name":"a"},"resource":{"type":"api","id":"r"}}',
}


def _through_the_pipe(records: list[DecisionRecord]) -> list[tuple[Any, ...]]:
    return [row_of(wire) for wire in decode_wires(encode_wires(records))]


def test_an_answers_records_arrive_as_the_rows_the_server_would_store() -> None:
    records = [_record(REQUEST), _record(REQUEST, permit=False), _record(["not", "an", "object"])]
    assert _through_the_pipe(records) == [record.row() for record in records]


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_body_sent_as_received_is_stored_as_the_request_the_decision_path_read(
    body: bytes,
) -> None:
    parsed = parse_json_fast(body)
    sent = _record(parsed, text=body)
    assert _through_the_pipe([sent]) == [_record_row_of(sent, parsed)]


def _record_row_of(record: DecisionRecord, parsed: object) -> tuple[Any, ...]:
    """The row of ``record`` built from the parsed request (no text)."""
    return DecisionRecord(record.evaluated_at, record.principal, parsed, record.decision).row()


def test_a_value_orjson_cannot_encode_still_reaches_the_writer() -> None:
    record = _record({**REQUEST, "context": {"n": 2**70}})
    assert _through_the_pipe([record]) == [record.row()]


def test_frames_split_anywhere_by_the_pipe_are_read_whole_and_in_order() -> None:
    payloads = [encode_wires([_record(REQUEST)]) for _ in range(3)]
    stream = b"".join(frame(seq, p, repeated=seq == 2) for seq, p in enumerate(payloads, 1))
    reader = FrameReader()
    frames = [f for i in range(0, len(stream), 7) for f in reader.feed(stream[i : i + 7])]
    assert [(f.seq, f.repeated, f.payload) for f in frames] == [
        (1, False, payloads[0]),
        (2, True, payloads[1]),
        (3, False, payloads[2]),
    ]
    assert reader.partial == 0


def test_acknowledgements_split_by_the_pipe_are_read_whole() -> None:
    stream = committed(5, 40) + committed(9, 12)
    reader = AckReader()
    acks = [a for i in range(0, len(stream), 5) for a in reader.feed(stream[i : i + 5])]
    assert [(a.through, a.rows) for a in acks] == [(5, 40), (9, 12)]
