"""Who may do what on the broker: SCRAM principals and their ACLs, and the CLI that manages them.

    python -m common.kafka_access add-subscriber --name tong-cuc-thong-ke
    python -m common.kafka_access revoke-subscriber --name tong-cuc-thong-ke
    python -m common.kafka_access provision-services   # topics, and the four services' principals

Every command acts as the superuser given by `--admin-config` (a Kafka client properties file,
e.g. `.data/kafka/admin.properties` that `make run` writes) or by the `CDT_KAFKA_*` settings.

Each service's principal (its name) may write exactly the topics it owns (`<service>.…` and the
dead-letter topics of its groups) and read exactly the topics and groups of its consumers
(`common.topics.CONSUMER_GROUPS`). A subscriber (another agency) may read the score topics and
the evaluation rounds, in consumer groups named `<subscriber>.…`, and nothing else.

aiokafka's admin client has no call for SCRAM credentials or ACLs; the requests below are Kafka's
own (AlterUserScramCredentials v0, CreateAcls v1, DeleteAcls v1), sent over its connection.
Changes take effect at once, without restarting anything: the broker checks ACLs on every
request, including on connections authenticated before the change.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)
from pydantic import SecretStr

from common.kafka import KafkaAccessError, check_access, ensure_topics, kafka_client_options
from common.settings import KafkaSettings
from common.topics import (
    CONSUMER_GROUPS,
    DOMAIN_TOPICS,
    EVALUATION_ROUND,
    SCORE_LATEST,
    SCORE_UPDATED,
    dead_letter_topic,
)

SERVICES = ("teams", "activities", "scoring", "notifications")
# What an agency subscriber may read: the public contract (docs/subscribers.md).
SUBSCRIBER_TOPICS = (SCORE_LATEST.name, SCORE_UPDATED.name, EVALUATION_ROUND.name)
# Lower-case words joined by '-': the name is the principal and its groups' prefix.
_SUBSCRIBER_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# Names of other principals, and the prefix of the dead-letter replays' groups.
_RESERVED_NAMES = {*SERVICES, *CONSUMER_GROUPS, "admin", "anonymous", "dlt-replay"}
SCRAM_ITERATIONS = 8192
_RESOURCE_NOT_FOUND = 91  # Kafka's error code for "no such credential"


class Resource(enum.IntEnum):  # Kafka's ResourceType codes
    ANY = 1
    TOPIC = 2
    GROUP = 3


class Pattern(enum.IntEnum):  # Kafka's PatternType codes
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):  # Kafka's AclOperation codes
    ANY = 1
    READ = 3
    WRITE = 4
    DESCRIBE = 8


class Permission(enum.IntEnum):  # Kafka's AclPermissionType codes
    ANY = 1
    ALLOW = 3


class Mechanism(enum.IntEnum):  # Kafka's ScramMechanism codes
    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2


# (resource type, name, pattern type, principal, host, operation, permission): Kafka's codes; as
# a filter, None matches any name or host.
Binding = tuple[int, str | None, int, str, str | None, int, int]


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: `principal` may `operation` on the `resource` named (or prefixed)."""

    principal: str
    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL

    def binding(self) -> Binding:
        """As the ACL requests carry it: resource, name, pattern, principal, host (any),
        operation, permission."""
        return (
            self.resource,
            self.name,
            self.pattern,
            self.principal,
            "*",
            self.operation,
            Permission.ALLOW,
        )


def principal(user: str) -> str:
    return f"User:{user}"


def service_groups(service: str) -> list[str]:
    """The consumer groups a service runs: its name, or its name and a `-suffix`."""
    return [group for group in CONSUMER_GROUPS if group.split("-", 1)[0] == service]


