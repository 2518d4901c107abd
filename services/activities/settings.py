from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class ActivitiesSettings(ServiceSettings):
    service_name: str = "activities"
    http_port: int = Field(default=8002, alias="ACTIVITIES_PORT")
