"""The ``mission-ledger`` command line.

Every command reads the same settings as the server (``MISSION_LEDGER_*``
environment variables, or a TOML file named by ``MISSION_LEDGER_CONFIG``), so
``keys create`` and ``audit verify`` work on the configured store whether or not a
server is running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.domain.actors import Actor
from ledger.domain.authority import parse_authority_set
from ledger.domain.errors import InvalidRequest, LedgerError, NotFound
from ledger.domain.events import TOPIC_PREFIX
from ledger.domain.instants import format_instant, parse_as_of, parse_instant
from ledger.domain.rendering import describe_authority
from ledger.domain.roles import Role
from ledger.persistence.chain import ChainReport, verify_chain_against
from ledger.persistence.migrations import MigrationError, migrate
from ledger.settings import Settings, load_settings

if TYPE_CHECKING:
    from ledger.application import Ledger

app = typer.Typer(
    name="mission-ledger",
    help=(
        "Mission Ledger: an event-sourced Mission Authority Server for AI agents.\n\n"
        "With no configuration it runs embedded: SQLite in ./.mission-ledger. Set "
        "MISSION_LEDGER_DATABASE_URL=postgresql://... to use PostgreSQL."
    ),
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys (shown once, stored hashed).")
audit_app = typer.Typer(
    help="Verify the hash-chained ledger, export evidence bundles and verify them offline; "
    "replay a Mission's past."
)
projections_app = typer.Typer(help="Rebuild the read models.")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")

CLI_ACTOR = Actor(type="cli", name="mission-ledger")
log = logging.getLogger("mission_ledger.cli")


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        typer.echo(f"error: invalid configuration: {error}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _open_store() -> Ledger:
    """The configured store's Ledger (migrated, or a message naming the pending migrations)."""
    from ledger.persistence.store import open_ledger  # noqa: PLC0415

    settings = _settings()
    try:
        return open_ledger(settings)
    except MigrationError as error:
        raise _fail(str(error)) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the service (default 127.0.0.1:8080, embedded SQLite).

    On the first start of an empty store it prints a bootstrap admin key, once; never
    again (with every admin key revoked, create one with `keys create --role admin`).
    """
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from api.app import create_app  # noqa: PLC0415

    settings = _settings(host=host, port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        _bootstrap_admin(settings)
    except (MigrationError, LedgerError) as error:
        raise _fail(str(error)) from None
    service = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            service,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=5,
        )
    )
    # Which decisions are alone (api/requests_in_progress.py): the server's request tasks.
    service.state.requests_in_progress.attach(server.server_state.tasks)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(code=3)  # as uvicorn.run: the server could not start


def _bootstrap_admin(settings: Settings) -> None:
    from ledger.persistence.store import open_ledger  # noqa: PLC0415
    from projections.key_directory import KeyDirectory  # noqa: PLC0415

    ledger = open_ledger(settings)
    try:
        issued = ledger.issue_bootstrap_key(actor=CLI_ACTOR)
        if issued is None:
            directory = KeyDirectory()
            directory.bootstrap(ledger)
            if not directory.has_role(Role.ADMIN.value):
                log.warning(
                    "No active admin API key, and none is minted on a store already in use. "
                    "To recover, create one on this store: "
                    "`mission-ledger keys create --role admin --name NAME`."
                )
            return
    finally:
        ledger.close()
    typer.echo(
        "\nThe store was empty, so an admin key was created. It is shown only this once:\n\n"
        f"    {issued.secret}\n\n"
        "Use it as `Authorization: Bearer <key>`, and create narrower keys with "
        "`mission-ledger keys create --role ROLE --name NAME`.\n",
        err=True,
    )


@app.command(name="migrate")
def migrate_command() -> None:
    """Apply pending migrations to the configured store (PostgreSQL or embedded SQLite)."""
    settings = _settings()
    try:
        applied = migrate(settings)
    except (MigrationError, OSError) as error:
        raise _fail(str(error)) from None
    except Exception as error:  # psycopg errors: connection refused, permissions, ...
        raise _fail(f"cannot migrate: {error}") from None
    if applied:
        typer.echo("applied: " + ", ".join(applied))
    else:
        typer.echo("schema is up to date")


@keys_app.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="The key's role.", case_sensitive=False)],
    name: Annotated[str, typer.Option(help="Unique name; for an agent key, its client_id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"name","role","key"} on one line.')
    ] = False,
) -> None:
    """Create an API key. The secret is printed once and stored only as a hash."""
    ledger = _open_store()
    try:
        issued = ledger.issue_api_key(name=name, role=role, actor=CLI_ACTOR)
    except LedgerError as error:
        raise _fail(error.detail) from None
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps({"name": name, "role": role.value, "key": issued.secret}))
    else:
        typer.echo(f"Created {role.value} key {name!r}. It is shown only this once:\n")
        typer.echo(f"    {issued.secret}\n")


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List active API keys (names and roles; secrets are never shown again)."""
    from projections.key_directory import KeyDirectory  # noqa: PLC0415

    ledger = _open_store()
    try:
        directory = KeyDirectory()
        directory.bootstrap(ledger)
    finally:
        ledger.close()
    entries = directory.entries()
    if as_json:
        typer.echo(json.dumps([{"name": e.name, "role": e.role} for e in entries]))
        return
    if not entries:
        typer.echo("no active keys")
    for entry in entries:
        typer.echo(f"{entry.name}\t{entry.role}")


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the ledger).")] = None,
) -> None:
    """Revoke an API key. Every server stops accepting it as soon as it reads the log."""
    ledger = _open_store()
    try:
        position = ledger.revoke_api_key(name=name, actor=CLI_ACTOR, reason=reason)
    except LedgerError as error:
        raise _fail(error.detail) from None
    finally:
        ledger.close()
    typer.echo(f"revoked {name!r}" if position else f"{name!r} was already revoked")


