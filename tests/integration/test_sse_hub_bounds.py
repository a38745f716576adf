"""A new SSE subscriber starts from the oldest retained SET; the log's bounds it starts from
are read in one snapshot, so a batch committed meanwhile cannot make it skip a SET."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from api.workers.sse_hub import SseHub
from ledger.application import Ledger
from ledger.persistence.database import Cursor, Database
from ledger.settings import Settings
from tests.builders import active_mission
from tests.integration.test_signal_log import Signals


class CommitsAfterTheFirstLogRead:
    """The store, as seen by the hub, with another replica's signal-log batch committed
    right after the hub first reads ``set_log`` (in another thread and connection)."""

    def __init__(self, database: Database, commit: Any) -> None:
        self._database = database
        self._commit = commit
        self.committed = False

    def _after(self, sql: str) -> None:
        if "FROM set_log" in sql and not self.committed:
            self.committed = True
            thread = threading.Thread(target=self._commit)
            thread.start()
            thread.join()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self._database.fetchone(sql, params)
        self._after(sql)
        return row

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        outer = self

        class Watched:
            def __init__(self, cur: Cursor) -> None:
                self._cur = cur

            def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
                self._cur.execute(sql, params)
                outer._after(sql)

            def fetchone(self) -> dict[str, Any] | None:
                return self._cur.fetchone()

        with self._database.snapshot() as cur:
            yield Watched(cur)  # type: ignore[misc]


def test_a_batch_committed_while_a_subscriber_starts_is_not_skipped(
    ledger: Ledger, store_settings: Settings
) -> None:
    signals = Signals(ledger, store_settings)
    stream = signals.stream()
    signals.follower.catch_up()  # the stream is known, its log empty (next seq 1)
    active_mission(ledger)  # its activation SET is not written yet
    store = CommitsAfterTheFirstLogRead(ledger.database, signals.follower.catch_up)
    hub = SseHub(store)  # type: ignore[arg-type]
    oldest, next_seq = hub._bounds(stream)
    assert store.committed
    first = oldest if oldest is not None else next_seq
    assert first == 1  # the subscriber starts before the activation SET (seq 1)
    assert len(signals.log(stream)) == 1
