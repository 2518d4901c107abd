"""The permission matrix: pure rules, and the README's table equal to the code."""

from __future__ import annotations

from pathlib import Path

from common.roles import (
    NATIONWIDE,
    OPERATOR_ACTOR,
    Action,
    Actor,
    RoleGrant,
    Scope,
    render_matrix,
    scope_of,
)

README = Path(__file__).resolve().parents[3] / "README.md"


def person(*grants: tuple[str, str | None]) -> Actor:
    return Actor(subject="s", roles=tuple(RoleGrant(role, unit) for role, unit in grants))


def test_the_readme_shows_the_matrix_the_code_enforces() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- role-matrix:start -->\n", "<!-- role-matrix:end -->"
    shown = text[text.index(start) + len(start) : text.index(end)]
    assert shown == render_matrix(), (
        "README.md's role matrix is stale: paste common.roles.render_matrix() between its markers"
    )


def test_scopes_join_every_grant_that_permits_the_action() -> None:
    officer_and_leader = person(("commune_officer", "28261"), ("team_leader", "00070"))
    assert scope_of(officer_and_leader, Action.MANAGE_MEMBERS) == Scope(
        frozenset({"28261", "00070"})
    )
    assert scope_of(officer_and_leader, Action.MANAGE_TEAMS) == Scope(frozenset({"28261"}))
    assert scope_of(officer_and_leader, Action.ADMINISTER) is None


def test_nationwide_roles_and_the_operator() -> None:
    assert scope_of(OPERATOR_ACTOR, Action.ADMINISTER) == NATIONWIDE
    assert scope_of(person(("ministry_admin", None)), Action.PLAN) == NATIONWIDE
    auditor = person(("auditor", None))
    assert scope_of(auditor, Action.READ) == NATIONWIDE
    assert scope_of(auditor, Action.READ_AUDIT) == NATIONWIDE
    for write in set(Action) - {Action.READ, Action.READ_AUDIT}:
        assert scope_of(auditor, write) is None


def test_a_scoped_role_without_a_unit_grants_nothing() -> None:
    # an identity provider may send plain role names: a province officer of nowhere
    assert scope_of(person(("province_officer", None)), Action.READ) is None


def test_a_unit_is_inside_when_the_grant_is_on_its_path() -> None:
    province = Scope(frozenset({"82"}))
    assert province.covers(["82", "28261"]) and province.covers(["82"])
    assert not province.covers(["01", "00070"]) and not province.covers([])
    commune = Scope(frozenset({"28261"}))
    assert commune.covers(["82", "28261", None]) and not commune.covers(["82", "28262"])
    assert not commune.covers(["82"])  # a commune officer does not act for the province
    assert NATIONWIDE.covers([])
