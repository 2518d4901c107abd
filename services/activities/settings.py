from __future__ import annotations

import logging
import secrets

from pydantic import Field, SecretStr

from common.settings import ServiceSettings

log = logging.getLogger(__name__)


class ActivitiesSettings(ServiceSettings):
    service_name: str = "activities"
    http_port: int = Field(default=8002, alias="ACTIVITIES_PORT")
    # Secret of the keyed hash of household references. Must be stable across restarts and
    # processes (or repeat visits stop matching); never logged.
    household_hmac_key: SecretStr | None = Field(default=None, alias="CDT_HOUSEHOLD_HMAC_KEY")
    clock_skew_seconds: int = Field(default=300, alias="CDT_CLOCK_SKEW_SECONDS", ge=0, le=3600)
    default_partner_rate_limit: int = Field(
        default=200, alias="CDT_PARTNER_RATE_LIMIT", ge=1, le=100_000
    )


_generated_key: bytes | None = None


def household_key(settings: ActivitiesSettings) -> bytes:
    """The configured secret; outside prod a random one for this process, with a warning."""
    global _generated_key  # noqa: PLW0603 - one dev key per process, shared by its runtimes
    if settings.household_hmac_key is not None:
        value = settings.household_hmac_key.get_secret_value()
        if len(value) < 16:
            raise ValueError("CDT_HOUSEHOLD_HMAC_KEY must be at least 16 characters")
        return value.encode()
    if settings.cdt_env == "prod":
        raise ValueError("CDT_HOUSEHOLD_HMAC_KEY is required in prod")
    if _generated_key is None:
        _generated_key = secrets.token_bytes(32)
        log.warning(
            "CDT_HOUSEHOLD_HMAC_KEY is not set: using a random key for this process only; "
            "household hashes will not match across restarts. Set it outside development."
        )
    return _generated_key