@keys_app.command("thumbprint")
def keys_thumbprint(
    key_file: Annotated[
        Path | None,
        typer.Argument(
            help="An agent's key: a JWK (JSON) or PEM file, public or private.",
            metavar="KEY_FILE",
            show_default=False,
        ),
    ] = None,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="Make a fresh EC P-256 private key (a JWK) and write it to --out."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="With --generate: the new key's file (created 0600, never overwritten)."),
    ] = None,
) -> None:
    """Print the RFC 7638 thumbprint of an agent's key: the value a Mandate request sends as
    cnf.jkt. Needs no store and no server."""
    from api.key_thumbprint import KeyFileError, thumbprint, write_private_jwk  # noqa: PLC0415

    if generate == (key_file is not None):
        raise typer.BadParameter("give either a KEY_FILE or --generate --out FILE")
    if generate != (out is not None):
        raise typer.BadParameter("--out goes with --generate (and --generate needs --out)")
    try:
        if out is not None:
            printed = write_private_jwk(out)
            typer.echo(f"wrote a new EC P-256 private key to {out}", err=True)
        else:
            assert key_file is not None
            printed = thumbprint(key_file.read_text(encoding="utf-8"))
    except FileExistsError:
        raise _fail(f"{out} exists: a key is never overwritten; choose another --out") from None
    except (OSError, UnicodeDecodeError, KeyFileError) as error:
        raise _fail(str(error)) from None
    typer.echo(printed)


