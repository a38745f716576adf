"""One settings object for the whole service.

Values come from (highest precedence first) explicit keyword arguments, the
environment (``MISSION_LEDGER_*``), a TOML file named by ``MISSION_LEDGER_CONFIG``
(or passed explicitly), then the defaults below. With nothing configured the
service runs embedded: SQLite in ``./.mission-ledger``.

OAuth: with ``oauth_issuer`` set, bearer JWTs of that issuer are accepted beside API keys,
verified against ``oauth_jwks_uri``. Their ``aud`` must be ``oauth_audience``; a server
with an issuer and no audience refuses to start (it would accept tokens the issuer minted
for any other service) unless ``oauth_allow_any_audience`` is true
(``MISSION_LEDGER_OAUTH_ALLOW_ANY_AUDIENCE=true``), for an issuer that mints tokens for
this service alone. Scopes grant roles through ``oauth_role_scopes``: by default
``ssf.manage`` grants ``pep`` and ``ssf.read`` the ``receiver`` role (read streams and
receive their SETs, nothing else).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ledger.writer_priority import SERVER_PRIORITY, WriterPriority

DEFAULT_ROLE_SCOPES = {
    "mission_ledger.agent": "agent",
    "mission_ledger.approver": "approver",
    "mission_ledger.operator": "operator",
    "mission_ledger.pep": "pep",
    "mission_ledger.auditor": "auditor",
    "mission_ledger.admin": "admin",
    "ssf.manage": "pep",
    "ssf.read": "receiver",
}


class Settings(BaseSettings):
    """Configuration of one Mission Ledger process."""

    model_config = SettingsConfigDict(env_prefix="MISSION_LEDGER_", extra="forbid")

    data_dir: Path = Field(
        default=Path(".mission-ledger"),
        description="Directory of the embedded mode: the SQLite file and the local key store.",
    )
    database_url: str | None = Field(
        default=None,
        description="postgresql://user:password@host:port/dbname switches to PostgreSQL.",
    )
    issuer: str | None = Field(
        default=None, description="Public issuer URL; defaults to http://<host>:<port>."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    proposal_ttl_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    mission_max_stale_seconds: int = Field(default=60, ge=1, le=3_600)
    require_proof: bool = Field(
        default=True,
        description="Decisions on a Mandate need proof that the caller holds its key "
        "(context.proof.jkt or a DPoP proof at context.proof.dpop); false only for "
        "development. Bare Mandate ids and join mode need a proof either way.",
    )
    proof_verifier: Literal["auto", "process", "inline"] = Field(
        default="auto",
        description="auto: the signatures of DPoP proofs are checked by a process of its "
        "own while the server decides, but by the server itself when the decision is the "
        "only request in progress (decision 0023); process: always by that process when it "
        "runs (the server checks any it cannot); inline: by the server itself, before it "
        "decides.",
    )
    dpop_replay_cache_size: int = Field(
        default=200_000,
        ge=1,
        le=10_000_000,
        description="DPoP proofs (their jti) each replica remembers for the 120 s replay "
        "window; when all are still inside it, further proofs are refused (key_mismatch) "
        "rather than any forgotten. Size it above 120 x the replica's DPoP decisions a "
        "second (about 100 bytes each).",
    )
    access_request_denial_ttl_seconds: int = Field(
        default=600,
        ge=10,
        le=86_400,
        description="How long a requestable denial may be turned into an access request "
        "(its context.access_request.expires_at after evaluated_at).",
    )
    access_request_task_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        le=30 * 86_400,
        description="How long an access request stays pending before it expires.",
    )
    access_requests_per_minute: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Access requests one caller may submit per minute (then 429 with "
        "Retry-After): agents must not be able to flood approvers.",
    )
    access_request_callback_allow_private: bool = Field(
        default=False,
        description="Accept access-request callbacks to hosts that resolve to private, "
        "loopback or link-local addresses (tests, private networks); https is required "
        "either way.",
    )
    access_request_callback_ca_file: Path | None = Field(
        default=None,
        description="PEM file of certificate authorities trusted for access-request "
        "callbacks besides the public roots (a private CA, a test certificate).",
    )
    reservation_ttl_seconds: int = Field(
        default=300,
        ge=1,
        le=86_400,
        description="How long a metered permit's reservation waits for its usage report "
        "(POST /v1/usage) before it is released (SPEC 7.3).",
    )
    metering_lease_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Lifetime of a replica's budget lease on a metered Mission (decision "
        "0019): metered permits are reserved from the lease in memory and recorded in the "
        "background. 0 turns leases off (a durable reservation before every metered permit).",
    )
    meter_writer: Literal["process", "thread"] = Field(
        default="process",
        description="process: the Meter writer's groups are applied and saved by a process of "
        "its own (the server keeps the queue and the leases metered permits draw from; "
        "decision 0019, 'A writer process'); thread: by the writer thread of the server's "
        "process, sharing its interpreter lock with the decision path (tests that drive the "
        "clock, and platforms that cannot start processes).",
    )
    writer_process_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below the server's scheduling priority its background writer "
        "processes run: the Meter writer's (unless metering_lease_seconds is 0) and the "
        "decision log writer's (unless decision_log_mode is sync); with those settings "
        "answers wait for the writer, which then keeps the server's priority. Where a "
        "writer shares a core with the server's event loop, the decision path goes first "
        "(Unix nice; bench/README.md '2026-12-06, afternoon'). 0: the server's priority.",
    )
    writer_process_idle: bool = Field(
        default=True,
        description="Run the background writer processes (the Meter writer's unless "
        "metering_lease_seconds is 0, the decision log writer's unless decision_log_mode is "
        "sync) under the Linux SCHED_IDLE policy, whatever writer_process_nice says: a CPU "
        "running only them counts as idle, so the server's event loop and its clients are "
        "placed there and preempt them at once. A writer that other work keeps off the CPU "
        "while it is behind is replaced by one under nice alone, for the rest of the run "
        "(decision 0025). Ignored where the policy does not exist.",
    )
    read_your_writes_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    idempotency_retention_hours: int = Field(default=24, ge=24, le=24 * 90)
    policy_version: str = "mission-ledger/1"
    scheduler_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    gc_freeze: bool = Field(
        default=True,
        description="Freeze long-lived objects every scheduler tick so that full garbage "
        "collections stay short (see api/gc_policy.py).",
    )
    gc_full_collection_minutes: float = Field(
        default=60.0,
        gt=0,
        le=24 * 60,
        description="With gc_freeze: how often everything is unfrozen and collected once.",
    )
    gc_young_threshold: int = Field(
        default=50_000,
        ge=700,
        le=1_000_000,
        description="With gc_freeze: allocations between two collections of the youngest "
        "generation (CPython's default is 700; see api/gc_policy.py).",
    )

    db_pool_size: int = Field(default=4, ge=1, le=64)
    db_max_overflow: int = Field(default=8, ge=0, le=128)
    db_lock_timeout_seconds: int = Field(default=5, ge=1, le=120)
    auto_migrate: bool = Field(
        default=False,
        description="Apply pending PostgreSQL migrations when the server starts "
        "(the embedded SQLite store always migrates itself).",
    )

    oauth_issuer: str | None = Field(default=None, description="Issuer of JWT access tokens.")
    oauth_jwks_uri: str | None = Field(default=None, description="JWKS URL of that issuer.")
    oauth_audience: str | None = Field(default=None, description="Required `aud` of tokens.")
    oauth_allow_any_audience: bool = Field(
        default=False,
        description="Accept tokens of oauth_issuer whatever their `aud` when no "
        "oauth_audience is set (without this, that configuration refuses to start).",
    )
    oauth_role_scopes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROLE_SCOPES))
    oauth_client_id_claim: str = "client_id"

    subject_issuers: list[str] = Field(
        default_factory=list,
        description="Issuers trusted for proposal subject_tokens (OIDC ID tokens, ID-JAGs); "
        "each one's keys are found through its /.well-known/openid-configuration.",
    )
    subject_audiences: list[str] = Field(
        default_factory=list,
        description="Accepted `aud` of subject_tokens besides the ledger's public issuer URL "
        "(for example the ledger's client id at the identity provider).",
    )
    require_subject_assertion: bool = Field(
        default=False,
        description="Refuse proposals without a verified subject_token (recommended in "
        "production).",
    )

    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Base64url 32-byte key that encrypts signing keys at rest. Embedded mode "
        "generates one in the data directory when unset.",
    )
    signing_alg: Literal["ES256", "EdDSA"] = "ES256"
    signing_key_retention_days: int = Field(default=400, ge=1)

    set_retention_days: int = Field(
        default=7, ge=1, le=365, description="How long SETs stay in the per-stream log."
    )
    sse_heartbeat_seconds: int = Field(
        default=15, ge=1, le=60, description="Idle SSE streams get a comment this often."
    )
    signal_wait_ms: int = Field(
        default=250,
        ge=0,
        le=5_000,
        description="A governance write that causes SETs (revoke, suspend, narrow, contain, "
        "discharge) answers once this process's SSE subscribers have been sent them, waiting "
        "at most this long (0: answer without waiting; no subscriber here: no wait).",
    )
    sse_credential_recheck_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="An open SSE stream re-checks the API key that opened it this often "
        "(and ends once it is revoked; a JWT's stream ends at its exp).",
    )
    allow_http_loopback_push: bool = Field(
        default=False,
        description="Accept http:// push endpoints on loopback hosts (local development, tests).",
    )

    checkpoint_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="How often one replica signs a checkpoint of the hash chain's head "
        "(and once more at shutdown); none is made while the log has not moved.",
    )
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Witness directory outside the database: each checkpoint is written "
        "there as <position>.jwt (a compact JWS). Shared by the replicas (or use the URL).",
    )
    checkpoint_witness_url: str | None = Field(
        default=None,
        description="Optional HTTP witness: each checkpoint is POSTed there as "
        "application/jwt (failures are logged and counted, never retried or waited for).",
    )
    decision_log_mode: Literal["async", "sync", "off"] = Field(
        default="async",
        description="async: decisions are answered at once and their records written in "
        "batches within decision_log_flush_ms (a crash loses at most that window); sync: "
        "each answer waits until its record is committed; off: nothing is recorded "
        "(benchmark baselines and development only).",
    )
    decision_log_writer: Literal["process", "thread"] = Field(
        default="process",
        description="process: records are built and written by a writer process of their own "
        "(the decision path only encodes them; decision 0017, 'A writer process'); thread: by a "
        "thread of the server's process, sharing its interpreter lock (tests, and platforms "
        "that cannot start processes).",
    )
    decision_log_flush_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="A decision's record is committed within this many milliseconds; while "
        "the writer is further behind, answers wait for it.",
    )
    decision_log_queue_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Records of decisions waiting to be written, at most; beyond this, "
        "answers wait for the writer.",
    )
    decision_log_retention_days: int = Field(
        default=400,
        ge=1,
        le=36_500,
        description="Decision records are kept this long (PostgreSQL: whole days, by partition).",
    )

    json_max_depth: int = Field(
        default=64,
        ge=2,
        le=512,
        description="How deep arrays and objects may nest in a JSON request body; a deeper "
        "body is refused with 400 before any route reads it.",
    )

    console_oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Provider people sign in to the console with (authorization code "
        "and PKCE; its metadata at /.well-known/openid-configuration).",
    )
    console_oidc_client_id: str | None = Field(
        default=None, description="The console's client id at console_oidc_issuer."
    )
    console_oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="The console's client secret (client_secret_basic); unset for a public "
        "client (PKCE alone).",
    )
    console_oidc_roles_claim: str = Field(
        default="roles",
        description="ID token claim (a string or an array of strings) whose values map to "
        "roles through oauth_role_scopes, as the scopes of API access tokens do.",
    )
    console_oidc_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"],
        description="Scopes the console asks for (openid is always asked).",
    )
    console_api_key_signin: bool | None = Field(
        default=None,
        description="Whether people may sign in to the console with an API key (exchanged for "
        "a server-side session). Default: only when no console_oidc_issuer is configured.",
    )
    console_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="A console session ends after this idle time."
    )
    console_session_hours: int = Field(
        default=12, ge=1, le=7 * 24, description="A console session ends this long after sign-in."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in {"postgresql", "postgres"}:
            msg = "database_url must be a postgresql:// URL (unset it for embedded SQLite)"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _oauth_consistent(self) -> Settings:
        problem = self.oauth_problem()
        if problem is not None:
            raise ValueError(problem)
        if bool(self.console_oidc_issuer) != bool(self.console_oidc_client_id):
            msg = "console_oidc_issuer and console_oidc_client_id must be set together"
            raise ValueError(msg)
        return self

    @property
    def console_key_signin(self) -> bool:
        """Whether the console offers sign-in with an API key."""
        if self.console_api_key_signin is not None:
            return self.console_api_key_signin
        return self.console_oidc_issuer is None

    def oauth_problem(self) -> str | None:
        """Why this OAuth configuration must not start, if it must not."""
        if self.oauth_issuer and not self.oauth_audience and not self.oauth_allow_any_audience:
            return (
                "oauth_issuer is set without oauth_audience: tokens minted for any other "
                "service would be accepted. Set oauth_audience (MISSION_LEDGER_OAUTH_AUDIENCE), "
                "or oauth_allow_any_audience=true if this issuer mints tokens for this service "
                "alone"
            )
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no secret dirs
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file_from_env()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def public_issuer(self) -> str:
        if self.issuer:
            return self.issuer.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    def meter_writer_priority(self) -> WriterPriority:
        """How the Meter writer process runs below the server: not at all without budget
        leases (every metered permit then waits for the writer)."""
        return self._background_priority() if self.metering_lease_seconds > 0 else SERVER_PRIORITY

    def decision_writer_priority(self) -> WriterPriority:
        """How the decision log writer process runs below the server: not at all in ``sync``
        mode (every answer then waits for the writer)."""
        if self.decision_log_mode == "sync":
            return SERVER_PRIORITY
        return self._background_priority()

    def _background_priority(self) -> WriterPriority:
        return WriterPriority(nice=self.writer_process_nice, idle=self.writer_process_idle)

    def postgres_params(self) -> dict[str, Any]:
        """Connection parameters parsed from ``database_url``."""
        if self.database_url is None:
            msg = "not configured for PostgreSQL"
            raise ValueError(msg)
        parts = urlsplit(self.database_url)
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or ""),
            "dbname": unquote(parts.path.lstrip("/") or "postgres"),
        }


def _config_file_from_env() -> Path | None:
    import os  # noqa: PLC0415 - read lazily so importing this module has no side effects

    value = os.environ.get("MISSION_LEDGER_CONFIG")
    return Path(value) if value else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, an optional TOML file and overrides."""
    return Settings(**overrides)
