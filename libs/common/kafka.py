"""Kafka clients configured the safe way (aiokafka's defaults are acks=1, no idempotence)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import struct
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    MessageSizeTooLargeError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.producer.message_accumulator import BatchBuilder

from common.settings import KafkaSettings
from common.topics import TopicSpec, all_topics

log = logging.getLogger(__name__)


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), the same values as
    aiokafka's `partitioner.murmur2` (a test holds them equal), twice as fast: the words read
    at once, no mask that cannot change anything. At national spread every score key is new,
    so the partitioner hashes each one (the cache below does not help)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for word in struct.unpack_from(f"<{length >> 2}I", data):
        k = (word * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length & ~3
        if tail >= 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=200_000)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def keyed_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default keyed partitioning (murmur2, as the Java client), with the hash cached.

    aiokafka computes murmur2 in pure Python for every record; keys repeat (a team's events,
    a subject's scores), and the hash was a tenth of the outbox relay's CPU.
    """
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_key_hash(key) % len(all_partitions)]


class KafkaAccessError(RuntimeError):
    """The broker refused this client's credentials (or they are missing): retrying cannot
    help, so the process stops with this message instead of waiting for the broker."""


def kafka_client_options(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """How every Kafka client this code creates authenticates: the one place that reads the
    security settings (`settings`, or `KafkaSettings` from the environment when omitted)."""
    settings = KafkaSettings() if settings is None else settings
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol == "SASL_SSL":
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if protocol.startswith("SASL_"):
        username, password = _credentials(settings)
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": username,
            "sasl_plain_password": password,
        }
    return options


def _credentials(settings: KafkaSettings) -> tuple[str, str]:
    if not settings.kafka_username or settings.kafka_password is None:
        raise KafkaAccessError(
            f"CDT_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "CDT_KAFKA_USERNAME and CDT_KAFKA_PASSWORD (the service's Kafka principal)"
        )
    return settings.kafka_username, settings.kafka_password.get_secret_value()


def java_client_properties(settings: KafkaSettings | None = None) -> list[str]:
    """The same security as `kafka_client_options`, as the `key=value` properties of Kafka's
    Java clients and tools (`--producer-props`, `--command-config` files)."""
    settings = KafkaSettings() if settings is None else settings
    protocol = settings.kafka_security_protocol
    properties = [f"security.protocol={protocol}"]
    if protocol == "SASL_SSL" and settings.kafka_ssl_cafile:
        properties += [
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={settings.kafka_ssl_cafile}",
        ]
    if protocol.startswith("SASL_"):
        username, password = _credentials(settings)
        properties += [
            f"sasl.mechanism={settings.kafka_sasl_mechanism}",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{username}" password="{password}";',
        ]
    return properties


# What a broker answers when it does not accept the client's identity (not an outage).
_REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


async def check_access(settings: KafkaSettings, *, wait_seconds: float = 10) -> None:
    """Raise `KafkaAccessError` if the first reachable bootstrap server refuses the
    credentials. An unreachable broker is not an answer: the clients retry as they always do.

    aiokafka logs a refused login and then reports only "Unable to bootstrap", the same as an
    outage, and a service would retry a wrong password for ever; this asks once, directly.
    """
    options = kafka_client_options(settings)
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(wait_seconds):
                conn = await create_conn(
                    host.strip("[]"),
                    int(port),
                    request_timeout_ms=int(wait_seconds * 1000),
                    **options,
                )
        except _REFUSALS as refusal:
            raise KafkaAccessError(
                f"Kafka at {server.strip()} refused the credentials of "
                f"{settings.kafka_username!r} ({settings.kafka_sasl_mechanism}, "
                f"{settings.kafka_security_protocol}): {refusal}. Check CDT_KAFKA_USERNAME / "
                "CDT_KAFKA_PASSWORD (and that the principal exists: python -m common.kafka_access)"
            ) from refusal
        except (OSError, TimeoutError, KafkaError):
            continue
        conn.close()
        return


def make_producer(
    bootstrap_servers: str, *, client_id: str, security: KafkaSettings | None = None
) -> AIOKafkaProducer:
    """`security`: whose credentials (default: the `CDT_KAFKA_*` environment), as for every
    client below."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        **kafka_client_options(security),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        compression_type=None,
        request_timeout_ms=15_000,
        partitioner=keyed_partitioner,
    )


class _OnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    async def on_partitions_revoked(self, revoked: object) -> None:
        self._callback()

    async def on_partitions_assigned(self, assigned: object) -> None:
        self._callback()


def make_consumer(
    bootstrap_servers: str,
    *,
    group_id: str,
    topics: list[str],
    max_poll_records: int,
    session_timeout_ms: int = 10_000,
    on_rebalance: Callable[[], None] | None = None,
    security: KafkaSettings | None = None,
) -> AIOKafkaConsumer:
    """`on_rebalance`: called whenever partitions are revoked or assigned (a handler's memory of
    its partitions' state is then no longer known to be the latest)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=f"{group_id}-consumer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        # Generous: a batch is one DB transaction and must finish before the group evicts us.
        max_poll_interval_ms=300_000,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(session_timeout_ms // 4, 1_000),
        **kafka_client_options(security),
    )
    consumer.subscribe(
        topics, listener=_OnRebalance(on_rebalance) if on_rebalance is not None else None
    )
    return consumer


async def ensure_topics(
    bootstrap_servers: str,
    *,
    specs: list[TopicSpec] | None = None,
    replication_factor: int = 1,
    security: KafkaSettings | None = None,
) -> list[str]:
    """Create missing topics; returns the names created. Idempotent. Needs a principal allowed
    to create topics (the superuser: provisioning, not a service's own principal)."""
    specs = all_topics() if specs is None else specs
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="cdt-topics",
        **kafka_client_options(security),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.broker_configs())
            for s in missing
        ]
        try:
            await admin.create_topics(new_topics)
        except TopicAlreadyExistsError:
            log.info("topics created concurrently by another process")
        await _wait_for_metadata(admin, {s.name for s in missing})
        return [s.name for s in missing]
    finally:
        await admin.close()


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    for _ in range(50):
        if names <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)


class KeyedBatches:
    """Records added one by one, sent as one record batch per partition (`send_batch`).

    `AIOKafkaProducer.send` costs a metadata wait, a size estimate, a partition lookup and a
    future per record, about a third of the outbox relay's CPU. Records go to the partition
    `keyed_partitioner` picks, as `send` would; each partition's batches leave in the order
    they were filled, so a key's records keep their order.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._sent: list[asyncio.Future[Any]] = []

    async def add(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(
                await self._producer.partitions_for(topic)
            )
        partition = keyed_partitioner(key, partitions, partitions)
        builder = self._open.get((topic, partition))
        if builder is not None and builder.append(
            timestamp=None, key=key, value=value, headers=headers
        ):
            return
        if builder is not None:  # full: it leaves, the record starts the next one
            self._sent.append(await self._producer.send_batch(builder, topic, partition=partition))
        builder = self._open[(topic, partition)] = self._producer.create_batch()
        if not builder.append(timestamp=None, key=key, value=value, headers=headers):
            raise MessageSizeTooLargeError(f"a record of {len(value)} bytes for {topic}")

    async def send(self) -> None:
        """Send the batches still open and wait until every one is acknowledged or failed;
        raises the first failure once all have settled (none is left unawaited)."""
        for (topic, partition), builder in self._open.items():
            self._sent.append(await self._producer.send_batch(builder, topic, partition=partition))
        self._open.clear()
        outcomes = await asyncio.gather(*self._sent, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
