"""The one declaration of every Kafka topic and of which consumer group reads which.

Provisioning (`make run`, tests, service start-up) creates topics from here; dead-letter topics
`<topic>.dlt.<group>` are derived from `CONSUMER_GROUPS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 6
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def broker_configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.compacted:
            # Keep tombstones and recent duplicates briefly so new consumers see every key.
            configs["min.compaction.lag.ms"] = "60000"
        return {**configs, **self.configs}


TEAMS_TEAM = TopicSpec("teams.team.v1", compacted=True)
TEAMS_MEMBER = TopicSpec("teams.member.v1", compacted=True)
TEAMS_ADMIN_UNIT = TopicSpec("teams.admin-unit.v1", compacted=True)
ACTIVITY_RECORDED = TopicSpec("activities.activity-recorded.v1", partitions=12)
ACTIVITY_VOIDED = TopicSpec("activities.activity-voided.v1", partitions=12)
# Partner apps and their key hashes, so other services can authenticate partner reads.
ACTIVITIES_PARTNER = TopicSpec("activities.partner.v1", partitions=3, compacted=True)
SCORE_UPDATED = TopicSpec("scoring.score-updated.v1", partitions=12)
SCORE_LATEST = TopicSpec("scoring.score-latest.v1", partitions=12, compacted=True)
# Every transition of an evaluation round (open, under review, approved, reopened), key: round id.
EVALUATION_ROUND = TopicSpec("scoring.evaluation-round.v1", partitions=3)
ALERT_RAISED = TopicSpec("notifications.alert-raised.v1")

DOMAIN_TOPICS: tuple[TopicSpec, ...] = (
    TEAMS_TEAM,
    TEAMS_MEMBER,
    TEAMS_ADMIN_UNIT,
    ACTIVITY_RECORDED,
    ACTIVITY_VOIDED,
    ACTIVITIES_PARTNER,
    SCORE_UPDATED,
    SCORE_LATEST,
    EVALUATION_ROUND,
    ALERT_RAISED,
)

# consumer group -> the topics it reads
CONSUMER_GROUPS: dict[str, tuple[TopicSpec, ...]] = {
    "activities": (TEAMS_TEAM, TEAMS_MEMBER, TEAMS_ADMIN_UNIT),
    # Scoring reads the roster in a group of its own: a registry import's backlog on the teams
    # topics must not hold live activities back (each group is one consumer, one batch at a time).
    "scoring": (ACTIVITY_RECORDED, ACTIVITY_VOIDED),
    "scoring-roster": (TEAMS_TEAM, TEAMS_MEMBER, TEAMS_ADMIN_UNIT),
    # open suspicious-activity alerts keep a team out of commendation candidates
    "scoring-alerts": (ALERT_RAISED,),
    "notifications": (
        TEAMS_TEAM,
        ACTIVITY_RECORDED,
        ACTIVITY_VOIDED,
        SCORE_UPDATED,
        EVALUATION_ROUND,
    ),
    "teams": (ACTIVITIES_PARTNER,),
}


def dead_letter_topic(topic: str, group: str) -> str:
    return f"{topic}.dlt.{group}"


def all_topics() -> list[TopicSpec]:
    dead_letters = [
        TopicSpec(dead_letter_topic(spec.name, group), partitions=1)
        for group, specs in CONSUMER_GROUPS.items()
        for spec in specs
    ]
    return [*DOMAIN_TOPICS, *dead_letters]
