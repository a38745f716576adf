"""The ``mission-ledger`` command line against a running app on the same store (SPEC 5 and
6.11): keys created, listed and revoked by the CLI take effect in the running server;
``migrate`` applies the numbered migrations once; ``audit verify`` exits 0 on an intact store.

The CLI runs in-process (``CliRunner``) with its own ``open_ledger`` on the store named by
``MISSION_LEDGER_DATA_DIR`` / ``MISSION_LEDGER_DATABASE_URL``, as another process would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from ledger.persistence.database import Dialect
from ledger.persistence.migrations import load_migrations
from ledger.settings import Settings
from tests.api.conftest import Api, assert_problem, with_kek
from tests.conftest import MutableClock

pytestmark = pytest.mark.postgres_smoke  # the CLI writes through a connection of its own


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI on the store of given settings (environment only, as in production)."""

    def invoke(settings: Settings, *args: str) -> Result:
        monkeypatch.delenv("MISSION_LEDGER_CONFIG", raising=False)
        if settings.embedded:
            monkeypatch.delenv("MISSION_LEDGER_DATABASE_URL", raising=False)
            monkeypatch.setenv("MISSION_LEDGER_DATA_DIR", str(settings.data_dir))
        else:
            assert settings.database_url is not None
            monkeypatch.setenv("MISSION_LEDGER_DATABASE_URL", settings.database_url)
        return CliRunner().invoke(cli, list(args))

    return invoke


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _create(run: Any, settings: Settings, role: str, name: str) -> str:
    result = run(settings, "keys", "create", "--role", role, "--name", name, "--json")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["key"])


# ---------------------------------------------------------------------- keys create


def test_keys_create_json_prints_name_role_and_key_on_one_line(api: Api, run: Any) -> None:
    result = run(api.settings, "keys", "create", "--role", "agent", "--name", "x", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"name", "role", "key"}
    assert created["name"] == "x"
    assert created["role"] == "agent"
    assert created["key"].startswith("mlk_")


def test_a_key_created_by_the_cli_works_against_the_running_app(api: Api, run: Any) -> None:
    key = _create(run, api.settings, "agent", "x")
    response = api.client.post(
        "/v1/proposals", json=api.proposal_body() | {"client_id": "x"}, headers=_bearer(key)
    )
    assert response.status_code == 202, response.text
    assert response.json()["client_id"] == "x"


def test_a_cli_agent_key_is_bound_to_its_name_as_client_id(api: Api, run: Any) -> None:
    key = _create(run, api.settings, "agent", "x")
    response = api.client.post("/v1/proposals", json=api.proposal_body(), headers=_bearer(key))
    assert_problem(response, 403, "forbidden")


def test_a_cli_key_carries_its_role(api: Api, run: Any) -> None:
    key = _create(run, api.settings, "auditor", "audit-cli")
    assert api.client.get("/v1/missions", headers=_bearer(key)).status_code == 200
    refused = api.client.post("/v1/proposals", json=api.proposal_body(), headers=_bearer(key))
    assert_problem(refused, 403, "forbidden")


def test_keys_create_refuses_a_name_in_use(api: Api, run: Any) -> None:
    result = run(api.settings, "keys", "create", "--role", "operator", "--name", "agent-1")
    assert result.exit_code != 0
    assert "already exists" in result.output
    assert api.client.get("/v1/proposals", headers=api.auth("agent")).status_code == 200


def test_keys_create_refuses_an_unknown_role(api: Api, run: Any) -> None:
    result = run(api.settings, "keys", "create", "--role", "root", "--name", "y")
    assert result.exit_code == 2


def test_keys_create_works_before_the_first_start(
    store_settings: Settings, clock: MutableClock, run: Any
) -> None:
    settings = with_kek(store_settings)
    key = _create(run, settings, "operator", "ops-early")
    with TestClient(create_app(settings, clock=clock)) as client:
        assert client.get("/v1/missions", headers=_bearer(key)).status_code == 200


# ---------------------------------------------------------------------- keys list / revoke


