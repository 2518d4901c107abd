from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    service_name: str = "scoring"
    http_port: int = Field(default=8003, alias="SCORING_PORT")
