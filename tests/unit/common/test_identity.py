"""Access-token verification without I/O: keys come from an in-memory JWKS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from common.identity import (
    DisabledSubjects,
    KeySet,
    TokenVerifier,
    actor_from_claims,
    looks_like_jwt,
)
from common.problems import ProblemError
from common.ratelimit import FailureLimiter
from common.roles import NATIONWIDE, OPERATOR_ACTOR, Action, Actor, RoleGrant, scope_of

ISSUER = "https://id.example.gov.vn"


class Issuer:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.add_key()

    def add_key(self) -> str:
        kid = uuid.uuid4().hex
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid
        return kid

    async def jwks(self) -> Mapping[str, Any]:
        self.fetches += 1
        keys = []
        for kid, private in self.keys.items():
            jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
        return {"keys": keys}

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": "cdt",
            "sub": "alice",
            "exp": now + 60,
            "nbf": now,
            "roles": [{"role": "province_officer", "unit": "82"}],
            **overrides,
        }
        return jwt.encode(claims, self.keys[self.kid], "ES256", headers={"kid": self.kid})


def verifier(issuer: Issuer, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience="cdt",
        keys=KeySet(issuer.jwks, ttl=300, min_refresh=kwargs.pop("min_refresh", 0)),
        **kwargs,
    )


async def test_a_valid_token_gives_its_actor() -> None:
    issuer = Issuer()
    actor = await verifier(issuer).verify(issuer.token(name="Alice"))
    assert actor == Actor(
        subject="alice", name="Alice", roles=(RoleGrant("province_officer", "82"),)
    )
    assert scope_of(actor, Action.ADMINISTER) is None


@pytest.mark.parametrize(
    "overrides",
    [
        # times relative to when the test runs (a suite can run long after collection)
        lambda now: {"exp": now - 120},
        lambda now: {"nbf": now + 120},
        lambda now: {"aud": "another"},
        lambda now: {"iss": "https://elsewhere"},
        lambda now: {"roles": "ministry_admin"},
    ],
)
async def test_claims_out_of_bounds_are_401(overrides: Callable[[int], dict[str, Any]]) -> None:
    issuer = Issuer()
    with pytest.raises(ProblemError) as caught:
        await verifier(issuer).verify(issuer.token(**overrides(int(time.time()))))
    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def test_the_leeway_absorbs_small_clock_skew() -> None:
    issuer = Issuer()
    token = issuer.token(exp=int(time.time()) - 10)
    assert (await verifier(issuer).verify(token)).subject == "alice"


async def test_keys_are_cached_and_refetched_for_a_new_kid_at_a_bounded_rate() -> None:
    issuer = Issuer()
    check = verifier(issuer, min_refresh=3600)
    await check.verify(issuer.token())
    await check.verify(issuer.token())
    assert issuer.fetches == 1
    issuer.add_key()  # rotation: the cache has no such kid, the first refetch is allowed...
    keys = KeySet(issuer.jwks, ttl=300, min_refresh=3600)
    assert await keys.key(issuer.kid, now=0) is not None
    assert await keys.key("made-up", now=1) is None  # ...a made-up kid within the interval
    assert await keys.key("made-up", now=2) is None  # does not hammer the issuer
    assert issuer.fetches == 2


async def test_an_unreachable_issuer_keeps_the_cached_keys() -> None:
    issuer = Issuer()
    calls = 0

    async def flaky() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("down")
        return await issuer.jwks()

    keys = KeySet(flaky, ttl=10, min_refresh=0)
    assert await keys.key(issuer.kid, now=0) is not None
    assert await keys.key(issuer.kid, now=20) is not None  # expired cache, fetch failed


async def test_disabled_subjects_are_refused_and_a_stale_list_fails_closed() -> None:
    issuer = Issuer()
    disabled: set[str] = set()
    reachable = True

    async def fetch() -> frozenset[str]:
        if not reachable:
            raise OSError("down")
        return frozenset(disabled)

    subjects = DisabledSubjects(fetch, refresh=30)
    check = verifier(issuer, disabled=subjects)
    assert (await check.verify(issuer.token())).subject == "alice"
    disabled.add("alice")
    assert not await subjects.contains("alice", now=time.monotonic() + 1)  # cached
    assert await subjects.contains("alice", now=time.monotonic() + 31)  # refreshed
    reachable = False
    with pytest.raises(ProblemError) as caught:
        await subjects.contains("bob", now=time.monotonic() + 95)
    assert caught.value.status == 503


def test_only_jws_shaped_tokens_are_verified_as_jwts() -> None:
    assert looks_like_jwt(Issuer().token())
    for other in ("test-operator-token", "cdtp_0123456789ab_x", "a.b.c", "e30.e30.x"):
        assert not looks_like_jwt(other)


def test_plain_role_names_and_unknown_roles() -> None:
    actor = actor_from_claims({"sub": "s", "roles": ["ministry_admin", "superuser"]})
    assert actor.roles == (RoleGrant("ministry_admin"),)
    assert scope_of(actor, Action.ADMINISTER) == NATIONWIDE
    assert scope_of(OPERATOR_ACTOR, Action.ADMINISTER) == NATIONWIDE


def test_failed_logins_block_until_the_window_passes() -> None:
    limiter = FailureLimiter(window=60)
    for t in range(3):
        assert limiter.retry_after("account:a", limit=3, now=t) == 0
        limiter.failed("account:a", now=t)
    assert limiter.retry_after("account:a", limit=3, now=10) == 50
    assert limiter.retry_after("account:b", limit=3, now=10) == 0
    assert limiter.retry_after("account:a", limit=3, now=61) == 0  # the first failure aged out
    limiter.failed("address:x", now=70)
    limiter.cancel("address:x", at=70)  # counted in advance, then the login succeeded
    assert limiter.retry_after("address:x", limit=1, now=70) == 0
    limiter.forget("account:a")
    assert limiter.retry_after("account:a", limit=1, now=61) == 0
