"""Serialise an aggregate's whole state with the application's transcoder.

Read models keep the current state of each aggregate as one of these blobs and
fold new events into it with the domain's own ``mutate``; a rebuild from position
0 therefore produces exactly what the incremental updates produced.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import Transcoder
from eventsourcing.utils import get_topic, resolve_topic


class StateCodec:
    def __init__(self, transcoder: Transcoder) -> None:
        self._transcoder = transcoder

    def freeze(self, aggregate: BaseAggregate[Any]) -> bytes:
        state = dict(aggregate.__dict__)
        state.pop("_pending_events", None)
        return self._transcoder.encode({"topic": get_topic(type(aggregate)), "state": state})

    def thaw(self, data: bytes) -> BaseAggregate[Any]:
        decoded = self._transcoder.decode(data)
        cls = resolve_topic(decoded["topic"])
        aggregate = cls.__new__(cls)
        aggregate.__dict__.update(decoded["state"])
        aggregate.__dict__["_pending_events"] = []
        assert isinstance(aggregate, BaseAggregate)
        return aggregate
