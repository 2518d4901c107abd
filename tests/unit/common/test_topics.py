from __future__ import annotations

from common import topics


def test_compacted_topics_are_declared_compacted() -> None:
    compacted = {t.name for t in topics.DOMAIN_TOPICS if t.compacted}
    assert compacted == {
        "teams.team.v1",
        "teams.member.v1",
        "teams.admin-unit.v1",
        "activities.partner.v1",
        "scoring.score-latest.v1",
    }
    assert topics.SCORE_LATEST.broker_configs()["cleanup.policy"] == "compact"
    assert topics.ACTIVITY_RECORDED.broker_configs()["cleanup.policy"] == "delete"


def test_every_consumed_topic_has_a_dead_letter_topic_per_group() -> None:
    names = {t.name for t in topics.all_topics()}
    for group, consumed in topics.CONSUMER_GROUPS.items():
        for spec in consumed:
            assert f"{spec.name}.dlt.{group}" in names
    assert len(names) == len(topics.all_topics()), "no topic declared twice"
