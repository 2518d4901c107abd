"""The texts people read, in Vietnamese unless they ask for English: problems, the inbox's alerts
(by `Accept-Language`) and webhook bodies (by the subscription's `language`). Codes, types and
field names read the same in both."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from common.contracts.scoring import ScoreComponent
from notifications import bootstrap
from notifications.settings import NotificationsSettings
from tests.helpers import OPERATOR, eventually, running
from tests.integration.notifications.support import Receiver, answer, new_code, score

REACHED = [ScoreComponent(criterion="reach", points=25, max_points=25, value=1.2, target=1.0)]
ENGLISH = {**OPERATOR, "Accept-Language": "en-GB,en;q=0.9,vi;q=0.5"}


@pytest_asyncio.fixture(scope="module")
async def service(apply_env: None) -> AsyncIterator[httpx.AsyncClient]:
    settings = NotificationsSettings(CDT_WEBHOOK_ALLOW_PRIVATE=True, CDT_WEBHOOK_POLL_SECONDS=0.05)
    runtime = bootstrap.build_runtime(settings)
    async with running(runtime, bootstrap.build_app(runtime)) as client:
        yield client


async def test_a_problem_is_in_vietnamese_unless_english_is_asked_for(service) -> None:  # type: ignore[no-untyped-def]
    path = f"/v1/alerts/{uuid.uuid4()}"
    vietnamese = await service.get(path, headers=OPERATOR)
    english = await service.get(path, headers=ENGLISH)
    assert vietnamese.status_code == english.status_code == 404
    assert vietnamese.headers["content-language"] == "vi"
    assert english.headers["content-language"] == "en"
    vi, en = vietnamese.json(), english.json()
    assert vi["title"] == "Không tìm thấy" and vi["detail"].startswith("Không tìm thấy cảnh báo")
    assert en["title"] == "Not Found" and en["detail"].startswith("No alert")
    assert vi["type"] == en["type"] == "https://cdt.gov.vn/problems/not-found"

    invalid = {"url": "https://x.example.org", "scope": "82", "alert_types": ["nope"]}
    refused = await service.post("/v1/subscriptions", json=invalid, headers=OPERATOR)
    assert refused.status_code == 422
    assert refused.json()["title"] == "Dữ liệu không hợp lệ"
    assert refused.json()["detail"] == "Trường không hợp lệ: body.alert_types.0"
    assert refused.json()["type"] == "https://cdt.gov.vn/problems/validation-failed"
    unknown_language = await service.get(path, headers={**OPERATOR, "Accept-Language": "fr"})
    assert unknown_language.json()["title"] == "Không tìm thấy"  # neither: Vietnamese


async def test_an_alert_reads_in_the_inbox_in_either_language(service, events) -> None:  # type: ignore[no-untyped-def]
    province = new_code()
    await events.send(score(subject_id=province, version=1, value=80))
    await events.send(score(subject_id=province, version=2, value=60))  # -20 points

    async def listed(headers: dict[str, str]) -> list[dict[str, Any]]:
        params = {"unit": province, "type": "score_drop"}
        reply = await service.get("/v1/alerts", params=params, headers=headers)
        assert reply.status_code == 200, reply.text
        return list(reply.json()["items"])

    [vi] = await eventually(lambda: listed(OPERATOR), what="the score_drop alert")
    [en] = await listed(ENGLISH)
    assert vi["title"] == "Điểm giảm" and en["title"] == "Score dropped"
    assert vi["summary"] == "Điểm của tỉnh kỳ 2026-11 giảm 20 điểm (80 → 60)."
    assert en["summary"] == "The province score for 2026-11 fell by 20 points (80 → 60)."
    # one alert: everything but its human text is the same
    texts = ("title", "summary")
    assert {k: v for k, v in vi.items() if k not in texts} == {
        k: v for k, v in en.items() if k not in texts
    }
    one = await service.get(f"/v1/alerts/{vi['id']}", headers=ENGLISH)
    assert one.json()["summary"] == en["summary"]


async def test_a_webhook_is_posted_in_its_subscription_language(service, events) -> None:  # type: ignore[no-untyped-def]
    province = new_code()
    async with Receiver(answer()) as vietnamese, Receiver(answer()) as english:
        subscriptions = []
        for receiver, language in ((vietnamese, None), (english, "en")):
            body = {"url": receiver.url, "scope": province, "alert_types": ["target_reached"]}
            if language:
                body["language"] = language
            reply = await service.post("/v1/subscriptions", json=body, headers=OPERATOR)
            assert reply.status_code == 201, reply.text
            subscriptions.append(reply.json())
        assert [s["language"] for s in subscriptions] == ["vi", "en"]
        await events.send(score(subject_id=province, version=1, value=90, components=REACHED))

        async def both_posted() -> bool:
            return bool(vietnamese.requests and english.requests)

        await eventually(both_posted, what="both webhooks posted", timeout=30)
        vi = json.loads(vietnamese.requests[0].body)
        en = json.loads(english.requests[0].body)
    assert vi["language"] == "vi" and en["language"] == "en"
    assert vi["data"]["title"] == "Đạt chỉ tiêu" and en["data"]["title"] == "Target reached"
    assert vi["data"]["summary"] == "Chỉ tiêu reach kỳ 2026-11 của tỉnh đã đạt: 1.2/1."
    assert en["data"]["summary"] == "The province reached its reach target for 2026-11: 1.2 of 1."
    texts = ("title", "summary")
    assert vi["type"] == en["type"]
    assert {k: v for k, v in vi["data"].items() if k not in texts} == {
        k: v for k, v in en["data"].items() if k not in texts
    }
    listed = await service.get("/v1/subscriptions", params={"limit": 500}, headers=OPERATOR)
    languages = {s["id"]: s["language"] for s in listed.json()["items"]}
    assert [languages[s["id"]] for s in subscriptions] == ["vi", "en"]
