"""Check an evidence bundle offline: no database, no settings, no network.

In order (``docs/evidence.md``):

1. the tar holds regular top-level files only, each once, among them ``manifest.jws`` and
   ``jwks.json``; ``jwks.json`` is a JWK Set whose every ``kid`` is its key's thumbprint
   (and, with ``trusted``, every key is one of those);
2. ``manifest.jws`` verifies against ``jwks.json`` (``typ: ledger-evidence-manifest+jwt``);
3. the tar holds exactly the files the manifest lists, each with the listed digest;
4. ``events.jsonl``: every event's link recomputes from its content and its
   predecessor's hash; the events are in position order; and they are continuous: for a
   time range, each event chains from the line before it (the first from the range's
   ``after_position``/``after_hash``); for a Mission, each event whose predecessor is in
   the bundle chains from that line, and each aggregate's versions run 1, 2, ... without
   a gap; the count and first and last positions are the manifest's;
5. every checkpoint, Mandate token and SET verifies against ``jwks.json`` with its
   ``typ``, says what its line says, and belongs to the bundle's events (a checkpoint at
   a position in the bundle signs that event's chain hash).

Every problem found is reported (at most ``MAX_PROBLEMS_PER_FILE`` per file), each naming
the file, line and position.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from ledger.domain.checkpoints import CHECKPOINT_TYP, MalformedCheckpoint, parse_checkpoint_payload
from ledger.domain.mandate_claims import MANDATE_TYP
from ledger.domain.sets import SET_TYP
from ledger.evidence.bundle import (
    CHECKPOINTS,
    DECISIONS,
    EVENTS,
    FORMAT,
    JWKS,
    MANDATES,
    MANIFEST,
    MANIFEST_TYP,
    RANGE_MISSION,
    RANGE_TIME,
    SETS,
    file_digest,
)
from ledger.persistence.chain import link_hash
from ledger.signing.jwks import JwksVerifier, JwsRejected

MAX_PROBLEMS_PER_FILE: Final = 20


@dataclass
class BundleReport:
    """What ``verify_bundle`` found: ``problems`` is empty when the bundle verifies."""

    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    signer: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    _per_file: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, where: str, message: str) -> None:
        seen = self._per_file.get(where, 0) + 1
        self._per_file[where] = seen
        if seen <= MAX_PROBLEMS_PER_FILE:
            self.problems.append(f"{where}: {message}")
        elif seen == MAX_PROBLEMS_PER_FILE + 1:
            self.problems.append(f"{where}: (further problems in this file not listed)")


class _Stop(Exception):
    """Nothing further can be checked (no usable manifest or key set)."""


def verify_bundle(path: Path, *, trusted: Mapping[str, Any] | None = None) -> BundleReport:
    """Verify the bundle at ``path``; ``trusted``: a JWK Set the bundle's keys must be in."""
    report = BundleReport()
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as error:
        report.fail(str(path), f"not a readable tar file ({error})")
        return report
    try:
        with tar:
            _Verifier(tar, report, trusted).run()
    except _Stop:
        pass
    except tarfile.TarError as error:
        report.fail(str(path), f"the tar file is damaged ({error})")
    return report


@dataclass
class _SeenEvent:
    originator_id: str
    chain_hash: bytes
    ordinal: int  # 1 for the bundle's first event


