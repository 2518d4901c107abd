"""The local issuer's pure rules: roles and their units, passwords, claims, key publication."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common.roles import RoleGrant
from teams.domain import (
    Account,
    DomainError,
    access_claims,
    check_password,
    check_roles,
    key_published,
)

ISSUER = "https://id.example.gov.vn"


def test_roles_need_units_exactly_where_scoped() -> None:
    assert check_roles([RoleGrant("ministry_admin")]) == (RoleGrant("ministry_admin"),)
    for bad in (
        [RoleGrant("province_officer")],
        [RoleGrant("ministry_admin", "82")],
        [RoleGrant("root")],
        [RoleGrant("auditor"), RoleGrant("auditor")],
        [],
    ):
        with pytest.raises(DomainError):
            check_roles(bad)


def test_password_rules() -> None:
    check_password("correct horse battery", username="alice")
    for bad in ("short", "alice-is-my-password", "x" * 257):
        with pytest.raises(DomainError):
            check_password(bad, username="alice")


def test_claims_and_key_publication() -> None:
    account = Account(
        id=uuid.uuid4(),
        username="alice",
        display_name="Alice",
        roles=(RoleGrant("commune_officer", "28261"),),
        disabled=False,
        has_password=True,
    )
    now = datetime(2026, 12, 6, tzinfo=UTC)
    claims = access_claims(account, issuer=ISSUER, audience="cdt", now=now, ttl_seconds=900)
    assert claims["exp"] == int(now.timestamp()) + 900
    assert claims["roles"] == [{"role": "commune_officer", "unit": "28261"}]
    kept = {"now": now, "token_ttl_seconds": 900, "leeway_seconds": 30}
    assert key_published(retired_at=None, **kept)  # type: ignore[arg-type]
    assert key_published(retired_at=now - timedelta(seconds=900), **kept)  # type: ignore[arg-type]
    assert not key_published(retired_at=now - timedelta(seconds=931), **kept)  # type: ignore[arg-type]
