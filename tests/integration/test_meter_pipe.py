"""The Meter writer's pipe messages (``api.workers.meter_frames``) over real pipes: each
arrives whole and alone, however the pipe cuts it up."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pytest

from api.workers.meter_frames import LENGTH, MessageReader, write_message


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_messages_arrive_whole_and_in_order(pipe: tuple[int, int]) -> None:
    read, write = pipe
    for payload in (b"first", b"", b"third"):
        write_message(write, payload)
    reader = MessageReader(read)
    assert [reader.read(), reader.read(), reader.read()] == [b"first", b"", b"third"]


def test_a_message_larger_than_the_pipe_arrives_whole(pipe: tuple[int, int]) -> None:
    read, write = pipe
    payload = os.urandom(3 << 20)  # a pipe holds 64 KiB unless enlarged
    writer = threading.Thread(target=write_message, args=(write, payload))
    writer.start()
    assert MessageReader(read).read() == payload
    writer.join()


def test_a_message_cut_into_pieces_is_read_once_whole(pipe: tuple[int, int]) -> None:
    read, write = pipe
    data = LENGTH.pack(6) + b"abcdef"
    reader = MessageReader(read)
    os.write(write, data[:2])  # part of the length
    os.write(write, data[2:7])
    ready: list[bytes] = []
    waiting = threading.Thread(target=lambda: ready.append(reader.read()))
    waiting.start()
    waiting.join(0.2)
    assert ready == []  # still waiting for the rest
    os.write(write, data[7:])
    waiting.join(5)
    assert ready == [b"abcdef"]


def test_a_pipe_that_ends_before_a_whole_message_raises_eof(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.write(write, LENGTH.pack(10) + b"abc")
    os.close(write)
    with pytest.raises(EOFError):
        MessageReader(read).read()


def test_writing_to_a_pipe_nobody_reads_raises_broken_pipe(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.close(read)
    with pytest.raises(BrokenPipeError):
        write_message(write, b"lost")
