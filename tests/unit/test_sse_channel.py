"""One stream's SSE channel: its buffer of recent frames stays contiguous, so a subscriber
either gets every SET after its cursor from it or pages them from the store."""

from __future__ import annotations

from api.workers.sse_hub import Channel, frame


def rows(*seqs: int) -> list[tuple[int, bytes]]:
    return [(seq, frame(seq, f"set-{seq}")) for seq in seqs]


def test_frames_after_a_cursor_come_from_the_buffer_in_order() -> None:
    channel = Channel("s1", "enabled")
    channel.publish(rows(1, 2))
    channel.publish(rows(3))
    after = channel.after(1)
    assert after is not None
    assert [seq for seq, _ in after] == [2, 3]


def test_a_frame_already_buffered_is_not_buffered_twice() -> None:
    channel = Channel("s1", "enabled")
    channel.publish(rows(1, 2))
    channel.publish(rows(2, 3))
    after = channel.after(0)
    assert after is not None
    assert [seq for seq, _ in after] == [1, 2, 3]


def test_a_gap_sends_subscribers_behind_it_to_the_store() -> None:
    channel = Channel("s1", "enabled")
    channel.publish(rows(1, 2))
    channel.publish(rows(5, 6))  # 3 and 4 were never handed over here
    assert channel.after(2) is None  # page 3.. from the store
    after = channel.after(4)
    assert after is not None
    assert [seq for seq, _ in after] == [5, 6]
