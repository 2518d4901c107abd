from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = Field(default=8004, alias="NOTIFICATIONS_PORT")

    # Webhook targets on private, loopback or link-local addresses are refused (SSRF) unless
    # this is set, as in tests where the receiver listens on 127.0.0.1.
    webhook_allow_private: bool = Field(default=False, alias="CDT_WEBHOOK_ALLOW_PRIVATE")
    webhook_worker: bool = Field(default=True, alias="CDT_WEBHOOK_WORKER")
    webhook_max_attempts: int = Field(default=8, alias="CDT_WEBHOOK_MAX_ATTEMPTS", ge=1, le=50)
    webhook_backoff_base_seconds: float = Field(
        default=5.0, alias="CDT_WEBHOOK_BACKOFF_BASE_SECONDS", gt=0
    )
    webhook_backoff_max_seconds: float = Field(
        default=3600.0, alias="CDT_WEBHOOK_BACKOFF_MAX_SECONDS", gt=0
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, alias="CDT_WEBHOOK_TIMEOUT_SECONDS", gt=0, le=120
    )
    webhook_poll_seconds: float = Field(default=1.0, alias="CDT_WEBHOOK_POLL_SECONDS", gt=0)
    webhook_batch_size: int = Field(default=20, alias="CDT_WEBHOOK_BATCH_SIZE", ge=1, le=500)
    webhook_concurrency: int = Field(default=10, alias="CDT_WEBHOOK_CONCURRENCY", ge=1, le=200)
    # The inactivity sweep (team_inactive) runs on this period, besides being event-driven.
    sweep_interval_seconds: float = Field(default=3600.0, alias="CDT_SWEEP_INTERVAL_SECONDS", gt=0)

    @property
    def webhook_lease_seconds(self) -> float:
        """How long a claimed delivery stays invisible to other workers.

        Longer than one attempt can take, so a live worker is not raced; a crashed worker's
        claim expires after it and the delivery is retried (same idempotency key).
        """
        return self.webhook_timeout_seconds + 2.0