class _Verifier:
    def __init__(
        self, tar: tarfile.TarFile, report: BundleReport, trusted: Mapping[str, Any] | None
    ) -> None:
        self.tar = tar
        self.report = report
        self.trusted = trusted
        self.members: dict[str, tarfile.TarInfo] = {}
        self.keys: JwksVerifier | None = None
        self.range: dict[str, Any] = {}
        self.files: dict[str, str] = {}
        # Filled while reading: checkpoints by position, events the checks need.
        self.checkpoints: dict[int, tuple[int, bytes, int]] = {}  # position: line, hash, events
        self.events: dict[int, _SeenEvent] = {}
        self.first_position: int | None = None
        self.last_position: int | None = None
        self._last_hash = b""
        self._versions: dict[str, int] = {}  # a Mission bundle's aggregates: last version

    # ------------------------------------------------------------------ structure

    def run(self) -> None:
        self._list_members()
        self._read_keys()
        self._read_manifest()
        for name in sorted(set(self.files) - set(self.members)):
            self.report.fail(name, "listed in the manifest but missing from the bundle")
        self._read(CHECKPOINTS, self._checkpoint_line)
        self._read(EVENTS, self._event_line, finish=self._events_done)
        self._read(MANDATES, self._mandate_line)
        self._read(SETS, self._set_line)
        self._read(DECISIONS, self._decision_line)
        self._digest_only(JWKS)

    def _list_members(self) -> None:
        for info in self.tar.getmembers():
            if not info.isfile() or "/" in info.name or info.name in ("", ".", ".."):
                self.report.fail(info.name, "not a plain top-level file (a bundle holds no other)")
                continue
            if info.name in self.members:
                self.report.fail(info.name, "appears twice in the tar")
                continue
            self.members[info.name] = info
        for name in (MANIFEST, JWKS):
            if name not in self.members:
                self.report.fail(name, "missing: nothing in the bundle can be verified")
                raise _Stop

    def _content(self, name: str) -> bytes:
        handle = self.tar.extractfile(self.members[name])
        assert handle is not None
        with handle:
            return handle.read()

    def _read_keys(self) -> None:
        try:
            document = json.loads(self._content(JWKS))
            self.keys = JwksVerifier(document)
        except ValueError as error:
            self.report.fail(JWKS, f"not a usable JWK Set ({error})")
            raise _Stop from None
        if self.trusted is not None:
            trusted = {
                k.get("kid"): k for k in self.trusted.get("keys", []) if isinstance(k, Mapping)
            }
            for key in document["keys"]:
                known = trusted.get(key["kid"])
                if known is None or _public(known) != _public(key):
                    self.report.fail(JWKS, f"key {key['kid']} is not one of the trusted keys")

    def _read_manifest(self) -> None:
        assert self.keys is not None
        token = self._content(MANIFEST).decode("ascii", errors="replace")
        try:
            header, payload = self.keys.verify(token, typ=MANIFEST_TYP)
            manifest = json.loads(payload)
        except JwsRejected as error:
            self.report.fail(
                MANIFEST,
                f"the signature does not verify against {JWKS}: {error} (the manifest or "
                f"{JWKS} was changed or replaced)",
            )
            raise _Stop from None
        except ValueError:
            self.report.fail(MANIFEST, "the signed payload is not JSON")
            raise _Stop from None
        files, range_ = manifest.get("files"), manifest.get("range")
        if (
            manifest.get("format") != FORMAT
            or not isinstance(files, dict)
            or not isinstance(range_, dict)
            or range_.get("kind") not in (RANGE_MISSION, RANGE_TIME)
        ):
            self.report.fail(MANIFEST, f"not a {FORMAT} manifest")
            raise _Stop
        self.report.manifest = manifest
        self.report.signer = str(header.get("kid"))
        self.files = {str(k): str(v) for k, v in files.items()}
        self.range = range_
        for name in sorted(set(self.members) - set(self.files) - {MANIFEST}):
            self.report.fail(name, "not listed in the manifest (added after export)")

    def _read(self, name: str, check: Any, finish: Any = None) -> None:
        """Stream ``name``'s lines through ``check(line_number, object)``, hashing as it
        goes, then compare the digest with the manifest's."""
        if name not in self.members or name not in self.files:
            return
        digest = hashlib.sha256()
        count = 0
        handle = self.tar.extractfile(self.members[name])
        assert handle is not None
        with handle:
            for number, raw in enumerate(handle, start=1):
                digest.update(raw)
                count += 1
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    self.report.fail(name, f"line {number} is not JSON")
                    continue
                if not isinstance(value, dict):
                    self.report.fail(name, f"line {number} is not a JSON object")
                    continue
                try:
                    check(number, value)
                except (KeyError, TypeError, ValueError) as error:
                    self.report.fail(name, f"line {number} is malformed ({error!r})")
        self.report.counts[name] = count
        self._compare_digest(name, digest)
        if finish is not None:
            finish()

    def _digest_only(self, name: str) -> None:
        if name in self.files:
            self._compare_digest(name, hashlib.sha256(self._content(name)))

    def _compare_digest(self, name: str, digest: Any) -> None:
        actual = file_digest(digest)
        if actual != self.files.get(name):
            self.report.fail(
                name,
                f"its digest is {actual}, the manifest says {self.files.get(name)}: the file "
                "was changed after export",
            )

    def _jws(self, name: str, number: int, token: object, typ: str) -> dict[str, Any] | None:
        assert self.keys is not None
        if not isinstance(token, str):
            self.report.fail(name, f"line {number} has no compact JWS")
            return None
        try:
            _, payload = self.keys.verify(token, typ=typ)
            claims = json.loads(payload)
        except JwsRejected as error:
            self.report.fail(name, f"line {number}: {error}")
            return None
        except ValueError:
            self.report.fail(name, f"line {number}: the signed payload is not JSON")
            return None
        return claims if isinstance(claims, dict) else None

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_line(self, number: int, line: dict[str, Any]) -> None:
        claims = self._jws(CHECKPOINTS, number, line.get("jws"), CHECKPOINT_TYP)
        if claims is None:
            return
        try:
            signed = parse_checkpoint_payload(orjson.dumps(claims))
        except MalformedCheckpoint as error:
            self.report.fail(CHECKPOINTS, f"line {number}: {error}")
            return
        said = (line["position"], line["chain_hash"], line["events"])
        if said != (signed.position, signed.chain_hash.hex(), signed.events):
            self.report.fail(
                CHECKPOINTS, f"line {number}: the line does not say what its JWS signs"
            )
            return
        self.checkpoints[signed.position] = (number, signed.chain_hash, signed.events)

    def _checkpoints_against_events(self) -> None:
        from_genesis = (
            self.range.get("kind") == RANGE_TIME and self.range.get("after_position") == 0
        )
        for position, (number, chain_hash, events) in sorted(self.checkpoints.items()):
            seen = self.events.get(position)
            if seen is None:
                continue  # a checkpoint after the bundle's events: it is signed, nothing more
            if seen.chain_hash != chain_hash:
                self.report.fail(
                    CHECKPOINTS,
                    f"line {number}: the checkpoint signs chain hash {chain_hash.hex()} at "
                    f"position {position}, {EVENTS} has {seen.chain_hash.hex()}",
                )
            elif from_genesis and seen.ordinal != events:
                self.report.fail(
                    CHECKPOINTS,
                    f"line {number}: the checkpoint counts {events} events up to position "
                    f"{position}, {EVENTS} holds {seen.ordinal}",
                )

    # ------------------------------------------------------------------ events

    def _event_line(self, number: int, line: dict[str, Any]) -> None:
        position = int(line["position"])
        where = f"line {number} (position {position})"
        state = _state(line)
        chain_hash = bytes.fromhex(line["chain_hash"])
        prev_hash = bytes.fromhex(line["prev_hash"])
        chain_prev = int(line["chain_prev"])
        originator_id, version = str(line["originator_id"]), int(line["version"])
        recomputed = link_hash(
            prev_hash, position, originator_id, version, str(line["topic"]), state
        )
        if recomputed != chain_hash:
            self.report.fail(
                EVENTS, f"{where}: the chain hash does not match the event's content (altered)"
            )
        self._actor_matches(where, line, state)
        previous = self.last_position
        if previous is not None and position <= previous:
            self.report.fail(EVENTS, f"{where}: not after the line before it (position {previous})")
        if self.range["kind"] == RANGE_TIME:
            self._time_continuity(where, chain_prev, prev_hash)
        else:
            self._mission_continuity(where, originator_id, version, chain_prev, prev_hash)
        ordinal = len(self.events) + 1 if self.range["kind"] == RANGE_MISSION else number
        if self.range["kind"] == RANGE_MISSION or position in self.checkpoints:
            self.events[position] = _SeenEvent(originator_id, chain_hash, ordinal)
        self._last_hash = chain_hash
        if self.first_position is None:
            self.first_position = position
        self.last_position = position

    def _actor_matches(self, where: str, line: dict[str, Any], state: bytes) -> None:
        try:
            stored = orjson.loads(state)
        except orjson.JSONDecodeError:
            return  # not JSON (an encrypted store): nothing to compare
        if isinstance(stored, dict) and stored.get("actor") != line.get("actor"):
            self.report.fail(EVENTS, f"{where}: its actor is not the one its stored event names")

    def _time_continuity(self, where: str, chain_prev: int, prev_hash: bytes) -> None:
        if self.last_position is None:
            expected = (int(self.range["after_position"]), str(self.range["after_hash"]))
            what = "the range's start (the manifest's after_position and after_hash)"
        else:
            expected = (self.last_position, self._last_hash.hex())
            what = f"the line before it (position {self.last_position})"
        if (chain_prev, prev_hash.hex()) != expected:
            self.report.fail(
                EVENTS,
                f"{where}: chains from position {chain_prev}, not from {what}: an event is "
                "missing here, or was inserted",
            )

    def _mission_continuity(
        self, where: str, originator_id: str, version: int, chain_prev: int, prev_hash: bytes
    ) -> None:
        predecessor = self.events.get(chain_prev)
        if predecessor is not None and predecessor.chain_hash != prev_hash:
            self.report.fail(
                EVENTS,
                f"{where}: its predecessor hash is not the chain hash of position {chain_prev}",
            )
        last = self._versions.get(originator_id, 0)
        if version != last + 1:
            self.report.fail(
                EVENTS,
                f"{where}: {originator_id} goes from version {last} to {version}: an event of "
                "it is missing",
            )
        self._versions[originator_id] = version

    def _events_done(self) -> None:
        count = self.report.counts.get(EVENTS, 0)
        expected = (
            self.range.get("events"),
            self.range.get("first_position"),
            self.range.get("last_position"),
        )
        if (count, self.first_position, self.last_position) != expected:
            self.report.fail(
                EVENTS,
                f"holds {count} events at positions {self.first_position} to "
                f"{self.last_position}; the manifest says {expected[0]} at positions "
                f"{expected[1]} to {expected[2]}",
            )
        if self.range["kind"] == RANGE_MISSION:
            mission = self.range.get("mission")
            if not any(e.originator_id == mission for e in self.events.values()):
                self.report.fail(EVENTS, f"holds no event of Mission {mission}")
            for aggregate, last in sorted(dict(self.range.get("aggregates", {})).items()):
                found = self._versions.get(aggregate, 0)
                if found != last:
                    self.report.fail(
                        EVENTS,
                        f"{aggregate} ends at version {found}, the manifest says {last}: "
                        "an event of it is missing",
                    )
        self._checkpoints_against_events()

    # ------------------------------------------------------------------ tokens

    def _belongs(self, position: int, originator_id: str | None = None) -> bool:
        if self.range["kind"] == RANGE_TIME:
            first, last = self.range.get("first_position"), self.range.get("last_position")
            return first is not None and last is not None and first <= position <= last
        seen = self.events.get(position)
        return seen is not None and (originator_id is None or seen.originator_id == originator_id)

    def _mandate_line(self, number: int, line: dict[str, Any]) -> None:
        claims = self._jws(MANDATES, number, line.get("token"), MANDATE_TYP)
        if claims is None:
            return
        mandate_id, version = line["mandate_id"], line["mandate_version"]
        if (claims.get("jti"), claims.get("mandate_version")) != (mandate_id, version):
            self.report.fail(
                MANDATES, f"line {number}: the token is not {mandate_id} version {version}"
            )
        if not self._belongs(int(line["position"]), mandate_id):
            self.report.fail(
                MANDATES,
                f"line {number}: position {line['position']} is not an event of {mandate_id} "
                "in this bundle",
            )
        mission = self.range.get("mission")
        if mission is not None and claims.get("mission", {}).get("id") != mission:
            self.report.fail(MANDATES, f"line {number}: the token is not a Mandate of {mission}")

    def _set_line(self, number: int, line: dict[str, Any]) -> None:
        claims = self._jws(SETS, number, line.get("set"), SET_TYP)
        if claims is None:
            return
        if claims.get("jti") != line["jti"]:
            self.report.fail(SETS, f"line {number}: the SET's jti is not {line['jti']}")
        if not self._belongs(int(line["cause_position"])):
            self.report.fail(
                SETS,
                f"line {number}: caused by position {line['cause_position']}, not in this bundle",
            )

    def _decision_line(self, number: int, line: dict[str, Any]) -> None:
        """Decision records are evidence as recorded: their digest is what is checked."""


def _state(line: Mapping[str, Any]) -> bytes:
    if "state" in line:
        return str(line["state"]).encode("utf-8")
    text = str(line["state_base64url"])
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e", "kid", "alg")}
