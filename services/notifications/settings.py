from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = Field(default=8004, alias="NOTIFICATIONS_PORT")