def service_acls(service: str) -> list[Acl]:
    """Exactly what a service needs: write its own topics and its groups' dead letters, read
    its consumers' topics in its own groups (DESCRIBE is implied by READ and WRITE; the lag
    monitor describes its groups and topics)."""
    user = principal(service)
    writes = [spec.name for spec in DOMAIN_TOPICS if spec.name.split(".", 1)[0] == service]
    acls: list[Acl] = []
    for group in service_groups(service):
        acls.append(Acl(user, Resource.GROUP, group, Operation.READ))
        for spec in CONSUMER_GROUPS[group]:
            acls.append(Acl(user, Resource.TOPIC, spec.name, Operation.READ))
            writes.append(dead_letter_topic(spec.name, group))
    acls += [Acl(user, Resource.TOPIC, topic, Operation.WRITE) for topic in writes]
    return sorted(set(acls))


def subscriber_acls(name: str) -> list[Acl]:
    user = principal(name)
    return [
        *(
            Acl(user, Resource.TOPIC, topic, operation)
            for topic in SUBSCRIBER_TOPICS
            for operation in (Operation.READ, Operation.DESCRIBE)
        ),
        Acl(user, Resource.GROUP, f"{name}.", Operation.READ, Pattern.PREFIXED),
    ]


def check_subscriber_name(name: str) -> str:
    if not _SUBSCRIBER_NAME.fullmatch(name) or len(name) > 64:
        raise ValueError(f"{name!r}: use lower-case letters, digits and '-' (at most 64)")
    if name in _RESERVED_NAMES:
        raise ValueError(f"{name!r} is the name of a service principal or group")
    return name


# --- Kafka's requests that aiokafka does not offer ----------------------------------------------


class _AlterScramResponse_v0(Response):  # type: ignore[misc]  # untyped base
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramRequest_v0(RequestStruct):  # type: ignore[misc]  # untyped base
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("tags", TaggedFields),
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramRequest_v0]):  # type: ignore[misc]  # untyped base
    API_KEY = 51

    def __init__(self, *, deletions: list[Any], upsertions: list[Any]) -> None:
        self._deletions = deletions
        self._upsertions = upsertions

    def build(self, request_struct_class: type[_AlterScramRequest_v0]) -> _AlterScramRequest_v0:
        return request_struct_class(self._deletions, self._upsertions, {})


# An ACL binding as the ACL requests and responses spell it (KIP-140), filters included.
_BINDING_FIELDS: tuple[tuple[str, Any], ...] = (
    ("resource_type", Int8),
    ("resource_name", String("utf-8")),
    ("pattern_type", Int8),
    ("principal", String("utf-8")),
    ("host", String("utf-8")),
    ("operation", Int8),
    ("permission_type", Int8),
)


class _CreateAclsResponse_v1(Response):  # type: ignore[misc]  # untyped base
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class _CreateAclsRequest_v1(RequestStruct):  # type: ignore[misc]  # untyped base
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = _CreateAclsResponse_v1
    SCHEMA = Schema(
        (
            "creations",
            Array(*_BINDING_FIELDS),
        )
    )


class _CreateAcls(Request[_CreateAclsRequest_v1]):  # type: ignore[misc]  # untyped base
    API_KEY = 30

    def __init__(self, acls: Sequence[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[_CreateAclsRequest_v1]) -> _CreateAclsRequest_v1:
        return request_struct_class([acl.binding() for acl in self._acls])


class _DeleteAclsResponse_v1(Response):  # type: ignore[misc]  # untyped base
    API_KEY = 31
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                (
                    "matching",
                    Array(
                        ("error_code", Int16),
                        ("error_message", String("utf-8")),
                        *_BINDING_FIELDS,
                    ),
                ),
            ),
        ),
    )


class _DeleteAclsRequest_v1(RequestStruct):  # type: ignore[misc]  # untyped base
    API_KEY = 31
    API_VERSION = 1
    RESPONSE_TYPE = _DeleteAclsResponse_v1
    SCHEMA = Schema(
        (
            "filters",
            Array(*_BINDING_FIELDS),
        )
    )


