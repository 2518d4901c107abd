"""Property-based fuzzing of every service's OpenAPI document with schemathesis.

Each operation gets schema-valid (positive) and schema-violating (negative) requests generated
from its own OpenAPI description, authenticated as the operator, except the partner ingest
routes, which get a real partner key. Path references and team ids point, some of the time, at a
team and member that exist (and that the activities replica knows), so valid-ish requests reach
the deep code paths instead of stopping at "not found"; a valid request starts at the first page
(a generated cursor is a forged one).

Checks: all of schemathesis's (no 5xx; status codes, content types, headers and bodies as
documented; schema-valid requests accepted, schema-violating ones rejected; credentials
enforced where the document declares them; the stateful ones have no recorded history here and
pass). Two narrowings, each listed below with its reason: one check is left out of one operation
(`EXCLUDED`), and a 422 is the right answer to schema-valid data that breaks a rule JSON Schema
cannot state (a unit that must exist, a date that must not be in the future...) only where
`SEMANTIC_REJECTIONS` names the fields of that rule.

Bounded: `CDT_FUZZ_EXAMPLES` (default 10) examples per operation and mode, generation
derandomised so CI runs are reproducible (raise the number, or set `CDT_FUZZ_RANDOM=1`, to
explore further locally).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.helpers import OPERATOR
from tests.security.conftest import (
    MY_THO,
    SERVICES,
    Stack,
    World,
    activity_body,
    post_until_known,
    random_phone,
    tag,
)

MAX_EXAMPLES = int(os.environ.get("CDT_FUZZ_EXAMPLES", "10"))
DERANDOMIZE = os.environ.get("CDT_FUZZ_RANDOM") != "1"
PARTNER_OPERATIONS = {("POST", "/v1/activities"), ("POST", "/v1/activities:batch")}
# Operations whose every call does heavy, whole-database work: called once by the OWASP tests.
SKIPPED = {("POST", "/v1/recompute"), ("POST", "/v1/admin-units:import")}
load_all_checks()
# Every check schemathesis has: no 5xx, status codes, content types, headers and bodies as
# documented, schema-valid data accepted, schema-violating data rejected, auth enforced, ...
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]
# The one check left out of one operation: the batch answers 200 with a result per item, an
# invalid item `rejected` among them (README, "Public contract"), so a batch holding a
# schema-violating item is rightly not rejected as a whole.
EXCLUDED: dict[tuple[str, str], list[Any]] = {
    ("POST", "/v1/activities:batch"): [negative_data_rejection],
}
# Rules JSON Schema cannot state, by operation: a 422 naming only these fields (or, without
# `errors`, this `reason` or title) is the documented answer to schema-valid data that breaks
# them. Any other 422 to schema-valid data still fails `positive_data_acceptance`.
SEMANTIC_REJECTIONS: dict[tuple[str, str], set[str]] = {
    # the unit referred to exists (and sits one level above); valid_to not before valid_from
    ("POST", "/v1/admin-units"): {"parent_code", "valid_to"},
    ("POST", "/v1/teams"): {"unit_code"},
    ("PATCH", "/v1/teams/{team_ref}"): {"unit_code", "dissolved_on"},
    ("POST", "/v1/teams/{team_ref}:dissolve"): {"dissolved_on"},  # not before established_on
    ("POST", "/v1/evaluation-rounds"): {"unit_code", "criteria_set"},
    # re-organisations: units that exist, not merged or split into themselves, no cycle
    ("POST", "/v1/admin-units:merge"): {"into", "sources"},
    ("POST", "/v1/admin-units/{code}:split"): {"into", "code", "assign"},
    ("POST", "/v1/admin-units/{code}:reparent"): {"parent_code", "code"},
    # dates against today or each other
    ("POST", "/v1/members/{member_ref}/trainings"): {"completed_on"},
    ("POST", "/v1/teams/{team_ref}/members"): {"left_on"},
    ("PATCH", "/v1/members/{member_ref}"): {"left_on"},
    ("POST", "/v1/campaigns"): {"body"},  # end_date not before start_date
    # criteria points add up to 100, ids unique
    ("POST", "/v1/criteria-sets"): {"body"},
    # a campaign goal ends after it starts
    ("PUT", "/v1/rules"): {"params"},
    # the webhook's host resolves to public addresses (a DNS fact, not a schema one)
    ("POST", "/v1/subscriptions"): {"url"},
    # an event's team and member are known (replicated) and it falls in the accepted window
    ("POST", "/v1/activities"): {
        "team_unknown",
        "team_unit_unknown",
        "team_dissolved",
        "occurred_in_future",
        "before_team_established",
        "member_unknown",
        "member_not_in_team",
        "member_not_in_team_at_occurred_at",
    },
    # a scoped role needs its unit, a nationwide one has none; an account needs a role once
    ("POST", "/v1/accounts"): {"roles"},
    # CSV and NDJSON bodies are strings to JSON Schema: their columns are checked on reading
    ("POST", "/v1/teams:bulk"): {"Malformed body"},
    ("POST", "/v1/members:bulk"): {"Malformed body"},
}


def is_semantic_rejection(key: tuple[str, str], response: Any) -> bool:
    allowed = SEMANTIC_REJECTIONS.get(key)
    if not allowed or response.status_code != 422:
        return False
    problem = response.json()
    fields = [error["field"] for error in problem.get("errors", [])]
    if not fields:
        return problem.get("reason", problem.get("title")) in allowed
    names = [field.removeprefix("body.") for field in fields]
    return all(any(n == a or n.startswith(f"{a}.") for a in allowed) for n in names)


def drops_credentials(case: Any) -> bool:
    """A negative case whose violation is a missing `Authorization` (the documents declare the
    bearer schemes): it is sent without the credentials the other cases get."""
    meta = case.meta
    return meta.generation.mode.is_negative and any(
        mutation.parameter_location == ParameterLocation.HEADER
        and (mutation.parameter or "").lower() == "authorization"
        for mutation in getattr(meta.phase.data, "mutations", ())
    )


def without_credentials(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() != "authorization"}


def fuzz_operation(
    operation: Any,
    key: tuple[str, str],
    *,
    session: requests.Session,
    headers: dict[str, str],
    tweak: Callable[[Any, random.Random], None],
    statuses: Counter[int],
) -> list[str]:
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            strategies.append(operation.as_strategy(generation_mode=mode))
        except Exception:  # nothing to negate in this operation
            continue
    failures: dict[str, str] = {}  # the first example of each kind of failure

    @settings(
        max_examples=MAX_EXAMPLES * len(strategies),
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        phases=[Phase.explicit, Phase.generate],  # report, don't spend minutes shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), seed=st.integers(0, 2**32 - 1))
    def run(case: Any, seed: int) -> None:
        tweak(case, random.Random(seed))
        sent = without_credentials(headers) if drops_credentials(case) else headers
        response = case.call(session=session, headers=sent, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(
                response,
                checks=ALL_CHECKS,
                excluded_checks=EXCLUDED.get(key, []),
                headers=sent,
                transport_kwargs={"session": session, "headers": sent, "timeout": 30},
            )
        except FailureGroup as group:  # collect, so one run reports every failing operation
            for failure in group.exceptions:
                if isinstance(failure, RejectedPositiveData) and is_semantic_rejection(
                    key, response
                ):
                    continue
                failures.setdefault(failure.title, f"{operation.label}: {group}")

    run()
    return list(failures.values())


@pytest.fixture(scope="module")
async def fuzz_targets(stack: Stack, world: World) -> dict[str, str]:
    """A team and member of their own, so fuzzed PATCHes cannot disturb the other tests' world."""
    async with stack.http("teams") as teams, stack.http("activities") as activities:
        team = await teams.post(
            "/v1/teams",
            json={"code": f"FUZZ-{tag()}", "name": "Tổ fuzz", "unit_code": MY_THO},
            headers=OPERATOR,
        )
        assert team.status_code == 201, team.text
        member = await teams.post(
            f"/v1/teams/{team.json()['id']}/members",
            json={"full_name": "Fuzz", "phone": random_phone(), "joined_on": "2022-04-01"},
            headers=OPERATOR,
        )
        assert member.status_code == 201, member.text
        posted = await post_until_known(
            activities, activity_body(team.json(), member.json()), world.key_dt
        )
        assert posted.status_code == 201, posted.text
    return {"team": team.json()["id"], "member": member.json()["id"]}


