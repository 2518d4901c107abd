from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    service_name: str = "scoring"
    http_port: int = Field(default=8003, alias="SCORING_PORT")
    # Larger than the other services' 500: a batch's team, village, commune… rows are merged
    # in Python before one upsert per table, so a backlog drains in fewer, fuller statements
    # (bench_scoring_throughput: 686 events/s at 500, 1,118 at 5,000). A quiet topic still
    # yields small batches: the consumer takes what is there.
    consumer_batch_size: int = Field(default=5_000, alias="CDT_CONSUMER_BATCH_SIZE", ge=1)
    # Months of score versions kept in `score_history` (older monthly partitions are dropped).
    history_months: int = Field(default=24, alias="SCORING_HISTORY_MONTHS", ge=1, le=600)