class _DeleteAcls(Request[_DeleteAclsRequest_v1]):  # type: ignore[misc]  # untyped base
    """Every binding matching one of the filters (a null name or host matches all)."""

    API_KEY = 31

    def __init__(self, filters: Sequence[Binding]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[_DeleteAclsRequest_v1]) -> _DeleteAclsRequest_v1:
        return request_struct_class(list(self._filters))


class _DescribeAclsResponse_v1(Response):  # type: ignore[misc]  # untyped base
    API_KEY = 29
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", String("utf-8")),
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("pattern_type", Int8),
                (
                    "acls",
                    Array(
                        ("principal", String("utf-8")),
                        ("host", String("utf-8")),
                        ("operation", Int8),
                        ("permission_type", Int8),
                    ),
                ),
            ),
        ),
    )


class _DescribeAclsRequest_v1(RequestStruct):  # type: ignore[misc]  # untyped base
    API_KEY = 29
    API_VERSION = 1
    RESPONSE_TYPE = _DescribeAclsResponse_v1
    SCHEMA = Schema(*_BINDING_FIELDS)


class _DescribeAcls(Request[_DescribeAclsRequest_v1]):  # type: ignore[misc]  # untyped base
    API_KEY = 29

    def __init__(self, binding_filter: Binding) -> None:
        self._filter = binding_filter

    def build(self, request_struct_class: type[_DescribeAclsRequest_v1]) -> _DescribeAclsRequest_v1:
        return request_struct_class(*self._filter)


def _every_binding_of(user: str) -> Binding:
    """The filter matching every binding of a principal, on any resource."""
    return (Resource.ANY, None, Pattern.ANY, principal(user), None, Operation.ANY, Permission.ANY)


def _raise_for(error_code: int, message: str | None, what: str) -> None:
    if error_code:
        raise for_code(error_code)(f"{what}: {message or ''}")


def salted_password(password: str, salt: bytes, iterations: int, mechanism: str) -> bytes:
    """SCRAM's SaltedPassword (RFC 5802, Hi() = PBKDF2 with the mechanism's HMAC): what the
    broker stores, so the password itself never leaves this process."""
    digest = "sha512" if mechanism == "SCRAM-SHA-512" else "sha256"
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


def _mechanism_code(mechanism: str) -> Mechanism:
    return Mechanism[mechanism.replace("-", "_")]


class KafkaAccess:
    """Principals and ACLs, managed through one admin connection as the superuser."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id="cdt-kafka-access",
            request_timeout_ms=15_000,
            **kafka_client_options(settings),
        )

    async def __aenter__(self) -> KafkaAccess:
        await self._admin.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._admin.close()

    async def set_password(self, user: str, password: str) -> None:
        mechanism = self._settings.kafka_sasl_mechanism
        salt = secrets.token_bytes(32)
        upsert: tuple[Any, ...] = (
            user,
            _mechanism_code(mechanism),
            SCRAM_ITERATIONS,
            salt,
            salted_password(password, salt, SCRAM_ITERATIONS, mechanism),
            {},
        )
        await self._alter_scram(_AlterScram(deletions=[], upsertions=[upsert]))

    async def delete_user(self, user: str) -> None:
        """Remove the user's credentials (every mechanism); a user without any is no error."""
        for mechanism in Mechanism:
            deletion: tuple[Any, ...] = (user, mechanism, {})
            await self._alter_scram(
                _AlterScram(deletions=[deletion], upsertions=[]), missing_ok=True
            )

    async def _alter_scram(self, request: _AlterScram, *, missing_ok: bool = False) -> None:
        response = await self._admin._send_request(request)  # aiokafka has no public call
        for user, code, message, _ in response.results:
            if not (missing_ok and code == _RESOURCE_NOT_FOUND):
                _raise_for(code, message, f"SCRAM credentials of {user}")

    async def grant(self, acls: Iterable[Acl]) -> None:
        """Create the bindings; creating one that exists already changes nothing."""
        acls = list(acls)
        response = await self._admin._send_request(_CreateAcls(acls))
        for acl, (code, message) in zip(acls, response.results, strict=True):
            _raise_for(code, message, f"ACL {acl}")

    async def allow_exactly(self, user: str, acls: Sequence[Acl]) -> None:
        """The user's bindings become `acls`: the missing ones are created first, then those
        no longer wanted are deleted, so a running client never loses a permission it keeps."""
        await self.grant(acls)
        wanted = {acl.binding() for acl in acls}
        if stale := [held for held in await self.bindings_of(user) if held not in wanted]:
            await self._delete(stale, what=f"stale ACLs of {user}")

    async def bindings_of(self, user: str) -> list[Binding]:
        response = await self._admin._send_request(_DescribeAcls(_every_binding_of(user)))
        _raise_for(response.error_code, response.error_message, f"ACLs of {user}")
        return [
            (resource, name, pattern, held_by, host, operation, permission)
            for resource, name, pattern, acls in response.resources
            for held_by, host, operation, permission in acls
        ]

    async def revoke_all(self, user: str) -> int:
        """Delete every ACL binding of the user; returns how many there were."""
        return await self._delete([_every_binding_of(user)], what=f"ACLs of {user}")

    async def _delete(self, filters: Sequence[Binding], *, what: str) -> int:
        response = await self._admin._send_request(_DeleteAcls(filters))
        deleted = 0
        for code, message, matching in response.results:
            _raise_for(code, message, what)
            deleted += len(matching)
        return deleted


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


