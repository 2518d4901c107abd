from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class TeamsSettings(ServiceSettings):
    service_name: str = "teams"
    http_port: int = Field(default=8001, alias="TEAMS_PORT")
