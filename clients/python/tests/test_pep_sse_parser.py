"""The SSE parser follows the WHATWG event-stream interpretation rules."""

from __future__ import annotations

from mission_ledger_pep.sse import SseParser


def parse(*chunks: str) -> tuple[list[tuple[str, str, str]], SseParser]:
    parser = SseParser()
    events = [(e.type, e.data, e.id) for chunk in chunks for e in parser.feed(chunk)]
    return events, parser


def test_multiple_data_lines_join_with_lf() -> None:
    events, _ = parse("data: a\ndata: b\n\n")
    assert events == [("message", "a\nb", "")]


def test_crlf_and_cr_line_ends_split_across_chunks() -> None:
    events, _ = parse("id: 7\r", "\nevent: set\rdata: x\r\n\r", "\n")
    assert events == [("set", "x", "7")]


def test_leading_bom_is_ignored() -> None:
    events, _ = parse("\ufeffdata: x\n\n")
    assert events == [("message", "x", "")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    events, _ = parse(": ping\nfoo: bar\ndata: x\n\n")
    assert events == [("message", "x", "")]


def test_only_one_leading_space_is_stripped() -> None:
    events, _ = parse("data:  two\n\n")
    assert events == [("message", " two", "")]


def test_event_type_resets_after_dispatch_but_id_persists() -> None:
    events, _ = parse("id: 1\nevent: set\ndata: a\n\ndata: b\n\n")
    assert events == [("set", "a", "1"), ("message", "b", "1")]


def test_empty_data_dispatches_nothing_but_moves_the_id() -> None:
    events, parser = parse("id: 9\n\n")
    assert events == []
    assert parser.last_event_id == "9"


def test_id_with_nul_is_ignored() -> None:
    _, parser = parse("id: 1\n\nid: a\0b\n\n")
    assert parser.last_event_id == "1"


def test_retry_accepts_digits_only() -> None:
    _, parser = parse("retry: 5s\n\nretry: 3000\n\n")
    assert parser.retry_ms == 3000


def test_incomplete_event_is_not_dispatched() -> None:
    events, _ = parse("data: partial\n")
    assert events == []