async def add_subscriber(settings: KafkaSettings, name: str) -> Credentials:
    """A new principal with a fresh password, allowed the subscriber contract only. Run again
    for the same name: a new password (the old one stops working), the same ACLs."""
    name = check_subscriber_name(name)
    credentials = Credentials(name, secrets.token_urlsafe(24))
    async with KafkaAccess(settings) as access:
        await access.allow_exactly(name, subscriber_acls(name))
        await access.set_password(name, credentials.password)
    await wait_for_login(settings, credentials, accepted=True)
    return credentials


async def revoke_subscriber(settings: KafkaSettings, name: str) -> int:
    """ACLs first: they stop open connections at their next request; then the credentials, so
    no new connection authenticates. Returns the number of ACL bindings removed."""
    name = check_subscriber_name(name)
    async with KafkaAccess(settings) as access:
        deleted = await access.revoke_all(name)
        await access.delete_user(name)
    await wait_for_login(settings, Credentials(name, ""), accepted=False)
    return deleted


async def provision_services(
    settings: KafkaSettings, passwords: dict[str, str] | None = None
) -> dict[str, str]:
    """Give each service its principal (new passwords unless given) and exactly its ACLs,
    those it no longer needs removed once the new ones exist (safe while it runs). Returns the
    passwords, by service."""
    passwords = passwords or {service: secrets.token_urlsafe(24) for service in SERVICES}
    async with KafkaAccess(settings) as access:
        for service, password in passwords.items():
            await access.allow_exactly(service, service_acls(service))
            await access.set_password(service, password)
    for service, password in passwords.items():
        await wait_for_login(settings, Credentials(service, password), accepted=True)
    return passwords


async def wait_for_login(
    settings: KafkaSettings, credentials: Credentials, *, accepted: bool, within: float = 15
) -> None:
    """Until the broker accepts (or refuses) the credentials. The controller commits a change
    at once, the broker applies it from the metadata log a moment later, in order: a login
    accepted after the password was set means the ACLs granted before it apply too."""
    password = SecretStr(credentials.password)
    as_user = settings.model_copy(
        update={"kafka_username": credentials.username, "kafka_password": password}
    )
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await check_access(as_user)
            if accepted:
                return
        except KafkaAccessError:
            if not accepted:
                return
        if asyncio.get_running_loop().time() > deadline:
            state = "accepted" if accepted else "refused"
            raise TimeoutError(f"the broker has not {state} {credentials.username} in {within} s")
        await asyncio.sleep(0.1)


