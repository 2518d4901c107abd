"""One settings class per service, read from the environment (12-factor).

Field names are the environment variable names, lower-cased: `DATABASE_URL` → `database_url`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TraceExporter = Literal["file", "otlp", "console", "none"]
KafkaSecurityProtocol = Literal["SASL_PLAINTEXT", "SASL_SSL", "PLAINTEXT"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]


class KafkaSettings(BaseSettings):
    """Where the broker is and how a client proves who it is (`common.kafka.kafka_client_options`
    turns these into every client's options). Each service has its own principal; the broker
    allows it exactly its topics and groups (`python -m common.kafka_access`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # SASL_SSL in production (with CDT_KAFKA_SSL_CAFILE unless the system's CAs sign the
    # broker's certificate); SASL_PLAINTEXT on a loopback broker (`make run`, the tests).
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="SASL_PLAINTEXT", alias="CDT_KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        default="SCRAM-SHA-512", alias="CDT_KAFKA_SASL_MECHANISM"
    )
    kafka_username: str | None = Field(default=None, alias="CDT_KAFKA_USERNAME")
    kafka_password: SecretStr | None = Field(default=None, alias="CDT_KAFKA_PASSWORD")
    kafka_ssl_cafile: Path | None = Field(default=None, alias="CDT_KAFKA_SSL_CAFILE")


class ServiceSettings(KafkaSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    service_name: str = "cdt"
    cdt_env: Literal["dev", "test", "prod"] = "dev"

    database_url: str = "postgresql+asyncpg://cdt@127.0.0.1:5432/cdt"
    db_pool_size: int = Field(default=20, ge=1, le=200)
    create_topics: bool = Field(default=True, alias="CDT_CREATE_TOPICS")
    run_migrations: bool = Field(default=True, alias="CDT_RUN_MIGRATIONS")

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Run the outbox relay and consumers inside the API process (one process per service).
    run_workers: bool = Field(default=True, alias="CDT_RUN_WORKERS")
    max_body_bytes: int = Field(default=2_000_000, alias="CDT_MAX_BODY_BYTES", ge=1024)
    # On SIGTERM the API keeps serving this long with /readyz at 503, so the load balancer stops
    # routing here before the listener closes (set it above the readiness probe period).
    shutdown_delay_seconds: float = Field(
        default=0.0, alias="CDT_SHUTDOWN_DELAY_SECONDS", ge=0, le=120
    )

    cdt_admin_token: SecretStr | None = None
    # OpenID Connect: the issuer whose access tokens every service accepts (verified locally,
    # `common.identity`). Unset: only the operator token authenticates operator writes, and the
    # teams service is the issuer of its own accounts' tokens.
    cdt_oidc_issuer: str | None = None
    cdt_oidc_audience: str = "cdt"
    # Where the keys are; unset: the `jwks_uri` of the issuer's discovery document.
    cdt_oidc_jwks_url: str | None = None
    # The issuer's list of disabled subjects (the teams service's `/v1/auth/disabled-subjects`).
    cdt_oidc_disabled_url: str | None = None
    oidc_leeway_seconds: float = Field(default=30, alias="CDT_OIDC_LEEWAY_SECONDS", ge=0, le=300)
    oidc_jwks_ttl_seconds: float = Field(default=300, alias="CDT_OIDC_JWKS_TTL_SECONDS", gt=0)
    oidc_jwks_min_refresh_seconds: float = Field(
        default=10, alias="CDT_OIDC_JWKS_MIN_REFRESH_SECONDS", ge=0
    )
    # A disabled account's tokens stop working at every service within this (≤ 30 s).
    oidc_disabled_refresh_seconds: float = Field(
        default=30, alias="CDT_OIDC_DISABLED_REFRESH_SECONDS", gt=0, le=30
    )

    relay_batch_size: int = Field(default=500, alias="CDT_RELAY_BATCH_SIZE", ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=0.25, alias="CDT_RELAY_POLL_SECONDS", gt=0)
    relay_linger_seconds: float = Field(default=0.05, alias="CDT_RELAY_LINGER_SECONDS", ge=0, le=1)
    # Published outbox rows are kept this long (for inspection, like the topics' 7 days), then
    # the relay deletes them: without it every outbox grew without bound.
    outbox_retention_hours: float = Field(default=168, alias="CDT_OUTBOX_RETENTION_HOURS", gt=0)
    # Dedupe records must outlive every redelivery: the topics keep 7 days, so 8 by default.
    dedupe_retention_hours: float = Field(default=192, alias="CDT_DEDUPE_RETENTION_HOURS", gt=0)
    consumer_batch_size: int = Field(default=500, alias="CDT_CONSUMER_BATCH_SIZE", ge=1)
    lag_interval_seconds: float = Field(default=5.0, alias="CDT_LAG_INTERVAL_SECONDS", gt=0)
    # How fast the group notices a consumer that died without leaving (kill -9): its
    # partitions wait this long before another member takes them.
    consumer_session_timeout_ms: int = Field(
        default=10_000, alias="CDT_CONSUMER_SESSION_TIMEOUT_MS", ge=6_000
    )
    consumer_max_retries: int = Field(default=3, alias="CDT_CONSUMER_MAX_RETRIES", ge=0)

    otel_traces_exporter: TraceExporter = Field(default="file", alias="CDT_TRACES_EXPORTER")
    otel_exporter_otlp_endpoint: str = "http://127.0.0.1:4318"
    trace_file: Path = Field(default=Path(".data/traces.jsonl"), alias="CDT_TRACE_FILE")
    # Head sampling, honoured downstream through `traceparent` (parent-based): 0.01 under load.
    trace_sample_ratio: float = Field(default=1.0, alias="CDT_TRACE_SAMPLE_RATIO", ge=0, le=1)
    trace_sql: bool = Field(default=True, alias="CDT_TRACE_SQL")
    log_level: str = Field(default="INFO", alias="CDT_LOG_LEVEL")

    @property
    def schema_name(self) -> str:
        """Each service owns one Postgres schema named after it."""
        return self.service_name

    @property
    def admin_token(self) -> str | None:
        return self.cdt_admin_token.get_secret_value() if self.cdt_admin_token else None
