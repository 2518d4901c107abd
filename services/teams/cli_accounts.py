"""`python -m teams create-admin`: the first administrator of the local identity provider.

    python -m teams create-admin --username admin --name "Quản trị viên"

Creates a `ministry_admin` account and prints its one-time invitation code with the two
requests that turn it into an access token (redeem: set a password; login: get a token).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta

from common.roles import MINISTRY_ADMIN, RoleGrant
from teams.bootstrap import build_runtime
from teams.domain import DomainError
from teams.settings import TeamsSettings
from teams.use_cases import Invitation, create_account


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m teams create-admin")
    parser.add_argument("--username", required=True, help="lower case, 3 to 64 characters")
    parser.add_argument("--name", default="Administrator", help="display name")
    return parser


async def run(username: str, name: str) -> Invitation:
    settings = TeamsSettings()
    runtime = build_runtime(settings)
    try:
        if settings.run_migrations:
            await runtime.migrate()
        async with runtime.unit_of_work() as uow:
            return await create_account(
                uow,
                username=username,
                display_name=name,
                roles=[RoleGrant(MINISTRY_ADMIN)],
                invitation_ttl=timedelta(hours=settings.invitation_ttl_hours),
            )
    finally:
        await runtime.engine.dispose()
        runtime.tracer_provider.shutdown()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    settings = TeamsSettings()
    if not settings.local_issuer:
        print("error: CDT_OIDC_ISSUER names another identity provider", file=sys.stderr)
        return 2
    try:
        invitation = asyncio.run(run(args.username.lower(), args.name))
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    base = settings.issuer_url
    username = invitation.account.username
    print(
        f"Account {username} ({invitation.account.id}), role ministry_admin.\n"
        f"Invitation code (shown once, valid until {invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n"
        f"  {invitation.code}\n\n"
        "Set a password (12+ characters), once:\n"
        f"  curl -s -X POST {base}/v1/invitations:redeem -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"code": "{invitation.code}", "password": "<password>"}}\'\n'
        f"Then get an access token ({settings.token_ttl_seconds // 60} min) for every service:\n"
        f"  curl -s -X POST {base}/v1/auth/token -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"username": "{username}", "password": "<password>"}}\''
    )
    return 0
