"""Who may do what on the broker (SASL SCRAM-SHA-512 + ACLs), against the suite's real broker.

An agency's subscriber reads the score topics in its own groups and nothing else; it cannot
write anywhere; a wrong password fails at once with the broker's reason; a revoked subscriber
is refused within seconds, also on a connection it opened before. A service's principal writes
its own topics only. Every refusal is an authorization error within a short timeout, not a hang.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from common.contracts.scoring import ScoreLatest
from common.envelope import OutboundEvent, kafka_headers
from common.kafka import KafkaAccessError, check_access, kafka_client_options
from common.kafka_access import (
    Acl,
    Credentials,
    KafkaAccess,
    Operation,
    Resource,
    add_subscriber,
    check_subscriber_name,
    principal,
    provision_services,
    revoke_subscriber,
    service_acls,
)
from common.settings import KafkaSettings
from common.topics import (
    ACTIVITY_RECORDED,
    SCORE_LATEST,
    SCORE_UPDATED,
    TEAMS_MEMBER,
    TEAMS_TEAM,
    dead_letter_topic,
)
from devstack.infra import Infra
from devstack.kafka import LocalKafka

ROOT = Path(__file__).resolve().parents[2]
REFUSED_WITHIN = 10.0  # seconds: an authorization error arrives at once, a hang does not


def as_user(infra: Infra, credentials: Credentials) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
        CDT_KAFKA_USERNAME=credentials.username,
        CDT_KAFKA_PASSWORD=credentials.password,
    )


@pytest.fixture(scope="module", autouse=True)
def _broker_with_sasl(infra: Infra) -> None:
    if infra.kafka_admin.kafka_security_protocol == "PLAINTEXT":
        pytest.skip("this broker authenticates nobody (CDT_INFRA=docker: testcontainers)")


@pytest_asyncio.fixture(scope="module")
async def subscriber(infra: Infra) -> AsyncIterator[Credentials]:
    credentials = await add_subscriber(infra.kafka_admin, f"test-agency-{uuid.uuid4().hex[:8]}")
    yield credentials
    await revoke_subscriber(infra.kafka_admin, credentials.username)


async def within(work: Awaitable[Any], seconds: float = REFUSED_WITHIN) -> Any:
    async with asyncio.timeout(seconds):
        return await work


async def read_until(
    consumer: AIOKafkaConsumer, found: Callable[[list[Any]], bool], *, seconds: float = 20
) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + seconds
    while not found(records):
        assert time.monotonic() < deadline, f"not found in {seconds} s ({len(records)} records)"
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
    return records


def consumer_of(
    infra: Infra, credentials: Credentials, topic: str, *, group: str | None
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=5_000,
        **kafka_client_options(as_user(infra, credentials)),
    )


async def started(consumer: AIOKafkaConsumer) -> None:
    """Start the consumer and fetch once; stop it whatever happens."""
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()


async def publish_latest_score(infra: Infra) -> bytes:
    """A well-formed score on `score-latest`, as scoring publishes it, for a subject no other
    test reads (nothing in the platform consumes this topic); returns its key."""
    latest = ScoreLatest(
        subject_type="team",
        subject_id=f"kafka-access-test-{uuid.uuid4()}",
        period="2026-01",
        criteria_set="default",
        score=42.5,
        version=1,
        computed_at=datetime.now(UTC),
    )
    event = OutboundEvent.of(latest, source="/cdt/scoring")
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers, acks="all", **kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            event.topic,
            key=event.key.encode(),
            value=json.dumps(event.data).encode(),
            headers=kafka_headers(event.ce_headers()),
        )
    finally:
        await producer.stop()
    return event.key.encode()


async def produce_as(settings: KafkaSettings, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=5_000,
        **kafka_client_options(settings),
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"intruder", value=b"{}")
    finally:
        await producer.stop()


async def test_subscriber_reads_score_latest_from_the_beginning_in_its_own_group(
    infra: Infra, subscriber: Credentials
) -> None:
    key = await publish_latest_score(infra)
    consumer = consumer_of(
        infra, subscriber, SCORE_LATEST.name, group=f"{subscriber.username}.scores"
    )
    await within(consumer.start())
    try:
        records = await read_until(consumer, lambda rs: any(r.key == key for r in rs))
        assert records
        await within(consumer.commit())  # its group's offsets are its own to keep
    finally:
        await consumer.stop()


@pytest.mark.parametrize("topic", [ACTIVITY_RECORDED.name, TEAMS_MEMBER.name, TEAMS_TEAM.name])
async def test_subscriber_is_refused_every_other_topic(
    infra: Infra, subscriber: Credentials, topic: str
) -> None:
    for group in (None, f"{subscriber.username}.elsewhere"):
        with pytest.raises(TopicAuthorizationFailedError):
            await within(started(consumer_of(infra, subscriber, topic, group=group)))


@pytest.mark.parametrize("group", ["scoring", "notifications", "another-agency.scores", "test"])
async def test_subscriber_is_refused_groups_outside_its_prefix(
    infra: Infra, subscriber: Credentials, group: str
) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        await within(started(consumer_of(infra, subscriber, SCORE_UPDATED.name, group=group)))


@pytest.mark.parametrize("topic", [SCORE_LATEST.name, SCORE_UPDATED.name, ACTIVITY_RECORDED.name])
async def test_subscriber_cannot_produce_to_any_topic(
    infra: Infra, subscriber: Credentials, topic: str
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await within(produce_as(as_user(infra, subscriber), topic))


async def test_a_wrong_password_fails_fast_with_the_brokers_reason(
    infra: Infra, subscriber: Credentials
) -> None:
    wrong = as_user(infra, Credentials(subscriber.username, "not-the-password"))
    started_at = time.monotonic()
    with pytest.raises(KafkaAccessError, match=r"refused the credentials.*SaslAuthentication"):
        await within(check_access(wrong))
    assert time.monotonic() - started_at < 5


def test_a_service_with_a_wrong_password_exits_at_once_saying_why(
    infra: Infra, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "CDT_KAFKA_USERNAME": "scoring", "CDT_KAFKA_PASSWORD": "wrong"}
    started_at = time.monotonic()
    # The check runs before anything else: no database, port or migration is touched.
    done = subprocess.run(
        [sys.executable, "-m", "scoring", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "refused the credentials of 'scoring'" in done.stderr, done.stderr[-2000:]
    assert "CDT_KAFKA_PASSWORD" in done.stderr
    assert time.monotonic() - started_at < 30


async def test_a_revoked_subscriber_is_refused_within_seconds(infra: Infra) -> None:
    admin = infra.kafka_admin
    credentials = await add_subscriber(admin, f"test-revoked-{uuid.uuid4().hex[:8]}")
    consumer = consumer_of(infra, credentials, SCORE_LATEST.name, group=None)
    await within(consumer.start())  # a connection authenticated before the revocation
    try:
        await consumer.getmany(timeout_ms=300)
        revoked_at = time.monotonic()
        assert await revoke_subscriber(admin, credentials.username) == 7
        with pytest.raises(KafkaAccessError):  # no new login
            await within(check_access(as_user(infra, credentials)))
        with pytest.raises(TopicAuthorizationFailedError):  # nor a fetch on an open connection
            await within(read_until(consumer, lambda _: False, seconds=REFUSED_WITHIN * 2))
        assert time.monotonic() - revoked_at < REFUSED_WITHIN
    finally:
        await consumer.stop()


async def test_a_service_principal_writes_only_its_own_topics(infra: Infra) -> None:
    passwords = await provision_services(infra.kafka_admin)
    activities = as_user(infra, Credentials("activities", passwords["activities"]))
    # Its own dead-letter topic, which no consumer reads: allowed.
    await within(produce_as(activities, dead_letter_topic(TEAMS_TEAM.name, "activities")))
    others = [
        SCORE_UPDATED.name,
        TEAMS_MEMBER.name,
        dead_letter_topic(SCORE_UPDATED.name, "notifications"),
    ]
    for foreign in others:
        with pytest.raises(TopicAuthorizationFailedError):
            await within(produce_as(activities, foreign))


def test_the_example_subscriber_reads_the_snapshot_with_the_documented_contract_only(
    infra: Infra, subscriber: Credentials
) -> None:
    key = asyncio.run(publish_latest_score(infra)).decode()
    env = {
        "PATH": os.environ.get("PATH", ""),  # nothing of this repository's settings
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_USERNAME": subscriber.username,
        "KAFKA_PASSWORD": subscriber.password,
    }
    example = [sys.executable, str(ROOT / "examples" / "score_subscriber.py")]
    done = subprocess.run(
        [*example, "--idle-exit", "2", "--schemas", str(ROOT / "docs" / "schemas"), "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert f"{key}  v1  42.5" in lines, done.stdout[-2000:]  # from the snapshot
    assert lines[-1].startswith("stopped: ") and lines[-1].endswith(", 0 rejected"), lines[-1]


def test_a_broker_formatted_before_sasl_gets_its_superuser_at_the_next_start(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.data/kafka` of an earlier `make run` has no superuser: the next start adds one."""
    kafka = LocalKafka(workdir / "kafka-before-sasl", heap="256m")
    kafka.start()
    kafka.stop()
    # As if formatted without credentials: the password the broker knows is not the file's.
    (kafka.data_dir / "admin-password").unlink()
    monkeypatch.setenv("CDT_KAFKA_ADMIN_PASSWORD", "a-password-the-broker-has-never-seen")
    try:
        kafka.start()
        assert kafka.admin_password == "a-password-the-broker-has-never-seen"
        asyncio.run(
            check_access(
                KafkaSettings.model_validate(
                    {"kafka_bootstrap_servers": kafka.bootstrap_servers, **kafka.client_env()}
                )
            )
        )
        properties = (kafka.data_dir / "admin.properties").read_text()
        assert 'password="a-password-the-broker-has-never-seen"' in properties
        for secret in ("admin.properties", "admin-password", "server.properties"):
            assert (kafka.data_dir / secret).stat().st_mode & 0o777 == 0o600, secret
    finally:
        kafka.stop()


async def test_provisioning_again_leaves_a_service_exactly_its_declared_acls(
    infra: Infra,
) -> None:
    admin = infra.kafka_admin
    leftover = Acl(principal("notifications"), Resource.TOPIC, TEAMS_MEMBER.name, Operation.READ)
    async with KafkaAccess(admin) as access:
        await access.grant([leftover])  # as if an earlier release had needed it
    await provision_services(admin)
    async with KafkaAccess(admin) as access:
        held = await access.bindings_of("notifications")
    assert sorted(held) == sorted(acl.binding() for acl in service_acls("notifications"))


def test_subscriber_names_cannot_take_a_service_principal_or_group() -> None:
    for name in ("scoring", "scoring-roster", "admin", "Tong Cuc", "a.b", "-x"):
        with pytest.raises(ValueError):
            check_subscriber_name(name)
    assert check_subscriber_name("tong-cuc-thong-ke") == "tong-cuc-thong-ke"