def make_tweak(targets: dict[str, str]) -> Callable[[Any, random.Random], None]:
    def point_at_known(item: Any, rng: random.Random) -> None:
        if isinstance(item, dict) and rng.random() < 0.7:
            if "team_id" in item:
                item["team_id"] = targets["team"]
            if "member_id" in item:
                item["member_id"] = targets["member"]

    def tweak(case: Any, rng: random.Random) -> None:
        # English problem titles (SEMANTIC_REJECTIONS names "Malformed body"), unless the case
        # sends its own Accept-Language: a generated, maybe invalid, one is under test.
        if not any(name.lower() == "accept-language" for name in case.headers or {}):
            case.headers = {**(case.headers or {}), "Accept-Language": "en"}
        # A cursor is whatever the API issued: any other string, however well-formed, is a
        # forged one and refused (400/422). Valid requests start at the first page.
        if case.query and "cursor" in case.query and case.meta.generation.mode.is_positive:
            del case.query["cursor"]
        for name in ("team_ref", "member_ref"):
            if case.path_parameters and name in case.path_parameters and rng.random() < 0.5:
                case.path_parameters[name] = targets[name.removesuffix("_ref")]
        body = case.body
        point_at_known(body, rng)
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            for item in body["items"]:
                point_at_known(item, rng)

    return tweak


@pytest.mark.parametrize("service", SERVICES)
def test_no_5xx_and_responses_match_the_schema(
    service: str, stack: Stack, world: World, fuzz_targets: dict[str, str]
) -> None:
    stack.ensure_running()
    schema = schemathesis.openapi.from_url(f"{stack.url(service)}/openapi.json")
    tweak = make_tweak(fuzz_targets)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            if key in SKIPPED:
                continue
            headers = world.key_dt if key in PARTNER_OPERATIONS else OPERATOR
            failures += fuzz_operation(
                operation, key, session=session, headers=headers, tweak=tweak, statuses=statuses
            )
    print(f"\n[fuzz] {service}: {sum(statuses.values())} requests, by status {dict(statuses)}")
    assert statuses, "no request was made"
    # Valid-ish requests got through, not only rejections.
    assert any(200 <= code < 300 for code in statuses), statuses
    assert not failures, "\n\n".join(failures)
