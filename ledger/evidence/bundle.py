"""The evidence bundle format, version 1, and its writer (``docs/evidence.md``).

A bundle is a POSIX tar of regular files at its top level:

* ``manifest.jws``: a compact JWS (``typ: ledger-evidence-manifest+jwt``) whose payload
  names the ``format``, the ``issuer``, ``created_at``, the ``range`` exported and every
  other file with its digest, ``"sha-256:" + base64url(SHA-256(file))``;
* ``jwks.json``: the public keys of every key that signed anything in the bundle (the
  manifest, checkpoints, Mandate tokens, SETs), retired and unpublished ones included;
* ``events.jsonl``: the events, one JSON object a line in position order, each with its
  stored bytes and its link into the hash chain (``EvidenceEvent``);
* ``mandates.jsonl``, ``sets.jsonl``, ``checkpoints.jsonl``, ``decisions.jsonl``: one JSON
  object a line (empty files when there is nothing to say).

The writer streams: each file goes to a temporary file while its digest is computed, and
the tar is assembled at the end, so a bundle of millions of events needs little memory.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import orjson

from ledger.domain.instants import format_instant

FORMAT: Final = "mission-ledger/evidence-bundle/v1"
MANIFEST_TYP: Final = "ledger-evidence-manifest+jwt"

MANIFEST: Final = "manifest.jws"
JWKS: Final = "jwks.json"
EVENTS: Final = "events.jsonl"
MANDATES: Final = "mandates.jsonl"
SETS: Final = "sets.jsonl"
CHECKPOINTS: Final = "checkpoints.jsonl"
DECISIONS: Final = "decisions.jsonl"
#: Every file the manifest lists, in the order the tar holds them (the manifest first).
LISTED_FILES: Final = (JWKS, CHECKPOINTS, EVENTS, MANDATES, SETS, DECISIONS)

RANGE_MISSION: Final = "mission"
RANGE_TIME: Final = "time"


def file_digest(digest: Any) -> str:
    """The manifest's form of a finished SHA-256: ``sha-256:`` and base64url, no padding."""
    return "sha-256:" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class EvidenceEvent:
    """One line of ``events.jsonl``: an event as stored, and its link in the chain.

    ``chain_hash`` is the event's link; ``chain_prev`` and ``prev_hash`` are its
    predecessor's position and link (0 and 32 zero bytes for the first event), so the
    link can be recomputed from this line alone (``ledger.persistence.chain.link_hash``).
    ``state`` is the stored bytes: written as text when they are UTF-8 (the JSON the
    event store keeps), else as ``state_base64url``. ``recorded_at`` and ``actor`` repeat
    what ``state`` says, for reading.
    """

    position: int
    chain_prev: int
    prev_hash: bytes
    chain_hash: bytes
    originator_id: str
    version: int
    topic: str
    state: bytes
    recorded_at: datetime | None
    actor: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "position": self.position,
            "chain_prev": self.chain_prev,
            "prev_hash": self.prev_hash.hex(),
            "chain_hash": self.chain_hash.hex(),
            "originator_id": self.originator_id,
            "version": self.version,
            "topic": self.topic,
            "recorded_at": None if self.recorded_at is None else format_instant(self.recorded_at),
            "actor": None if self.actor is None else dict(self.actor),
        }
        try:
            line["state"] = self.state.decode("utf-8")
        except UnicodeDecodeError:
            line["state_base64url"] = (
                base64.urlsafe_b64encode(self.state).rstrip(b"=").decode("ascii")
            )
        return line


class _Member:
    """A file of the bundle being written: a temporary file and its running digest."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.path = directory / name
        self.digest = hashlib.sha256()
        self.lines = 0
        self._handle: IO[bytes] = self.path.open("wb")

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self._handle.write(data)

    def write_line(self, value: Any) -> None:
        self.write(orjson.dumps(value) + b"\n")
        self.lines += 1

    def close(self) -> None:
        self._handle.close()


class BundleWriter:
    """Collects the files of one bundle, then writes the tar with its signed manifest."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="ml-evidence-")
        self._members: dict[str, _Member] = {
            name: _Member(Path(self._directory.name), name) for name in LISTED_FILES
        }

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for member in self._members.values():
            member.close()
        self._directory.cleanup()

    def add_lines(self, name: str, values: Iterable[Any]) -> int:
        """Append JSON lines to ``name``; how many it holds now."""
        member = self._members[name]
        for value in values:
            member.write_line(value)
        return member.lines

    def set_document(self, name: str, value: Any) -> None:
        """``name`` holds one JSON document (``jwks.json``)."""
        self._members[name].write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")

    def lines(self, name: str) -> int:
        return self._members[name].lines

    def finish(
        self,
        out: IO[bytes],
        *,
        issuer: str,
        created_at: datetime,
        range_: Mapping[str, Any],
        sign: Callable[[bytes], str],
    ) -> dict[str, Any]:
        """Sign the manifest and write the tar to ``out``; returns the manifest's claims."""
        for member in self._members.values():
            member.close()
        manifest = {
            "format": FORMAT,
            "issuer": issuer,
            "created_at": format_instant(created_at),
            "range": dict(range_),
            "files": {name: file_digest(m.digest) for name, m in self._members.items()},
        }
        jws = sign(orjson.dumps(manifest)).encode("ascii")
        mtime = int(created_at.timestamp())
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, len(jws), mtime, _bytes_reader(jws))
            for name, member in self._members.items():
                with member.path.open("rb") as handle:
                    _add(tar, name, os.fstat(handle.fileno()).st_size, mtime, handle)
        return manifest


def _add(tar: tarfile.TarFile, name: str, size: int, mtime: int, handle: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, handle)


def _bytes_reader(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)
