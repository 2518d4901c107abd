"""OWASP API Security Top 10 (2023), item by item, against the four services as real processes.

Covered here, one test (or a small group) per item, named `test_apiN_…`:
- API1 broken object-level authorisation: a partner key of one province cannot read, list,
  export, post to or void another province's teams, members, units or activities.
- API2 broken authentication: missing, empty, malformed, unknown, revoked and rotated-away keys
  get 401 wherever partner keys authenticate; keys are compared in constant time on their
  SHA-256 (looked up by a public prefix, never by the secret) and only the hash is stored.
- API3 broken object-property-level authorisation: phone numbers and household references
  never reach a partner's response, a Kafka event, a validation error, a log line or a span.
- API4 unrestricted resource consumption: body size (413, counted while streaming), batch size
  (> 1,000 items: 413), page size (every `limit` parameter is capped and the cap enforced),
  per-key rate limits (429 with Retry-After).
- API5 broken function-level authorisation: every route of every app is classified from
  `app.routes` (operator-only, partner-readable, public) so new endpoints are covered
  automatically; partner keys and wrong tokens never pass an operator-only route.
- API7 server-side request forgery: webhook URLs to loopback, private, link-local, CGNAT,
  cloud-metadata, IPv6-mapped and odd encodings of them, names resolving to such addresses
  (at subscription and again at every delivery: DNS rebinding), credentials in the URL and
  non-http schemes are refused; redirects are never followed.
- API8 security misconfiguration: security headers on every response (errors and 413 too), no
  `server` header, `/docs` hidden when `CDT_ENV=prod` (`/openapi.json` stays), no stack trace or
  exception text in a 500, no token or key echoed in errors or written to logs.

Not applicable, and why:
- API6 unrestricted access to sensitive business flows: there is no purchase, sign-up or other
  flow whose automated use harms the business; the only automatable flow, activity ingest, is
  covered by partner-key scoping (API1), rate limits (API4) and idempotent ids (duplicates are
  never counted twice, `tests/integration/activities`).
- API9 improper inventory management: one version (`/v1`) per service, no legacy or debug
  endpoints; API5's route inventory fails when a route appears without a classification.
- API10 unsafe consumption of APIs: the services call no third-party API. Events consumed
  from Kafka are validated against the pydantic contracts, and poison records go to dead-letter
  topics (`tests/integration/foundation`); webhook *responses* are only read for their status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import common.auth
from activities import domain as activities_domain
from common.app import api_routes, authorize
from common.contracts.activities import ActivityRecorded
from common.kafka import kafka_client_options
from common.topics import all_topics
from notifications import delivery as delivery_module
from notifications.delivery import DeliveryWorker, WebhookUrlError, check_webhook_url
from notifications.settings import NotificationsSettings
from teams import domain as teams_domain
from tests.helpers import OPERATOR, eventually
from tests.security.conftest import (
    DONG_THAP,
    HOAN_KIEM,
    SERVICES,
    Stack,
    World,
    activity_body,
    bearer,
    built_apps,
)

# ============================================================================ helpers


async def tail_topic(bootstrap: str, topic: str, last: int = 500) -> list[Any]:
    """The last `last` records of every partition of a topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_client_options()
    )
    await consumer.start()
    try:
        count = next(spec.partitions for spec in all_topics() if spec.name == topic)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(0, ends[tp] - last))
        records: list[Any] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for batch in (await consumer.getmany(tp, timeout_ms=500)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def headers_and_value(record: Any) -> str:
    parts = [record.value.decode(errors="replace") if record.value else ""]
    parts += [f"{k}={v.decode(errors='replace')}" for k, v in record.headers]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def apps(service_env: dict[str, str]) -> dict[str, FastAPI]:
    return built_apps(service_env)


# ============================================================================ API1


async def test_api1_partner_cannot_read_another_provinces_teams(stack: Stack, world: World) -> None:
    async with stack.http("teams") as teams:
        own = await teams.get(f"/v1/teams/{world.team_dt['id']}", headers=world.key_dt)
        assert own.status_code == 200
        for path in (
            f"/v1/teams/{world.team_hn['id']}",
            f"/v1/teams/{world.team_hn['code']}",
            f"/v1/teams/{world.team_hn['id']}/members",
            f"/v1/members/{world.member_hn['id']}",
            f"/v1/admin-units/{HOAN_KIEM}",
        ):
            reply = await teams.get(path, headers=world.key_dt)
            # 404, not 403: another province's ids are not even confirmed to exist.
            assert reply.status_code == 404, (path, reply.text)
            assert world.team_hn["code"] not in reply.text or path.endswith(world.team_hn["code"])
        listed: set[str] = set()
        cursor = None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = await teams.get("/v1/teams", params=params, headers=world.key_dt)
            assert page.status_code == 200, page.text
            listed |= {t["id"] for t in page.json()["items"]}
            assert all(t["unit_path"]["province"] == DONG_THAP for t in page.json()["items"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert world.team_dt["id"] in listed and world.team_hn["id"] not in listed
        by_unit = await teams.get("/v1/teams", params={"unit": HOAN_KIEM}, headers=world.key_dt)
        assert by_unit.status_code in (200, 404)
        assert world.team_hn["id"] not in by_unit.text


async def test_api1_partner_cannot_write_another_provinces_activities(
    stack: Stack, world: World
) -> None:
    async with stack.http("activities") as client:
        single = await client.post(
            "/v1/activities",
            json=activity_body(world.team_dt, world.member_dt),
            headers=world.key_hn,
        )
        assert single.status_code == 403 and single.json()["reason"] == "team_outside_scope"
        batch = await client.post(
            "/v1/activities:batch",
            json={"items": [activity_body(world.team_dt, world.member_dt)]},
            headers=world.key_hn,
        )
        assert batch.status_code == 200
        assert batch.json()["items"][0]["reason"] == "team_outside_scope"
        assert batch.json()["accepted"] == 0
        # Voiding another partner's activity: 404, as if it did not exist; it stays valid.
        void = await client.post(
            f"/v1/activities/{world.activity_dt}:void", json={"reason": "x"}, headers=world.key_hn
        )
        assert void.status_code == 404
        listed = await client.get(
            "/v1/activities", params={"team_id": world.team_dt["id"]}, headers=OPERATOR
        )
        mine = [a for a in listed.json()["items"] if a["id"] == world.activity_dt]
        assert mine and mine[0]["voided_at"] is None


async def test_api1_partner_queries_see_only_their_provinces(stack: Stack, world: World) -> None:
    async with stack.http("activities") as client:
        for params in ({"team_id": world.team_dt["id"]}, {"unit": DONG_THAP}, {}):
            reply = await client.get("/v1/activities", params=params, headers=world.key_hn)
            assert reply.status_code == 200, reply.text
            assert all(a["province"] != DONG_THAP for a in reply.json()["items"])
            assert world.activity_dt not in reply.text
        export = await client.get(
            "/v1/activities:export", params={"team_id": world.team_dt["id"]}, headers=world.key_hn
        )
        assert export.status_code == 200
        assert export.text.strip().count("\n") == 0  # the header line only
        own = await client.get(
            "/v1/activities", params={"team_id": world.team_dt["id"]}, headers=world.key_dt
        )
        assert world.activity_dt in own.text


# ============================================================================ API2

MALFORMED = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dGVzdDp0ZXN0"},
    {"Authorization": "Token test-operator-token"},
    {"Authorization": "Bearer cdtp_"},
    {"Authorization": "Bearer cdtp_zzzzzzzzzzzz_" + "a" * 40},
    {"Authorization": "Bearer cdtp_0123456789ab_" + "a" * 40},  # well-formed, unknown
    {"Authorization": "Bearer cdtp_0123456789ab_short"},
    {"Authorization": "Bearer " + "A" * 8000},
    {"Authorization": "Bearer test-operator-token-but-longer"},
    {"Authorization": "Bearer test-operator-toke"},
    {"Authorization": "Bearer Test-Operator-Token"},
]
# Where a partner key authenticates, a bad credential is a 401.
PARTNER_READS = {
    "teams": "/v1/teams",
    "activities": "/v1/activities",
}


@pytest.mark.parametrize("service", sorted(PARTNER_READS))
async def test_api2_missing_empty_and_malformed_credentials_get_401(
    stack: Stack, world: World, service: str
) -> None:
    async with stack.http(service) as client:
        for headers in MALFORMED:
            reply = await client.get(PARTNER_READS[service], headers=headers)
            assert reply.status_code == 401, (headers.get("Authorization", "")[:60], reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
            assert reply.headers["content-type"] == "application/problem+json"
            presented = headers.get("Authorization", "").partition(" ")[2].strip()
            if len(presented) > 4:
                assert presented not in reply.text  # never echoed


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [("scoring", "PUT", "/v1/targets"), ("notifications", "GET", "/v1/rules")],
)
async def test_api2_operator_routes_refuse_every_other_credential(
    stack: Stack, service: str, method: str, path: str
) -> None:
    """No credential: 401. Any credential that is not the operator token: refused (403)."""
    async with stack.http(service) as client:
        for headers in MALFORMED:
            reply = await client.request(method, path, json={}, headers=headers)
            has_token = headers.get("Authorization", "").lower().startswith("bearer ") and bool(
                headers["Authorization"][7:].strip()
            )
            assert reply.status_code == (403 if has_token else 401), (headers, reply.text)


async def test_api2_revoked_and_rotated_keys_get_401(stack: Stack, world: World) -> None:
    async with stack.http("activities") as activities, stack.http("teams") as teams:
        created = []
        for _ in range(2):
            reply = await activities.post(
                "/v1/partners", json={"name": "api2", "provinces": [DONG_THAP]}, headers=OPERATOR
            )
            assert reply.status_code == 201
            created.append(reply.json())
        revoked, rotated = created
        team_path = f"/v1/teams/{world.team_dt['id']}"

        async def teams_answers(key: str, status: int) -> bool:
            return (await teams.get(team_path, headers=bearer(key))).status_code == status

        for partner in created:
            await eventually(lambda p=partner: teams_answers(p["api_key"], 200), timeout=30)
            assert (
                await activities.get("/v1/activities", headers=bearer(partner["api_key"]))
            ).status_code == 200

        gone = await activities.delete(f"/v1/partners/{revoked['id']}", headers=OPERATOR)
        assert gone.status_code == 204
        new = await activities.post(f"/v1/partners/{rotated['id']}:rotate-key", headers=OPERATOR)
        assert new.status_code == 200
        new_key = new.json()["api_key"]
        assert new_key != rotated["api_key"]
        # The activities service owns the keys: effective at once.
        for key in (revoked["api_key"], rotated["api_key"]):
            reply = await activities.get("/v1/activities", headers=bearer(key))
            assert reply.status_code == 401, reply.text
            post = await activities.post(
                "/v1/activities",
                json=activity_body(world.team_dt, world.member_dt),
                headers=bearer(key),
            )
            assert post.status_code == 401
        assert (await activities.get("/v1/activities", headers=bearer(new_key))).status_code == 200
        # Teams learns them from `activities.partner.v1` within seconds.
        await eventually(lambda: teams_answers(revoked["api_key"], 401), timeout=30)
        await eventually(lambda: teams_answers(rotated["api_key"], 401), timeout=30)
        await eventually(lambda: teams_answers(new_key, 200), timeout=30)
        # A revoked partner cannot be brought back by rotating its key.
        again = await activities.post(f"/v1/partners/{revoked['id']}:rotate-key", headers=OPERATOR)
        assert again.status_code == 404


def test_api2_operator_token_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(common.auth.hmac, "compare_digest", spy)
    assert common.auth.is_operator_token("test-operator-token", expected="test-operator-token")
    assert not common.auth.is_operator_token("test-operator-tokeN", expected="test-operator-token")
    assert not common.auth.is_operator_token("", expected="test-operator-token")
    assert not common.auth.is_operator_token("x", expected=None)  # unset token: nobody is operator
    assert len(calls) == 2


def test_api2_partner_keys_hashed_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = activities_domain.issue_key()
    # Stored: a public lookup prefix and the SHA-256 of the whole key, never the key.
    assert issued.digest == hashlib.sha256(issued.api_key.encode()).digest()
    secret = issued.api_key.split("_", 2)[2]
    assert issued.lookup in issued.api_key and secret not in issued.lookup
    assert activities_domain.key_lookup(issued.api_key) == issued.lookup
    assert teams_domain.partner_key_lookup(issued.api_key) == issued.lookup
    calls: list[Any] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(activities_domain.hmac, "compare_digest", spy)
    monkeypatch.setattr(teams_domain.hmac, "compare_digest", spy)
    assert activities_domain.key_matches(issued.api_key, issued.digest)
    assert not activities_domain.key_matches(issued.api_key + "x", issued.digest)
    assert teams_domain.partner_key_matches(issued.api_key, key_sha256=issued.digest.hex())
    assert not teams_domain.partner_key_matches(
        "x" + issued.api_key, key_sha256=issued.digest.hex()
    )
    assert len(calls) == 4
    # The comparison is between fixed-length digests: nothing leaks through length either.
    assert all(len(a) == len(b) for a, b in calls)


async def test_api2_only_key_hashes_are_stored(
    stack: Stack, world: World, service_env: dict[str, str]
) -> None:
    engine = create_async_engine(service_env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            stored = [
                " ".join(str(v) for v in row)
                for table in ("activities.partners", "teams.partner_replica")
                for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()
            ]
    finally:
        await engine.dispose()
    assert stored
    for partner in (world.partner_dt, world.partner_hn):
        secret = partner["api_key"].split("_", 2)[2]
        assert not any(secret in row for row in stored)


# ============================================================================ API3


async def test_api3_partners_never_see_phone_numbers(stack: Stack, world: World) -> None:
    phone = world.phones[0]
    async with stack.http("teams") as teams:
        for path in (
            f"/v1/members/{world.member_dt['id']}",
            f"/v1/teams/{world.team_dt['id']}/members",
        ):
            reply = await teams.get(path, headers=world.key_dt)
            assert reply.status_code == 200, reply.text
            assert phone not in reply.text
            assert phone[:3] in reply.text and "*" in reply.text  # masked, e.g. 091*****78
        # The registry's owner (the operator) sees the number it keeps.
        own = await teams.get(f"/v1/members/{world.member_dt['id']}", headers=OPERATOR)
        assert own.json()["phone"] == phone
        # A rejected phone is never echoed in the validation error.
        bad = phone + "123456"  # 16 digits: not a phone number
        reply = await teams.post(
            f"/v1/teams/{world.team_dt['id']}/members",
            json={"full_name": "X", "phone": bad, "joined_on": "2022-04-01"},
            headers=OPERATOR,
        )
        assert reply.status_code == 422 and bad not in reply.text and phone not in reply.text


async def test_api3_household_references_never_returned(stack: Stack, world: World) -> None:
    ref = world.household_refs[0]
    async with stack.http("activities") as client:
        for headers in (OPERATOR, world.key_dt):
            listed = await client.get(
                "/v1/activities", params={"team_id": world.team_dt["id"]}, headers=headers
            )
            assert world.activity_dt in listed.text
            assert ref not in listed.text
            # Neither the reference nor its hash is a field of the answer.
            assert '"household_ref"' not in listed.text
            assert '"household_hash"' not in listed.text
            export = await client.get(
                "/v1/activities:export", params={"team_id": world.team_dt["id"]}, headers=headers
            )
            assert world.activity_dt in export.text and ref not in export.text
        # Invalid events are rejected naming the fields, never echoing the values.
        body = activity_body(world.team_dt, world.member_dt, citizens_reached=-1, extra=ref)
        rejected = await client.post("/v1/activities", json=body, headers=world.key_dt)
        assert rejected.status_code == 422 and ref not in rejected.text
        batch = await client.post(
            "/v1/activities:batch", json={"items": [body]}, headers=world.key_dt
        )
        assert batch.status_code == 200 and ref not in batch.text
        # The same id again with a different payload (a conflict) does not echo either.
        conflict = activity_body(world.team_dt, world.member_dt, id=world.activity_dt)
        reply = await client.post("/v1/activities", json=conflict, headers=world.key_dt)
        assert reply.status_code == 409 and conflict["household_ref"] not in reply.text


async def test_api3_events_carry_no_phone_or_household_reference(
    stack: Stack, world: World, infra: Any
) -> None:
    bootstrap = infra.kafka_bootstrap_servers
    members = await tail_topic(bootstrap, "teams.member.v1")
    ours = [r for r in members if world.member_dt["id"] in headers_and_value(r)]
    assert ours, "the member's event was not found"
    for record in members:
        text_ = headers_and_value(record)
        assert not any(phone in text_ for phone in world.phones)
        assert '"phone"' not in text_
    recorded = await tail_topic(bootstrap, "activities.activity-recorded.v1")
    ours = [r for r in recorded if world.activity_dt in headers_and_value(r)]
    assert ours, "the activity's event was not found"
    event = ActivityRecorded.model_validate_json(ours[0].value)
    # Only the keyed hash travels, so repeat visits match without revealing the household.
    assert (
        event.household_hash
        == hmac.new(
            stack.services["activities"].env["CDT_HOUSEHOLD_HMAC_KEY"].encode(),
            world.household_refs[0].encode(),
            hashlib.sha256,
        ).hexdigest()
    )
    for record in recorded:
        assert not any(ref in headers_and_value(record) for ref in world.household_refs)


# ============================================================================ API4

WRITES = {
    "teams": ("POST", "/v1/teams"),
    "activities": ("POST", "/v1/partners"),
    "scoring": ("PUT", "/v1/targets"),
    "notifications": ("PUT", "/v1/rules"),
}
TOO_LARGE = 2_000_001  # CDT_MAX_BODY_BYTES defaults to 2,000,000


@pytest.mark.parametrize("service", SERVICES)
async def test_api4_bodies_over_the_limit_get_413(stack: Stack, service: str) -> None:
    method, path = WRITES[service]
    payload = b'{"name": "' + b"x" * TOO_LARGE + b'"}'

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    async with stack.http(service) as client:
        for content in (payload, chunked()):
            reply = await client.request(
                method,
                path,
                content=content,
                headers={**OPERATOR, "Content-Type": "application/json"},
            )
            assert reply.status_code == 413, reply.text[:300]
            assert reply.headers["content-type"] == "application/problem+json"
            assert reply.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/healthz")).status_code == 200  # and the service is fine


async def test_api4_batches_over_1000_items_get_413(stack: Stack, world: World) -> None:
    item = activity_body(world.team_dt, world.member_dt)
    items = [{**item, "id": str(uuid.uuid4())} for _ in range(1001)]
    async with stack.http("activities") as client:
        reply = await client.post(
            "/v1/activities:batch", json={"items": items}, headers=world.key_dt
        )
        assert reply.status_code == 413, reply.text[:300]
        listed = await client.get(
            "/v1/activities",
            params={"team_id": world.team_dt["id"], "limit": 1000},
            headers=OPERATOR,
        )
        assert not any(i["id"] in listed.text for i in items[:50])  # nothing was recorded


def fill_path(path: str) -> str:
    return re.sub(
        r"\{(\w+)\}",
        lambda m: str(uuid.uuid4()) if m.group(1).endswith(("_id", "_ref")) else DONG_THAP,
        path,
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_api4_every_page_size_is_capped(stack: Stack, service: str) -> None:
    async with stack.http(service) as client:
        document = (await client.get("/openapi.json")).json()
        capped = 0
        for path, item in document["paths"].items():
            operation = item.get("get")
            if operation is None:
                continue
            for parameter in operation.get("parameters", []):
                if parameter["name"] != "limit":
                    continue
                schema = parameter["schema"]
                assert schema.get("maximum", 10**9) <= 1000, (path, schema)
                assert schema.get("minimum", 0) >= 1, (path, schema)
                for value in (schema["maximum"] + 1, 10**9, 0, -1):
                    reply = await client.get(
                        fill_path(path), params={"limit": value}, headers=OPERATOR
                    )
                    assert reply.status_code == 422, (path, value, reply.text[:200])
                    fields = {e["field"] for e in reply.json()["errors"]}
                    assert "query.limit" in fields, (path, value, fields)
                capped += 1
        assert capped
        print(f"\n[api4] {service}: {capped} paginated operations capped")


async def test_api4_partner_rate_limit_answers_429_with_retry_after(
    stack: Stack, world: World
) -> None:
    async with stack.http("activities") as client:
        slow = await client.post(
            "/v1/partners",
            json={"name": "slow", "provinces": [DONG_THAP], "rate_limit_per_second": 2},
            headers=OPERATOR,
        )
        assert slow.status_code == 201
        key = bearer(slow.json()["api_key"])
        replies = await asyncio.gather(
            *(client.get("/v1/activities", params={"limit": 1}, headers=key) for _ in range(8))
        )
        codes = [r.status_code for r in replies]
        assert codes.count(200) >= 1 and codes.count(429) >= 4, codes
        limited = next(r for r in replies if r.status_code == 429)
        assert limited.headers["content-type"] == "application/problem+json"
        wait = int(limited.headers["retry-after"])
        assert 1 <= wait <= 2
        # Other partners are not affected by this one's burst.
        assert (await client.get("/v1/activities", headers=world.key_dt)).status_code == 200
        await asyncio.sleep(wait + 0.1)
        assert (
            await client.get("/v1/activities", params={"limit": 1}, headers=key)
        ).status_code == 200


async def test_api4_partner_reads_of_the_registry_are_rate_limited(
    stack: Stack, world: World
) -> None:
    async with stack.http("activities") as activities, stack.http("teams") as teams:
        created = await activities.post(
            "/v1/partners", json={"name": "burst", "provinces": [DONG_THAP]}, headers=OPERATOR
        )
        key = bearer(created.json()["api_key"])
        path = f"/v1/teams/{world.team_dt['id']}"

        async def known() -> bool:
            return (await teams.get(path, headers=key)).status_code == 200

        await eventually(known, timeout=30, what="partner replicated to teams")
        await asyncio.sleep(1.1)  # a full bucket (25 requests/s in this stack)
        replies = await asyncio.gather(*(teams.get(path, headers=key) for _ in range(60)))
        codes = [r.status_code for r in replies]
        assert codes.count(429) >= 5 and codes.count(200) >= 20, codes
        limited = next(r for r in replies if r.status_code == 429)
        assert limited.headers["retry-after"] == "1"
        assert (await teams.get(path, headers=OPERATOR)).status_code == 200  # operator unlimited


# ============================================================================ API5

# The only writes a partner key may make; everything else that changes state is the operator's.
PARTNER_WRITES = {
    ("activities", "POST", "/v1/activities"),
    ("activities", "POST", "/v1/activities:batch"),
    ("activities", "POST", "/v1/activities/{activity_id}:void"),
}
# The local identity provider's own doors: a one-time invitation code or a password is the
# credential (failed logins rate-limited).
CREDENTIAL_WRITES = {
    ("teams", "POST", "/v1/invitations:redeem"),
    ("teams", "POST", "/v1/auth/token"),
}
# Open to anyone: operations endpoints and published scores (aggregates, no personal data).
PUBLIC_PATHS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/schemas/{ce_type}.json",
    "/docs",
    "/docs/oauth2-redirect",
    # what every verifier of access tokens fetches: public keys and disabled subjects' ids
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/v1/auth/disabled-subjects",
    "/v1/invitations:redeem",
    "/v1/auth/token",
}
PUBLIC_SERVICES = {"scoring"}


def _calls(dependant: Any) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def classify(dependant: Any) -> str:
    calls = set(_calls(dependant))
    if authorize in calls:  # the operator, or a person whose roles permit it (the matrix)
        return "operator"
    names = {getattr(c, "__name__", "") for c in calls}
    if names & {"get_reader", "authenticate", "authenticate_ingest"}:
        return "partner"
    return "public"


def test_api5_every_route_is_classified(apps: dict[str, FastAPI]) -> None:
    """A new route fails here until it is operator-only, partner-scoped or knowingly public."""
    counts: dict[str, int] = {}
    for service, app in apps.items():
        for method, path, dependant in api_routes(app):
            kind = classify(dependant)
            counts[kind] = counts.get(kind, 0) + 1
            if method != "GET":
                assert kind == "operator" or (service, method, path) in (
                    PARTNER_WRITES | CREDENTIAL_WRITES
                ), f"{service} {method} {path} is a write open to non-operators"
            if kind == "public":
                assert path in PUBLIC_PATHS or service in PUBLIC_SERVICES, (service, path)
    assert counts["operator"] > 30, counts


@pytest.mark.parametrize("service", SERVICES)
async def test_api5_partner_keys_never_pass_operator_routes(
    stack: Stack, world: World, apps: dict[str, FastAPI], service: str
) -> None:
    checked = 0
    async with stack.http(service) as client:
        for method, path, dependant in api_routes(apps[service]):
            if classify(dependant) != "operator":
                continue
            url = fill_path(path)
            anonymous = await client.request(method, url, json={})
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            for headers in (world.key_dt, world.key_hn, {"Authorization": "Bearer nope"}):
                reply = await client.request(method, url, json={}, headers=headers)
                assert reply.status_code in (401, 403), (method, path, reply.text)
            checked += 1
    assert checked
    print(f"\n[api5] {service}: {checked} operator or role operations refuse partner keys")


async def test_api5_operator_cannot_post_as_a_partner(stack: Stack, world: World) -> None:
    """Activities are attributed to a partner: the operator token cannot create any."""
    async with stack.http("activities") as client:
        body = activity_body(world.team_dt, world.member_dt)
        assert (await client.post("/v1/activities", json=body, headers=OPERATOR)).status_code == 403
        batch = await client.post("/v1/activities:batch", json=[body], headers=OPERATOR)
        assert batch.status_code == 403


# ============================================================================ API7

BLOCKED_URLS = [
    "http://127.0.0.1:8004/v1/rules",
    "http://localhost/",
    "http://127.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0.0.0.0/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "https://user:password@hooks.example.org/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://hooks.example.org/",
    "http:///no-host",
    "http://hooks.example.org:99999/",
    "https://hooks.invalid/",  # does not resolve
]


async def test_api7_webhook_urls_to_internal_targets_are_refused(stack: Stack) -> None:
    async with stack.http("notifications") as client:
        for url in BLOCKED_URLS:
            reply = await client.post(
                "/v1/subscriptions",
                json={"url": url, "scope": DONG_THAP, "alert_types": ["target_reached"]},
                headers=OPERATOR,
            )
            assert reply.status_code == 422, (url, reply.text)
            assert reply.json()["errors"][0]["field"] in ("body.url", "url"), reply.text
        listed = await client.get("/v1/subscriptions", params={"limit": 500}, headers=OPERATOR)
        assert not any(s["url"] in BLOCKED_URLS for s in listed.json()["items"])


@pytest_asyncio.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Name → addresses, answered instead of the system resolver."""
    answers: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        import socket

        if host not in answers:
            raise socket.gaierror("unknown name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


async def test_api7_names_resolving_to_private_addresses_are_refused(
    fake_dns: dict[str, list[str]],
) -> None:
    fake_dns["hooks.example.org"] = ["93.184.215.14"]
    fake_dns["internal.example.org"] = ["10.1.2.3"]
    fake_dns["metadata.example.org"] = ["169.254.169.254"]
    fake_dns["mixed.example.org"] = ["93.184.215.14", "127.0.0.1"]  # one bad answer is enough
    await check_webhook_url("https://hooks.example.org/x", allow_private=False, require_https=True)
    for host in ("internal", "metadata", "mixed"):
        with pytest.raises(WebhookUrlError):
            await check_webhook_url(
                f"https://{host}.example.org/x", allow_private=False, require_https=True
            )
    with pytest.raises(WebhookUrlError):  # plain http is refused in prod
        await check_webhook_url(
            "http://hooks.example.org/x", allow_private=False, require_https=True
        )


def delivery_row(url: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "url": url,
        "body": '{"alert": 1}',
        "secret": "whsec_test",
        "traceparent": None,
        "attempts": 1,
    }


async def test_api7_rebinding_is_checked_again_at_every_delivery(
    fake_dns: dict[str, list[str]],
) -> None:
    """Public when subscribed, private when delivered (DNS rebinding): the delivery is blocked."""
    fake_dns["rebind.example.org"] = ["93.184.215.14"]
    await check_webhook_url("https://rebind.example.org/", allow_private=False, require_https=True)
    fake_dns["rebind.example.org"] = ["127.0.0.1"]
    contacted: list[str] = []
    transport = httpx.MockTransport(lambda r: contacted.append(str(r.url)) or httpx.Response(200))
    worker = DeliveryWorker(
        sessions=None,  # type: ignore[arg-type]
        settings=NotificationsSettings(cdt_env="prod"),  # type: ignore[call-arg]
        stopping=asyncio.Event(),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        outcome, status, error = await worker._post(
            client, delivery_row("https://rebind.example.org/")
        )
    assert outcome == "blocked" and status is None and "private" in (error or "")
    assert contacted == []


async def test_api7_redirects_are_never_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    real_client = httpx.AsyncClient

    def recording_client(**kwargs: Any) -> httpx.AsyncClient:
        made.append(kwargs)
        return real_client(**kwargs)

    monkeypatch.setattr(delivery_module.httpx, "AsyncClient", recording_client)
    settings = NotificationsSettings(CDT_WEBHOOK_ALLOW_PRIVATE=True)  # type: ignore[call-arg]
    stopping = asyncio.Event()
    stopping.set()
    worker = DeliveryWorker(sessions=None, settings=settings, stopping=stopping)  # type: ignore[arg-type]
    await worker.run()  # builds its client, sees it must stop, returns
    assert made and made[0]["follow_redirects"] is False
    monkeypatch.undo()

    contacted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        contacted.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    async with httpx.AsyncClient(**made[0], transport=httpx.MockTransport(handler)) as client:
        outcome, status, _ = await worker._post(client, delivery_row("http://hooks.test/"))
    assert (outcome, status) == ("http_error", 302)
    assert contacted == ["http://hooks.test/"]


# ============================================================================ API8

EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.mark.parametrize("service", SERVICES)
async def test_api8_security_headers_on_every_kind_of_response(stack: Stack, service: str) -> None:
    method, path = WRITES[service]
    async with stack.http(service) as client:
        replies = [
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/metrics"),
            await client.get("/openapi.json"),
            await client.get("/no-such-route"),
            await client.request(method, path),  # 401
            await client.request(method, path, content=b"{not json", headers=OPERATOR),
            await client.request(method, path, json={"zz": 1}, headers=OPERATOR),  # 422
            await client.request("TRACE", "/healthz"),  # 405
            await client.get("/healthz", headers={"Origin": "https://evil.example"}),
        ]
        statuses = {r.status_code for r in replies}
        assert {200, 401, 404, 405, 422} <= statuses, statuses
        for reply in replies:
            for name, value in EXPECTED_HEADERS.items():
                assert reply.headers.get(name) == value, (reply.request.url, name, reply.headers)
            assert "server" not in reply.headers, reply.headers  # no product or version banner
            assert "x-powered-by" not in reply.headers
            assert "access-control-allow-origin" not in reply.headers  # no CORS for browsers
        docs = await client.get("/docs")
        assert docs.status_code == 200 and docs.headers["x-content-type-options"] == "nosniff"


async def test_api8_docs_hidden_in_prod(service_env: dict[str, str]) -> None:
    for name, app in built_apps(service_env, cdt_env="prod").items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
                assert (await client.get(path)).status_code == 404, (name, path)
            assert (await client.get("/healthz")).status_code == 200
            # the machine-readable contract stays published
            assert (await client.get("/openapi.json")).status_code == 200, name
    for name, app in built_apps(service_env, cdt_env="test").items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/openapi.json")).status_code == 200, name
            assert (await client.get("/redoc")).status_code == 404, name


async def test_api8_unexpected_errors_reveal_nothing(
    service_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from common.app import create_app
    from teams import bootstrap
    from teams.settings import TeamsSettings

    secret = "db-password-" + uuid.uuid4().hex
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> None:
        raise RuntimeError(f"connection to postgresql://cdt:{secret}@db failed")

    # Named apart from the four services: its /boom route is in no permission matrix.
    runtime = bootstrap.build_runtime(
        TeamsSettings(  # type: ignore[call-arg]
            database_url=service_env["DATABASE_URL"],
            CDT_TRACES_EXPORTER="none",
            service_name="boom",
        )
    )
    app = create_app(runtime=runtime, routers=[boom], title="t", description="t")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        reply = await client.get("/boom", headers={"Accept-Language": "en"})
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json() == {
        "type": "https://cdt.gov.vn/problems/internal-server-error",
        "title": "Internal Server Error",
        "status": 500,
        "instance": "/boom",
    }
    for leak in (secret, "Traceback", "RuntimeError", ".py", "postgresql://"):
        assert leak not in reply.text
    assert reply.headers["x-content-type-options"] == "nosniff"
    await runtime.engine.dispose()


async def test_api8_errors_do_not_echo_credentials(stack: Stack, world: World) -> None:
    forged = world.partner_dt["api_key"][:-4] + "abcd"
    for service in SERVICES:
        async with stack.http(service) as client:
            method, path = WRITES[service]
            for token in (forged, "test-operator-token-x"):
                reply = await client.request(method, path, json={}, headers=bearer(token))
                assert reply.status_code in (401, 403)
                assert token not in reply.text and token not in str(reply.headers)


# ============================================================================ logs (API3, API8)


async def test_api3_api8_no_secret_or_personal_data_in_logs_or_traces(
    stack: Stack, world: World
) -> None:
    """Runs last in this module: everything above (and the fuzzing) has written its logs."""
    async with stack.http("notifications") as client:
        created = await client.get("/v1/subscriptions", headers=OPERATOR)
        assert created.status_code == 200
    await asyncio.sleep(1.5)  # let the span exporters flush their batches
    logs, traces = stack.logs(), stack.traces()
    assert logs.count("\n") > 20 and traces
    for secret in world.secrets():
        assert secret not in logs, f"{secret[:6]}… found in a log line"
        assert secret not in traces, f"{secret[:6]}… found in a span"
    # Webhook secrets: the one a test chose, and any the service generated ("whsec_" and 43
    # random characters). Not the bare prefix: Hypothesis draws string constants from the code
    # it imports, so the fuzzer sends "whsec_" in query strings, which spans rightly record.
    for written in (logs, traces):
        assert "whsec_test" not in written
        assert not re.search(r"whsec_[A-Za-z0-9_-]{20,}", written), "a webhook secret leaked"
    for line in logs.splitlines():
        assert not re.search(r"(?i)authorization\s*[:=]\s*bearer\s+\w", line), line