def test_keys_list_names_every_active_key_without_secrets(api: Api, run: Any) -> None:
    _create(run, api.settings, "pep", "gateway")
    result = run(api.settings, "keys", "list")
    assert result.exit_code == 0, result.output
    rows = dict(line.split("\t") for line in result.stdout.splitlines())
    assert rows["gateway"] == "pep"
    assert rows["agent-1"] == "agent"
    assert rows["admin-1"] == "admin"
    assert not any(secret.partition(".")[2] in result.stdout for secret in api.keys.values())


def test_keys_list_json_is_one_array(api: Api, run: Any) -> None:
    result = run(api.settings, "keys", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {"name": "pep-1", "role": "pep"} in listed


def test_keys_revoke_makes_the_key_answer_401_promptly(api: Api, run: Any) -> None:
    key = _create(run, api.settings, "auditor", "audit-cli")
    assert api.client.get("/v1/missions", headers=_bearer(key)).status_code == 200
    result = run(api.settings, "keys", "revoke", "audit-cli", "--reason", "rotated")
    assert result.exit_code == 0, result.output
    assert "revoked" in result.stdout
    deadline = time.monotonic() + 3.0
    status = 200
    while time.monotonic() < deadline:
        status = api.client.get("/v1/missions", headers=_bearer(key)).status_code
        if status == 401:
            break
        time.sleep(0.05)
    assert status == 401
    listed = run(api.settings, "keys", "list").stdout
    assert "audit-cli" not in listed


def test_keys_revoke_of_an_unknown_name_fails(api: Api, run: Any) -> None:
    result = run(api.settings, "keys", "revoke", "nobody")
    assert result.exit_code != 0


def test_revoking_a_revoked_key_says_so(api: Api, run: Any) -> None:
    _create(run, api.settings, "pep", "gateway")
    assert run(api.settings, "keys", "revoke", "gateway").exit_code == 0
    again = run(api.settings, "keys", "revoke", "gateway")
    assert again.exit_code == 0
    assert "already revoked" in again.stdout


# ---------------------------------------------------------------------- migrate


@pytest.mark.postgres
def test_migrate_applies_every_migration_to_an_empty_database_once(
    empty_postgres_url: str, run: Any
) -> None:
    settings = Settings(database_url=empty_postgres_url)
    expected = [m.name for m in load_migrations(Dialect.POSTGRES)]
    assert expected[0].startswith("0001")
    first = run(settings, "migrate")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "applied: " + ", ".join(expected)
    second = run(settings, "migrate")
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == "schema is up to date"


@pytest.mark.postgres
def test_a_migrated_database_serves(empty_postgres_url: str, run: Any, clock: MutableClock) -> None:
    settings = with_kek(Settings(database_url=empty_postgres_url))
    assert run(settings, "migrate").exit_code == 0
    key = _create(run, settings, "auditor", "auditor-1")
    with TestClient(create_app(settings, clock=clock)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/missions", headers=_bearer(key)).status_code == 200


# ---------------------------------------------------------------------- audit verify


def test_audit_verify_exits_0_on_an_intact_store(api: Api, run: Any) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "suspend")
    api.lifecycle(mission["id"], "revoke")
    result = run(api.settings, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("intact: ")


def test_audit_verify_json_reports_the_head(api: Api, run: Any) -> None:
    api.mission()
    result = run(api.settings, "audit", "verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["intact"] is True
    assert report["first_bad_position"] is None
    assert report["head_position"] == api.head()


def test_the_settings_are_read_from_the_environment(tmp_path: Path, run: Any) -> None:
    settings = Settings(data_dir=tmp_path / "elsewhere")
    _create(run, settings, "admin", "root")
    assert (tmp_path / "elsewhere" / "ledger.sqlite3").exists()


def test_keys_create_refuses_a_malformed_name(api: Api, run: Any) -> None:
    head = api.head()
    result = run(api.settings, "keys", "create", "--role", "agent", "--name", "bad name")
    assert result.exit_code != 0
    assert "key name" in result.output
    assert api.head() == head


# ---------------------------------------------------------------------- keys thumbprint

# RFC 7638 section 3.1: this RSA key's thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
    "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
    "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _thumbprint(*args: str) -> Result:
    return CliRunner().invoke(cli, ["keys", "thumbprint", *args])


def _ec_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 by hand: SHA-256 of the required members, sorted, no whitespace."""
    members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(members.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_keys_thumbprint_of_a_jwk_is_its_rfc7638_thumbprint(tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(RFC7638_KEY))
    result = _thumbprint(str(key_file))
    assert result.exit_code == 0, result.output
    assert result.stdout == RFC7638_THUMBPRINT + "\n"


def test_keys_thumbprint_generate_writes_a_private_p256_jwk_and_prints_its_thumbprint(
    tmp_path: Path,
) -> None:
    out = tmp_path / "agent-key.json"
    result = _thumbprint("--generate", "--out", str(out))
    assert result.exit_code == 0, result.output
    jwk = json.loads(out.read_text())
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    assert jwk["d"]
    assert result.stdout == _ec_thumbprint(jwk) + "\n"


def test_keys_thumbprint_generate_creates_the_key_file_private(tmp_path: Path) -> None:
    out = tmp_path / "agent-key.json"
    assert _thumbprint("--generate", "--out", str(out)).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600


def test_keys_thumbprint_generate_never_overwrites_a_file(tmp_path: Path) -> None:
    out = tmp_path / "agent-key.json"
    out.write_text("a key in use")
    result = _thumbprint("--generate", "--out", str(out))
    assert result.exit_code == 1
    assert "exists" in result.stderr
    assert out.read_text() == "a key in use"


def test_keys_thumbprint_of_a_pem_key_is_that_of_the_same_jwk(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    numbers = private.public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).decode().rstrip("=")

    jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y)}
    result = _thumbprint(str(pem))
    assert result.exit_code == 0, result.output
    assert result.stdout == _ec_thumbprint(jwk) + "\n"


def test_keys_thumbprint_of_a_private_key_is_that_of_its_public_key(tmp_path: Path) -> None:
    out = tmp_path / "agent-key.json"
    generated = _thumbprint("--generate", "--out", str(out)).stdout
    jwk = json.loads(out.read_text())
    public = tmp_path / "public.json"
    public.write_text(json.dumps({k: v for k, v in jwk.items() if k != "d"}))
    assert _thumbprint(str(out)).stdout == generated
    assert _thumbprint(str(public)).stdout == generated


def test_keys_thumbprint_refuses_a_symmetric_key(tmp_path: Path) -> None:
    key_file = tmp_path / "oct.json"
    key_file.write_text(json.dumps({"kty": "oct", "k": "c2VjcmV0"}))
    result = _thumbprint(str(key_file))
    assert result.exit_code == 1
    assert "symmetric" in result.stderr
    assert result.stdout == ""


def test_keys_thumbprint_refuses_text_that_is_not_a_key(tmp_path: Path) -> None:
    key_file = tmp_path / "notes.txt"
    key_file.write_text("not a key")
    result = _thumbprint(str(key_file))
    assert result.exit_code == 1
    assert "JWK" in result.stderr
    assert result.stdout == ""


def test_keys_thumbprint_needs_either_a_key_file_or_generate(tmp_path: Path) -> None:
    assert _thumbprint().exit_code == 2
    assert _thumbprint("--generate").exit_code == 2
    assert _thumbprint(str(tmp_path / "k.json"), "--generate", "--out", "x").exit_code == 2


# ---------------------------------------------------------------------- help texts

#: ``mission-ledger`` followed by words, as a command line in prose (not ``./.mission-ledger``).
_MENTION = re.compile(r"(?<![\w./-])mission-ledger((?: [a-z][a-z-]*)+)")
#: The verbs a group's help opens with: "Create, list and revoke ...", "Verify the ...".
_OPENING_VERBS = re.compile(r"^([A-Z][a-z-]+(?:, [a-z-]+)*(?: and [a-z-]+)?)\b")


def _command_tree() -> dict[tuple[str, ...], Any]:
    """Every registered command and group by its path (the root is ``()``)."""
    found: dict[tuple[str, ...], Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found[path] = command
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))

    walk(get_command(cli), ())
    return found


def _help_output(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def _named_command(words: list[str], tree: dict[tuple[str, ...], Any]) -> bool:
    """Whether ``mission-ledger <words...>`` names a registered command: each word after a
    group must be one of its subcommands; after a command come its arguments."""
    path: tuple[str, ...] = ()
    for word in words:
        if path and not isinstance(tree[path], TyperGroup):
            return True
        if (*path, word) not in tree:
            return False
        path = (*path, word)
    return True


def test_every_command_named_in_the_help_texts_exists() -> None:
    tree = _command_tree()
    mentioned = [
        match.group(1).split()
        for path in tree
        for text in (_help_output(path), tree[path].help or "")
        for match in _MENTION.finditer(" ".join(text.split()))
    ]
    assert mentioned, "the usage lines name mission-ledger commands"
    unknown = [" ".join(words) for words in mentioned if not _named_command(words, tree)]
    assert unknown == []


@pytest.mark.parametrize(
    "group",
    sorted(
        path[0]
        for path, command in _command_tree().items()
        if len(path) == 1 and isinstance(command, TyperGroup)
    ),
)
def test_a_command_group_help_opens_with_verbs_that_are_its_commands(group: str) -> None:
    tree = _command_tree()
    summary = _help_output((group,)).split("COMMAND [ARGS]... ", 1)[1]
    opening = _OPENING_VERBS.match(summary)
    assert opening is not None, summary
    verbs = re.split(r", | and ", opening.group(1).lower())
    assert [verb for verb in verbs if (group, verb) not in tree] == []


# ---------------------------------------------------------------------- serve: the bootstrap key


@pytest.fixture
def serve(run: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``mission-ledger serve`` up to the point where the server would start listening."""
    monkeypatch.setattr(
        "uvicorn.Server.run", lambda self, sockets=None: setattr(self, "started", True)
    )

    def start(settings: Settings) -> Result:
        result = run(settings, "serve")
        assert result.exit_code == 0, result.output
        return result

    return start


def _active_keys(run: Any, settings: Settings) -> list[dict[str, str]]:
    result = run(settings, "keys", "list", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_the_first_start_of_an_empty_store_prints_one_admin_key(
    store_settings: Settings, serve: Any, run: Any
) -> None:
    result = serve(store_settings)
    assert result.output.count("mlk_") == 1
    assert _active_keys(run, store_settings) == [{"name": "admin", "role": "admin"}]


def test_a_restart_with_every_admin_key_revoked_mints_no_key(
    store_settings: Settings, serve: Any, run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    serve(store_settings)
    assert run(store_settings, "keys", "revoke", "admin").exit_code == 0
    restarted = serve(store_settings)
    assert "mlk_" not in restarted.output
    assert "mlk_" not in caplog.text
    assert _active_keys(run, store_settings) == []
    assert "keys create --role admin" in caplog.text


def test_a_store_already_in_use_gets_no_bootstrap_key(
    store_settings: Settings, serve: Any, run: Any
) -> None:
    _create(run, store_settings, "operator", "ops")
    result = serve(store_settings)
    assert "mlk_" not in result.output
    assert _active_keys(run, store_settings) == [{"name": "ops", "role": "operator"}]


def test_keys_create_role_admin_recovers_a_store_without_admin_keys(
    store_settings: Settings, serve: Any, run: Any, clock: MutableClock
) -> None:
    serve(store_settings)
    assert run(store_settings, "keys", "revoke", "admin").exit_code == 0
    key = _create(run, store_settings, "admin", "rescue")
    with TestClient(create_app(with_kek(store_settings), clock=clock)) as client:
        assert client.get("/v1/missions", headers=_bearer(key)).status_code == 200
