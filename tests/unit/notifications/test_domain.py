"""Pure rules of the notifications service (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from common.contracts.scoring import ScoreComponent
from notifications.delivery import WebhookUrlError, check_webhook_url
from notifications.domain import (
    AlertCandidate,
    CampaignGoal,
    InvalidRuleError,
    RuleOverride,
    ScoreDropParams,
    TargetReachedParams,
    backoff_seconds,
    campaign_id_of,
    campaign_pace,
    can_transition,
    inactivity_reference,
    is_backdated,
    is_inactive,
    is_public_address,
    local_day,
    previous_period,
    resolve_rule,
    score_drop,
    score_recovered,
    signature,
    target_statuses,
    verify_signature,
)


def test_rules_merge_defaults_national_then_province_field_by_field() -> None:
    overrides = [
        RuleOverride("national", "suspicious_activity", None, {"max_visits_per_member_day": 30}),
        RuleOverride("82", "suspicious_activity", False, {"household_max_teams": 5}),
        RuleOverride("01", "suspicious_activity", None, {"household_max_teams": 9}),
    ]
    rule = resolve_rule("suspicious_activity", scope="82", overrides=overrides)
    assert rule.enabled is False
    assert rule.params.max_visits_per_member_day == 30  # inherited from national
    assert rule.params.household_max_teams == 5  # the province's own
    assert rule.params.backdate_hours == 72  # built-in default
    assert rule.sources == ("default", "national", "82")
    national = resolve_rule("suspicious_activity", scope="national", overrides=overrides)
    assert national.enabled and national.params.household_max_teams == 3


def test_invalid_params_name_the_field() -> None:
    with pytest.raises(InvalidRuleError) as caught:
        resolve_rule(
            "campaign_at_risk",
            scope="82",
            overrides=[
                RuleOverride(
                    "82",
                    "campaign_at_risk",
                    None,
                    {
                        "campaigns": {
                            "c": {
                                "indicator": "x",
                                "target": -1,
                                "starts_on": "2026-01-01",
                                "ends_on": "2026-02-01",
                            }
                        }
                    },
                )
            ],
        )
    assert caught.value.errors[0]["field"] == "params.campaigns.c.target"


def test_dedupe_key_is_rule_subject_period() -> None:
    candidate = AlertCandidate("score_drop", "commune", "28000", "2026-11", "s")
    assert candidate.dedupe_key == "score_drop|commune:28000|2026-11"
    qualified = AlertCandidate(
        "target_reached", "team", "t", None, "s", qualifier="criterion:reach"
    )
    assert qualified.dedupe_key == "target_reached|team:t#criterion:reach|-"


def test_lifecycle_transitions() -> None:
    assert can_transition("open", "acknowledged")
    assert can_transition("acknowledged", "resolved")
    assert not can_transition("resolved", "open")
    assert not can_transition("acknowledged", "open")


def test_inactivity_reference_and_threshold() -> None:
    seen = datetime(2026, 11, 1, tzinfo=UTC)
    last = datetime(2026, 11, 10, tzinfo=UTC)
    assert (
        inactivity_reference(last_activity_at=last, established_on=None, first_seen_at=seen) == last
    )
    # a team founded long ago but registered today gets the grace period from today
    assert (
        inactivity_reference(
            last_activity_at=None, established_on=date(2022, 4, 1), first_seen_at=seen
        )
        == seen
    )
    later = inactivity_reference(
        last_activity_at=None, established_on=date(2026, 11, 5), first_seen_at=seen
    )
    assert later == datetime(2026, 11, 4, 17, tzinfo=UTC)  # midnight in Vietnam
    assert not is_inactive(reference=last, now=last + timedelta(days=13, hours=23), days=14)
    assert is_inactive(reference=last, now=last + timedelta(days=14), days=14)


def test_score_drop_versions_and_periods() -> None:
    params = ScoreDropParams(points=10, between_periods=True)
    assert (
        score_drop(previous_version_score=75, previous_period_score=None, score=66, params=params)
        is None
    )
    drop = score_drop(previous_version_score=75, previous_period_score=90, score=64, params=params)
    assert drop is not None and drop.compared_with == "previous_period" and drop.points == 26
    only_versions = ScoreDropParams(points=10)
    assert (
        score_drop(
            previous_version_score=70, previous_period_score=99, score=65, params=only_versions
        )
        is None
    )
    assert score_recovered(baseline=75, score=66, params=params)
    assert not score_recovered(baseline=75, score=65, params=params)


@pytest.mark.parametrize(
    ("period", "previous"),
    [
        ("2026-11", "2026-10"),
        ("2026-01", "2025-12"),
        ("2026-Q1", "2025-Q4"),
        ("2026-Q3", "2026-Q2"),
        ("2026", "2025"),
        ("campaign:x", None),
    ],
)
def test_previous_period(period: str, previous: str | None) -> None:
    assert previous_period(period) == previous


def test_target_statuses_components_and_indicator_map() -> None:
    components = [
        ScoreComponent(criterion="reach", points=1, max_points=1, value=1.0, target=1.0),
        ScoreComponent(criterion="skills", points=1, max_points=1, value=0.5, target=1.0),
        ScoreComponent(criterion="free", points=1, max_points=1, value=3, target=0),
    ]
    statuses = target_statuses(
        components=components,
        indicators={"app_installs": 1333, "ewallet_accounts": 10},
        params=TargetReachedParams(
            indicator_targets={"app_installs": 1333, "ewallet_accounts": 986}
        ),
    )
    assert {s.name: s.reached for s in statuses} == {
        "criterion:reach": True,
        "criterion:skills": False,
        "indicator:app_installs": True,
        "indicator:ewallet_accounts": False,
    }
    watched = target_statuses(
        components=components, indicators={}, params=TargetReachedParams(criteria=["skills"])
    )
    assert [s.name for s in watched] == ["criterion:skills"]


def test_campaign_pace() -> None:
    goal = CampaignGoal(
        indicator="citizens_reached",
        target=920,
        starts_on=date(2022, 6, 1),
        ends_on=date(2022, 8, 31),
    )  # 92 days
    start = datetime(2022, 5, 31, 17, tzinfo=UTC)
    half = start + timedelta(days=46)
    behind = campaign_pace(value=400, goal=goal, now=half, min_elapsed=0.1)
    assert behind is not None and behind.at_risk and behind.projected == pytest.approx(800)
    on_pace = campaign_pace(value=470, goal=goal, now=half, min_elapsed=0.1)
    assert on_pace is not None and not on_pace.at_risk
    assert campaign_pace(value=1, goal=goal, now=start + timedelta(days=2), min_elapsed=0.1) is None
    after = campaign_pace(value=900, goal=goal, now=start + timedelta(days=200), min_elapsed=0.1)
    assert after is not None and after.projected == 900 and after.at_risk
    assert campaign_id_of("campaign:bp-2022") == "bp-2022" and campaign_id_of("2026") is None


def test_local_day_and_backdating() -> None:
    assert local_day(datetime(2026, 11, 29, 17, 30, tzinfo=UTC)) == date(2026, 11, 30)
    now = datetime(2026, 11, 29, tzinfo=UTC)
    assert is_backdated(occurred_at=now - timedelta(hours=73), recorded_at=now, hours=72)
    assert not is_backdated(occurred_at=now - timedelta(hours=72), recorded_at=now, hours=72)


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"a":1}'
    header = signature(secret="s3cret", timestamp=1_700_000_000, body=body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(secret="s3cret", header=header, body=body, now=1_700_000_100)
    assert not verify_signature(secret="s3cret", header=header, body=b'{"a":2}', now=1_700_000_100)
    assert not verify_signature(secret="other", header=header, body=body, now=1_700_000_100)
    assert not verify_signature(secret="s3cret", header=header, body=body, now=1_700_001_000)
    assert not verify_signature(secret="s3cret", header="garbage", body=body, now=1_700_000_000)


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    low = [backoff_seconds(attempt=n, base=1, cap=60, rng=lambda: 0.0) for n in range(1, 9)]
    high = [backoff_seconds(attempt=n, base=1, cap=60, rng=lambda: 1.0) for n in range(1, 9)]
    assert low == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert high == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("100.64.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_webhook_url_checks() -> None:
    for url in (
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "ftp://a.example/x",
        "https://u:p@example.org/",
        "https:///nohost",
        "http://[2Fd]:1/x",  # brackets around no IPv6 address: urlsplit raises
        "http://.example.org/x",  # an empty label: the IDNA codec raises
    ):
        with pytest.raises(WebhookUrlError):
            await check_webhook_url(url, allow_private=False, require_https=False)
    with pytest.raises(WebhookUrlError, match="https"):
        await check_webhook_url("http://example.org/x", allow_private=True, require_https=True)
    await check_webhook_url("http://127.0.0.1:8080/x", allow_private=True, require_https=False)
    await check_webhook_url("https://93.184.216.34/x", allow_private=False, require_https=True)