def service_client_env(service: str, password: str) -> dict[str, str]:
    """The settings a service process needs to log in as its own principal."""
    return {"CDT_KAFKA_USERNAME": service, "CDT_KAFKA_PASSWORD": password}


def settings_from_properties(path: Path) -> KafkaSettings:
    """`KafkaSettings` from a Kafka client properties file (`bootstrap.servers`,
    `security.protocol`, `sasl.mechanism`, `sasl.jaas.config` with username and password,
    `ssl.truststore.location` as a PEM file): the file Kafka's console tools read."""
    properties = dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    jaas = properties.get("sasl.jaas.config", "")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', jaas))
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": properties["bootstrap.servers"].strip(),
        "CDT_KAFKA_SECURITY_PROTOCOL": properties.get("security.protocol", "SASL_PLAINTEXT"),
        "CDT_KAFKA_SASL_MECHANISM": properties.get("sasl.mechanism", "SCRAM-SHA-512"),
        "CDT_KAFKA_USERNAME": fields.get("username"),
        "CDT_KAFKA_PASSWORD": fields.get("password"),
    }
    if cafile := properties.get("ssl.truststore.location"):
        values["CDT_KAFKA_SSL_CAFILE"] = cafile.strip()
    return KafkaSettings.model_validate(values)


def _print_subscriber(settings: KafkaSettings, credentials: Credentials) -> None:
    print(
        "\n".join(
            [
                f"subscriber {credentials.username} created; its password is shown only now:",
                f"  bootstrap.servers={settings.kafka_bootstrap_servers}",
                f"  security.protocol={settings.kafka_security_protocol}",
                f"  sasl.mechanism={settings.kafka_sasl_mechanism}",
                f"  username={credentials.username}",
                f"  password={credentials.password}",
                f"  consumer groups: {credentials.username}.<anything>",
                f"  topics (read): {', '.join(SUBSCRIBER_TOPICS)}",
                "connecting, reading and verifying: docs/subscribers.md",
            ]
        )
    )


def _hand_over(passwords: dict[str, str], env_dir: Path | None) -> None:
    """Print each service's settings, or write them where only its process reads them (the
    Docker stack: a volume the service sources before it starts)."""
    for service, password in passwords.items():
        settings = service_client_env(service, password)
        if env_dir is None:
            print(f"{service}: " + " ".join(f"{k}={v}" for k, v in settings.items()))
            continue
        env_dir.mkdir(parents=True, exist_ok=True)
        path = env_dir / f"{service}.env"
        path.touch(mode=0o600)
        path.write_text("".join(f"export {k}='{v}'\n" for k, v in settings.items()))
        print(f"{service}: principal {service}, settings in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.kafka_access", description=__doc__)
    parser.add_argument(
        "--admin-config",
        type=Path,
        default=os.environ.get("CDT_KAFKA_ADMIN_CONFIG"),
        help="superuser's client properties (default: the CDT_KAFKA_* settings)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("add-subscriber", "revoke-subscriber"):
        commands.add_parser(command).add_argument("--name", required=True)
    provision = commands.add_parser(
        "provision-services", help="create the topics, then each service's principal and ACLs"
    )
    provision.add_argument(
        "--env-dir",
        type=Path,
        help="write <service>.env (0600, shell syntax) there instead of printing the passwords",
    )
    args = parser.parse_args(argv)
    settings = settings_from_properties(args.admin_config) if args.admin_config else KafkaSettings()
    try:
        if args.command == "add-subscriber":
            _print_subscriber(settings, asyncio.run(add_subscriber(settings, args.name)))
        elif args.command == "revoke-subscriber":
            removed = asyncio.run(revoke_subscriber(settings, args.name))
            print(f"subscriber {args.name} revoked ({removed} ACL bindings removed)")
        else:
            asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, security=settings))
            passwords = asyncio.run(provision_services(settings))
            _hand_over(passwords, args.env_dir)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
