"""Old and new units: the 63-province units imported in one call with their crosswalk, learned
by scoring from the teams topics, and the score of the area that was an old province.

Old Hà Giang (L-02) merged into Tuyên Quang (08) on 1 July 2025: its capital's wards became
Phường Hà Giang 1 (00694) and Phường Hà Giang 2 (00691); old Tuyên Quang's Phường Minh Xuân
(02215) is in the same new province but not in old Hà Giang's area.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import text

from common.runtime import ServiceRuntime
from scoring import adapters, domain
from teams import bootstrap as teams_bootstrap
from teams.settings import TeamsSettings
from tests.helpers import OPERATOR, eventually, running
from tests.integration.scoring.conftest import produce, wait_processed
from tests.unit.scoring import factory

LEGACY = {"source": "vietnamadminunits-legacy"}
LEGACY_UNITS = 63 + 696 + 10_035
HA_GIANG_1, HA_GIANG_2, MINH_XUAN = "00694", "00691", "02215"
PERIOD = "2026"


@pytest_asyncio.fixture(scope="module")
async def teams(apply_env: None) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    runtime = teams_bootstrap.build_runtime(TeamsSettings())
    async with running(runtime, teams_bootstrap.build_app(runtime)) as client:
        reply = await client.post(
            "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
        )
        assert reply.status_code == 200, reply.text
        yield client, runtime


@pytest_asyncio.fixture(scope="module")
async def imported(teams: Any) -> dict[str, Any]:
    client, _ = teams
    reply = await client.post("/v1/admin-units:import", json=LEGACY, headers=OPERATOR)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def _legacy_counts(runtime: ServiceRuntime) -> dict[str, int]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT level, count(*) FROM teams.admin_units"
                " WHERE source = 'vietnamadminunits-legacy' GROUP BY level"
            )
        )
        return {level: int(n) for level, n in rows}


async def _registry_state(runtime: ServiceRuntime) -> tuple[int, int, int]:
    """Crosswalk rows, the sum of legacy unit versions, and events about legacy units."""
    async with runtime.sessions() as session:
        crosswalk = await session.scalar(text("SELECT count(*) FROM teams.unit_crosswalk"))
        versions = await session.scalar(
            text("SELECT sum(version) FROM teams.admin_units WHERE code LIKE 'L-%'")
        )
        outbox = await session.scalar(
            text("SELECT count(*) FROM teams.outbox WHERE aggregateid LIKE 'L-%'")
        )
    return int(crosswalk or 0), int(versions or 0), int(outbox or 0)


async def test_the_legacy_units_import_in_one_call_and_once(teams: Any, imported: Any) -> None:
    client, runtime = teams
    assert imported["source"] == "vietnamadminunits-legacy" and imported["version"] == "1.0.4"
    assert (imported["rows"], imported["created"], imported["rejected"]) == (
        LEGACY_UNITS,
        LEGACY_UNITS,
        0,
    )
    assert await _legacy_counts(runtime) == {"province": 63, "district": 696, "commune": 10_035}

    ha_giang = (await client.get("/v1/admin-units/L-02", headers=OPERATOR)).json()
    assert ha_giang["name"] == "Tỉnh Hà Giang" and ha_giang["valid_to"] == "2025-06-30"
    assert ha_giang["replaced_by"] == ["08"] and ha_giang["level"] == "province"
    split = (await client.get("/v1/admin-units/L-00688", headers=OPERATOR)).json()
    assert split["path"] == {
        "province": "L-02",
        "district": "L-024",
        "commune": "L-00688",
        "village": None,
    }
    assert split["replaced_by"] == [HA_GIANG_2, HA_GIANG_1]  # the default successor first
    walk = (
        await client.get("/v1/admin-units:crosswalk", params={"code": "L-00688"}, headers=OPERATOR)
    ).json()["items"]
    assert {(w["new_code"], w["change"], w["new_parent_code"]) for w in walk} == {
        (HA_GIANG_2, "split", "08"),
        (HA_GIANG_1, "split", "08"),
    }
    # A retired unit is not current: it has no coverage among the new province's communes.
    current = (await client.get("/v1/admin-units/08/coverage", headers=OPERATOR)).json()
    assert all(not c["code"].startswith("L-") for c in current["children"])

    before = await _registry_state(runtime)
    again = await client.post("/v1/admin-units:import", json=LEGACY, headers=OPERATOR)
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["updated"]) == (0, 0)
    assert again.json()["unchanged"] == LEGACY_UNITS
    assert await _registry_state(runtime) == before


async def _scoring_knows_the_legacy_units(runtime: ServiceRuntime) -> None:
    async def learned() -> bool:
        async with runtime.sessions() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM scoring.admin_units WHERE code LIKE 'L-%'")
            )
        return count == LEGACY_UNITS

    await eventually(learned, timeout=180, interval=1.0, what="scoring learned the legacy units")
    async with runtime.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT change, replaced_by, path FROM scoring.admin_units"
                    " WHERE code = 'L-00688'"
                )
            )
        ).one()
    # Retired: not counted among the current units, and moving no history.
    assert (row.change, row.replaced_by) == ("retired", [HA_GIANG_2, HA_GIANG_1])
    assert row.path["province"] == "L-02"


async def test_the_score_of_the_area_that_was_old_ha_giang(
    teams: Any, imported: Any, scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    await _scoring_knows_the_legacy_units(runtime)
    placed = [
        (HA_GIANG_1, 40, 3),
        (HA_GIANG_1, 25, 2),
        (HA_GIANG_2, 10, 5),
        (MINH_XUAN, 1000, 100),  # old Tuyên Quang: not in old Hà Giang's area
    ]
    activities = [
        factory.activity(
            team_id=uuid.uuid4(),
            unit_path=factory.path("08", commune),
            citizens_reached=citizens,
            outcomes={"app_installs": installs},
        )
        for commune, citizens, installs in placed
    ]
    await wait_processed(runtime, await produce(producer, *activities), timeout=60)

    reply = await client.get("/v1/reports/legacy-province/L-02", params={"period": PERIOD})
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["old_province"] == {"code": "L-02", "name": "Tỉnh Hà Giang"}
    communes = {c["code"]: c for c in report["communes"]}
    assert {HA_GIANG_1, HA_GIANG_2} <= set(communes) and MINH_XUAN not in communes
    assert communes[HA_GIANG_1]["name"] == "Phường Hà Giang 1"
    assert all(c["province_code"] == "08" for c in communes.values())
    assert len(communes) == 73
    assert report["indicators"]["activities"] == 3
    assert report["indicators"]["app_installs"] == 10
    assert report["indicators"]["citizens_reached"] == 75

    async with runtime.sessions() as session:
        active = await adapters.active_criteria_set(session)
    expected = domain.score(active, report["indicators"], period=PERIOD, targets={})
    assert report["criteria_set"] == active.version
    assert (report["score"], report["max_score"]) == (expected.score, expected.max_score)
    assert report["score"] > 0

    tuyen_quang = (
        await client.get("/v1/reports/legacy-province/L-08", params={"period": PERIOD})
    ).json()
    assert MINH_XUAN in {c["code"] for c in tuyen_quang["communes"]}
    assert tuyen_quang["indicators"]["app_installs"] == 100

    as_csv = await client.get(
        "/v1/reports/legacy-province/L-02", params={"period": PERIOD, "format": "csv"}
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert len(as_csv.text.strip().splitlines()) == 1 + 73 + 1


async def test_a_commune_two_old_provinces_formed_counts_in_one_of_them(
    imported: Any, scoring: Any
) -> None:
    client, runtime = scoring
    await _scoring_knows_the_legacy_units(runtime)
    # Phường Tân Ninh (25459): old Tây Ninh's wards whole and a part of old Long An's Phường 4;
    # Phường Long An (27694): old Long An's wards whole and a part of old Tây Ninh's Phường 4.
    areas = {}
    for old in ("L-72", "L-80"):
        reply = await client.get(f"/v1/reports/legacy-province/{old}", params={"period": PERIOD})
        assert reply.status_code == 200, reply.text
        areas[old] = {c["code"] for c in reply.json()["communes"]}
    assert "25459" in areas["L-72"] and "25459" not in areas["L-80"]
    assert "27694" in areas["L-80"] and "27694" not in areas["L-72"]


async def test_unknown_old_province_and_bad_period(imported: Any, scoring: Any) -> None:
    client, runtime = scoring
    await _scoring_knows_the_legacy_units(runtime)
    for code in ("L-99", "02", "XX"):
        reply = await client.get(f"/v1/reports/legacy-province/{code}", params={"period": PERIOD})
        assert reply.status_code == 404, (code, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["status"] == 404
    for period in ("2026-13", "last year", "2026-Q5"):
        reply = await client.get("/v1/reports/legacy-province/L-02", params={"period": period})
        assert reply.status_code == 422, (period, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