@keys_app.command("rotate-signing")
def keys_rotate_signing(
    alg: Annotated[
        str, typer.Option(help="Algorithm of the new key: ES256, EdDSA or RS256.")
    ] = "ES256",
    activate_in: Annotated[
        int,
        typer.Option(
            help="Seconds until the new key signs. Until then it is only published in the "
            "JWKS, so verifiers that cache keys learn it first."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new key as JSON.")] = False,
) -> None:
    """Roll a new signing key. Retired public keys stay in /.well-known/jwks.json for the
    retention period (MISSION_LEDGER_SIGNING_KEY_RETENTION_DAYS), so tokens they signed
    stay verifiable."""
    from datetime import timedelta  # noqa: PLC0415

    from ledger.clock import SystemClock  # noqa: PLC0415
    from ledger.signing.keyring import rotate_signing_key  # noqa: PLC0415

    settings = _settings()
    if activate_in < 0:
        raise _fail("--activate-in must not be negative")
    try:
        info = rotate_signing_key(
            settings, alg=alg, activate_in=timedelta(seconds=activate_in), now=SystemClock().now()
        )
    except (MigrationError, ValueError, RuntimeError) as error:
        raise _fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(info.to_json()))
    else:
        typer.echo(f"new {info.alg} signing key {info.kid}, active from {info.activates_at}")


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="A witness directory of signed checkpoints (<position>.jwt): also fail, "
            "naming the file, when the store's chain no longer holds a checkpointed "
            "(position, hash), as after a truncated tail or a recomputed chain.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify the whole hash chain. Exit 0 when intact; otherwise exit 1 naming the first
    bad position (an event altered, removed, inserted or reordered) or, with --checkpoints,
    each checkpoint the store no longer matches."""
    from api.workers.checkpoints import read_witness_directory  # noqa: PLC0415
    from ledger.signing.store import open_store, public_key_set  # noqa: PLC0415

    settings = _settings()
    ledger = _open_store()
    try:
        witnessed = []
        if checkpoints is not None:
            stored_keys = open_store(settings, ledger.database).load()
            try:
                witnessed = read_witness_directory(
                    checkpoints, lambda kids: public_key_set(stored_keys, kids)
                )
            except (OSError, ValueError) as error:
                raise _fail(f"cannot read the checkpoints in {checkpoints}: {error}") from None
        report, anchor_failures = verify_chain_against(
            ledger.event_log.chain_rows(), [w.anchor for w in witnessed if w.anchor is not None]
        )
    finally:
        ledger.close()
    failures: list[tuple[str, int | None, str]] = [
        (str(w.path), None, w.problem) for w in witnessed if w.problem is not None
    ]
    failures += [(f.anchor.source, f.anchor.position, f.problem) for f in anchor_failures]
    if as_json:
        document: dict[str, object] = {
            "intact": report.intact,
            "checked": report.checked,
            "head_position": report.head_position,
            "head_hash": report.head_hash.hex(),
            "first_bad_position": report.first_bad,
            "problem": report.problem,
        }
        if checkpoints is not None:
            document["checkpoints"] = {
                "checked": len(witnessed),
                "failed": [
                    {"file": name, "position": position, "problem": problem}
                    for name, position, problem in failures
                ],
            }
        typer.echo(json.dumps(document))
    else:
        _print_verify_report(report, checkpoints, len(witnessed), failures)
    if not report.intact or failures:
        raise typer.Exit(1)


def _print_verify_report(
    report: ChainReport,
    checkpoints: Path | None,
    witnessed: int,
    failures: list[tuple[str, int | None, str]],
) -> None:
    if report.intact:
        typer.echo(
            f"intact: {report.checked} events verified, head position {report.head_position}, "
            f"head hash {report.head_hash.hex()}"
        )
    else:
        typer.echo(
            f"BROKEN at position {report.first_bad}: {report.problem} "
            f"({report.checked} events verified before it)",
            err=True,
        )
    if checkpoints is None:
        return
    for name, _, problem in failures:
        typer.echo(f"CHECKPOINT FAILED {name}: {problem}", err=True)
    if not witnessed:
        typer.echo(f"warning: no checkpoint files (*.jwt) in {checkpoints}", err=True)
    elif not failures:
        typer.echo(f"checkpoints: all {witnessed} in {checkpoints} match the store's chain")


@audit_app.command("export")
def audit_export(
    out: Annotated[
        Path, typer.Option("--out", help="The bundle file to write (a .tar; not overwritten).")
    ],
    mission: Annotated[
        str | None, typer.Option("--mission", help="Export this Mission's evidence.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Export the events recorded from this instant (RFC 3339)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="... up to (not including) this instant.")
    ] = None,
) -> None:
    """Write an evidence bundle (docs/evidence.md) of one Mission (--mission) or of a time
    range (--from and --to): events with their chain links, Mandate tokens, SETs,
    checkpoints, decision records, the keys that signed them and a signed manifest."""
    from api.evidence import EvidenceExporter, ExportScope, decision_log_records  # noqa: PLC0415
    from ledger.signing.keyring import Keyring  # noqa: PLC0415
    from projections.decision_log import DecisionLog  # noqa: PLC0415

    if out.exists():
        raise _fail(f"{out} exists: a bundle is never overwritten; choose another --out")
    try:
        scope = ExportScope(
            mission_id=mission,
            start=None if start is None else parse_instant(start, "--from"),
            end=None if end is None else parse_instant(end, "--to"),
        )
    except LedgerError as error:
        raise _fail(error.detail, code=2) from None
    settings = _settings()
    ledger = _open_store()
    partial = out.with_name(f".{out.name}.partial")
    try:
        keyring = Keyring.open(settings, ledger.database)
        keyring.ensure(settings.signing_alg, ledger.clock.now())
        ledger.mandate_alg = settings.signing_alg
        exporter = EvidenceExporter(
            ledger,
            keyring,
            issuer=settings.public_issuer,
            alg=settings.signing_alg,
            decisions=decision_log_records(DecisionLog(ledger.database)),
        )
        with partial.open("xb") as handle:
            manifest = exporter.export(scope, handle)
        partial.replace(out)
    except LedgerError as error:
        raise _fail(error.detail) from None
    except (OSError, RuntimeError, ValueError) as error:
        raise _fail(f"cannot export: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
        ledger.close()
    covered = manifest["range"]
    typer.echo(
        f"wrote {out}: {covered['events']} events (positions {covered['first_position']} to "
        f"{covered['last_position']}), manifest signed {manifest['created_at']}"
    )


@audit_app.command("verify-bundle")
def audit_verify_bundle(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle (.tar).", dir_okay=False)],
    trusted_jwks: Annotated[
        Path | None,
        typer.Option(
            "--trusted-jwks",
            help="A JWK Set you trust (e.g. the ledger's /.well-known/jwks.json, kept with "
            "retired keys): fail unless every key in the bundle is one of them.",
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check an evidence bundle offline (no database, no settings, no network): the
    manifest's signature against the bundled keys, every file's digest, the hash chain's
    continuity over the exported events, and every checkpoint, Mandate and SET signature.
    Exit 0 when it verifies, 1 naming every problem found."""
    from ledger.evidence.bundle import (  # noqa: PLC0415
        CHECKPOINTS,
        DECISIONS,
        EVENTS,
        MANDATES,
        SETS,
    )
    from ledger.evidence.verify import verify_bundle  # noqa: PLC0415

    trusted = None
    if trusted_jwks is not None:
        try:
            trusted = json.loads(trusted_jwks.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise _fail(f"cannot read --trusted-jwks {trusted_jwks}: {error}", code=2) from None
    report = verify_bundle(bundle, trusted=trusted)
    manifest = report.manifest or {}
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "verified": report.ok,
                    "problems": report.problems,
                    "signer": report.signer,
                    "issuer": manifest.get("issuer"),
                    "created_at": manifest.get("created_at"),
                    "range": manifest.get("range"),
                    "lines": report.counts,
                }
            )
        )
    elif report.ok:
        covered = manifest["range"]
        what = (
            f"Mission {covered['mission']}"
            if covered["kind"] == "mission"
            else f"events recorded from {covered['from']} to {covered['to']}"
        )
        counts = ", ".join(
            f"{report.counts.get(name, 0)} {what}"
            for name, what in (
                (MANDATES, "Mandate tokens"),
                (SETS, "SETs"),
                (CHECKPOINTS, "checkpoints"),
                (DECISIONS, "decision records"),
            )
        )
        typer.echo(
            f"verified: {bundle}: {what}, {report.counts.get(EVENTS, 0)} events (positions "
            f"{covered['first_position']} to {covered['last_position']}); {counts}; manifest "
            f"signed by {manifest['issuer']} with key {report.signer} at {manifest['created_at']}"
        )
    else:
        typer.echo(f"FAILED: {bundle} does not verify:", err=True)
        for problem in report.problems:
            typer.echo(f"  {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("replay")
def audit_replay(
    mission: Annotated[str, typer.Option("--mission", help="The Mission's id (msn_...).")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="An RFC 3339 instant with its offset, e.g. 2026-11-28T12:30:00Z "
            "(default: now; never in the future).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print {mission, mandates, events}: the Mission and Mandate resources as "
            "GET /v1/missions/{id}?as_of= and GET /v1/mandates/{id}?as_of= answer them.",
        ),
    ] = False,
) -> None:
    """The Mission at an instant: its state, Effective Authority Set, Mandates and usage,
    with the events that led there, rebuilt from the stored events (no server needed). A
    progress bar shows on a terminal while a long log is read."""
    from api.replay import replay_mission  # noqa: PLC0415
    from ledger.clock import SystemClock  # noqa: PLC0415

    now = SystemClock().now()
    try:
        instant = now if as_of is None else parse_as_of(as_of, now)
    except InvalidRequest as error:
        raise typer.BadParameter(error.errors[0].message, param_hint="--as-of") from None
    ledger = _open_store()
    try:
        with _progress_bar(f"Replaying {mission}") as progress:
            replay = replay_mission(ledger, mission, instant, progress=progress)
    except NotFound as error:
        raise _fail(error.detail) from None
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps(replay))
    else:
        typer.echo("\n".join(_replay_lines(replay, instant)))


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, only when stderr is a terminal (never in pipes or logs);
    it disappears when done."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("Mandates"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _replay_lines(replay: dict[str, Any], instant: datetime) -> list[str]:
    """The replay for a person: the Mission, its authority and usage, its Mandates, and the
    events in log order."""
    mission = replay["mission"]
    subject = mission.get("subject", {})
    lines = [
        f"Mission {mission['id']} as of {format_instant(instant)}",
        f"  state       {mission['state']} (version {mission['version']})",
        f"  agent       {mission.get('client_id')}",
        f"  subject     {subject.get('sub')} ({subject.get('iss')}, "
        f"{mission.get('subject_provenance')})",
        f"  expires_at  {mission.get('expires_at')}",
        "Effective Authority Set:",
    ]
    effective = mission.get("effective_authorization_details") or []
    rendered = describe_authority(parse_authority_set(effective)) if effective else []
    lines += [f"  - {line}" for line in rendered] or ["  (none)"]
    usage = mission.get("usage")
    if usage is None:
        lines.append("Usage: none recorded (the Mission has no meter)")
    else:
        lines.append("Usage: " + ", ".join(f"{k} {v}" for k, v in usage.items()))
    lines.append(f"Mandates ({len(replay['mandates'])}):")
    for mandate in replay["mandates"]:
        holder = mandate["actor"]
        reason = mandate.get("inactive_reason")
        lines.append(
            f"  {mandate['mandate_id']}  {mandate['state']}"
            + (f" ({reason})" if reason else "")
            + f"  held by {holder.get('client_id')}/{holder.get('instance_id')}"
            f"  depth {mandate['depth']}  version {mandate['version']}"
            f"  expires {mandate['expires_at']}"
        )
    lines.append(f"Events ({len(replay['events'])}):")
    for event in replay["events"]:
        data = event.get("data", {})
        actor = data.get("actor") or {}
        reason = data.get("reason")
        lines.append(
            f"  {event['position']:>8}  {event['recorded_at']}  "
            f"{event['topic'].removeprefix(TOPIC_PREFIX)} v{event['version']}"
            + (f"  by {actor.get('name')}" if actor else "")
            + (f"  ({reason})" if reason else "")
        )
    return lines


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str,
        typer.Argument(
            help="proposal_board, mission_board, mandate_register or signal_log "
            "(the SET log keeps push progress; poll acknowledgements are lost)."
        ),
    ],
) -> None:
    """Rebuild one read model from position 0, in one transaction (safe while servers
    run: they wait for it, then carry on from where it ends)."""
    from api.read_models import read_models  # noqa: PLC0415
    from ledger.persistence.store import open_ledger  # noqa: PLC0415
    from ledger.signing.keyring import Keyring  # noqa: PLC0415
    from projections.follower import LogFollower  # noqa: PLC0415

    settings = _settings()
    ledger = open_ledger(settings)
    try:
        keyring = Keyring.open(settings, ledger.database)
        models = read_models(ledger, keyring, settings.public_issuer)
        if name not in models.names:
            raise _fail(f"no read model named {name!r}; choose one of {', '.join(models.names)}")
        position = LogFollower(ledger, durable=models.durable).rebuild(name)
    finally:
        ledger.close()
    typer.echo(f"rebuilt {name} up to position {position}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
