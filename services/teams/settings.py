from __future__ import annotations

from pydantic import Field, SecretStr

from common.settings import ServiceSettings


class TeamsSettings(ServiceSettings):
    service_name: str = "teams"
    http_port: int = Field(default=8001, alias="TEAMS_PORT")
    # The letter's "4 to 9 members": reported as team health, never enforced.
    team_min_size: int = Field(default=4, alias="TEAMS_MIN_SIZE", ge=0)
    team_max_size: int = Field(default=9, alias="TEAMS_MAX_SIZE", ge=1)
    # Rows per transaction in bulk imports: bounds memory and lock time per batch.
    bulk_batch_size: int = Field(default=1_000, alias="TEAMS_BULK_BATCH_SIZE", ge=1, le=5_000)
    # Bulk bodies are streamed in batches, so a national file (~60 MB) needs no memory for it.
    bulk_max_body_bytes: int = Field(
        default=512_000_000, alias="TEAMS_BULK_MAX_BODY_BYTES", ge=1024
    )
    # Requests per second per partner key on the read endpoints (per API process), then 429.
    partner_rate_limit: int = Field(default=200, alias="CDT_PARTNER_RATE_LIMIT", ge=1, le=100_000)

    # The local identity provider (when `CDT_OIDC_ISSUER` is unset or is this URL): the `iss`
    # of the tokens it signs, and where its JWKS and discovery document are served.
    issuer_url: str = Field(default="http://127.0.0.1:8001", alias="TEAMS_ISSUER_URL")
    # Access tokens are short-lived; a disabled account's are refused within
    # CDT_OIDC_DISABLED_REFRESH_SECONDS anyway.
    token_ttl_seconds: int = Field(default=900, alias="TEAMS_TOKEN_TTL_SECONDS", ge=60, le=3600)
    invitation_ttl_hours: float = Field(default=72, alias="TEAMS_INVITATION_TTL_HOURS", gt=0)
    # Failed logins per account and per client address within the window, then 429.
    login_window_seconds: float = Field(default=300, alias="TEAMS_LOGIN_WINDOW_SECONDS", gt=0)
    login_max_failures: int = Field(default=5, alias="TEAMS_LOGIN_MAX_FAILURES", ge=1)
    login_max_failures_per_address: int = Field(
        default=20, alias="TEAMS_LOGIN_MAX_FAILURES_PER_ADDRESS", ge=1
    )

    # Encrypts the local issuer's private signing keys where they are stored (PKCS#8); a key
    # stored before it was set stays readable.
    signing_key_passphrase: SecretStr | None = Field(
        default=None, alias="TEAMS_SIGNING_KEY_PASSPHRASE"
    )

    @property
    def local_issuer(self) -> bool:
        return self.cdt_oidc_issuer is None or self.cdt_oidc_issuer == self.issuer_url


MIN_PASSPHRASE_CHARS = 16


def signing_key_passphrase(settings: TeamsSettings) -> bytes | None:
    """The passphrase of the stored signing keys: required in prod, where a database dump
    must not hand out the power to sign any account's token; optional elsewhere (the service
    warns at start without it)."""
    if settings.signing_key_passphrase is not None:
        value = settings.signing_key_passphrase.get_secret_value()
        if len(value) < MIN_PASSPHRASE_CHARS:
            raise ValueError(
                f"TEAMS_SIGNING_KEY_PASSPHRASE must be at least {MIN_PASSPHRASE_CHARS} characters"
            )
        return value.encode()
    if settings.cdt_env == "prod":
        raise ValueError(
            "TEAMS_SIGNING_KEY_PASSPHRASE is required in prod while teams issues the access "
            "tokens (or point CDT_OIDC_ISSUER at the ministry's identity provider)"
        )
    return None
