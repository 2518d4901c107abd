from __future__ import annotations

from pydantic import Field

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
