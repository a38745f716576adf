"""SSF stream use cases: create, configure, status, subjects, verification, delete."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ledger.application.base import Changes, IdempotencyRequest, LedgerBase, Written
from ledger.domain.actors import Actor
from ledger.domain.streams import (
    Stream,
    StreamStatus,
    stream_aggregate_id,
    validate_receiver_config,
    validate_subject,
)


class StreamUseCases(LedgerBase):
    #: Accept http:// push endpoints on loopback hosts (tests, local development).
    allow_http_loopback_push = False
    min_verification_interval = timedelta(seconds=10)

    def get_stream(self, stream_id: str) -> Stream:
        return self._get(Stream, stream_aggregate_id(stream_id), "stream")

    def create_stream(
        self,
        *,
        actor: Actor,
        aud: str,
        receiver_config: Mapping[str, Any],
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Stream]:
        config = validate_receiver_config(
            receiver_config, allow_http_loopback=self.allow_http_loopback_push
        )

        def command() -> Changes:
            stream = Stream.create(
                stream_id=secrets.token_hex(16),
                owner=actor,
                aud=aud,
                config=config,
                now=self.clock.now(),
            )
            return Changes(stream, [stream], {})

        return self.execute(command, idempotency, Stream)

    def configure_stream(
        self, *, actor: Actor, stream_id: str, receiver_config: Mapping[str, Any]
    ) -> Written[Stream]:
        """Record the receiver's complete new configuration (PATCH merged, or PUT)."""
        config = validate_receiver_config(
            receiver_config, allow_http_loopback=self.allow_http_loopback_push
        )

        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.configure(config, actor=actor, now=self.clock.now())
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)

    def set_stream_status(
        self, *, actor: Actor, stream_id: str, status: StreamStatus, reason: str | None
    ) -> Written[Stream]:
        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.set_status(status, reason=reason, actor=actor, now=self.clock.now())
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)

    def add_stream_subject(self, *, stream_id: str, subject: object) -> Written[Stream]:
        checked = validate_subject(subject)

        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.add_subject(checked, now=self.clock.now())
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)

    def remove_stream_subject(self, *, stream_id: str, subject: object) -> Written[Stream]:
        checked = validate_subject(subject)

        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.remove_subject(checked, now=self.clock.now())
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)

    def request_verification(self, *, stream_id: str, state: str | None) -> Written[Stream]:
        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.request_verification(
                state, now=self.clock.now(), min_interval=self.min_verification_interval
            )
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)

    def delete_stream(self, *, actor: Actor, stream_id: str) -> Written[Stream]:
        def command() -> Changes:
            stream = self.get_stream(stream_id)
            stream.delete(actor=actor, now=self.clock.now())
            return Changes(stream, [stream], {})

        return self.execute(command, None, Stream)
