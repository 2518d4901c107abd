"""Apache Kafka in KRaft mode from its official Maven Central artifacts (no Docker, no tarball).

The classpath is resolved once by Maven (`deploy/kafka/pom.xml`, pinned versions) into a cache
shared by every run and test session; storage is formatted once per data directory.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import os
import re
import secrets
import signal
import subprocess
import uuid
from pathlib import Path
from typing import IO

from pydantic import SecretStr

from common.kafka import java_client_properties
from common.settings import KafkaSettings
from devstack.kafka_ready import broker_answers
from devstack.procs import (
    cmdline,
    free_port,
    live_processes,
    port_open,
    spawn,
    stop_pids,
    stop_process,
    wait_until,
)

DEPLOY_KAFKA = Path(__file__).resolve().parent.parent / "kafka"
POM = DEPLOY_KAFKA / "pom.xml"
LOG4J_CONFIG = DEPLOY_KAFKA / "log4j2.properties"
# The superuser of a local broker: topic creation, provisioning, operators' console tools.
ADMIN_USER = "admin"
SASL_MECHANISM = "SCRAM-SHA-512"


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert match, "kafka.version missing from deploy/kafka/pom.xml"
    return match.group(1)


def cache_root() -> Path:
    return Path(os.environ.get("CDT_CACHE_DIR", Path.home() / ".cache" / "cdt"))


def resolve_classpath(*, log: IO[str] | None = None) -> Path:
    """Resolve the pinned Kafka jars into the cache (once); returns the `libs` directory."""
    libs = cache_root() / f"kafka-{kafka_version()}" / "libs"
    marker = libs.parent / "resolved"
    if marker.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with (libs.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions resolve once
        if marker.exists():
            return libs
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.libs={libs}",
                f"-DbuildDirectory={libs.parent / 'target'}",
                "package",
            ],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        marker.write_text(kafka_version())
    return libs


class LocalKafka:
    """A single KRaft broker+controller; `data_dir` keeps its log and its ports across runs."""

    def __init__(self, data_dir: Path, *, port: int | None = None, heap: str = "512m") -> None:
        self.data_dir = data_dir.resolve()
        self.heap = heap
        saved = self._saved_ports()
        self.port = port or (saved[0] if saved else free_port())
        self.controller_port = saved[1] if saved else free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _saved_ports(self) -> tuple[int, int] | None:
        saved = self.data_dir / "ports"
        if not saved.exists():
            return None
        broker, controller = saved.read_text().split()
        return int(broker), int(controller)

    def _write_config(self, *, setup_port: int | None = None) -> Path:
        """`setup_port`: also a PLAINTEXT listener there (see `_add_superuser`)."""
        setup = f",SETUP://127.0.0.1:{setup_port}" if setup_port else ""
        config = self.data_dir / "server.properties"
        config.touch(mode=0o600)
        config.chmod(0o600)  # it holds the superuser's password (the broker's own login)
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=BROKER://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}{setup}",
                    f"advertised.listeners=BROKER://127.0.0.1:{self.port}{setup}",
                    "controller.listener.names=CONTROLLER",
                    *self._security_lines(setup=bool(setup)),
                    f"log.dirs={self.data_dir / 'logs'}",
                    "num.partitions=6",
                    # A single broker: internal topics cannot have more replicas than brokers.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    # The cleaner's 128 MiB default dedupe buffer would exhaust a small heap.
                    "log.cleaner.dedupe.buffer.size=8388608",
                    "log.retention.hours=168",
                    # Sync each log every second: dirty segments otherwise pile up for the
                    # kernel's 30 s writeback, whose burst stalled PostgreSQL's WAL syncs
                    # (single-POST p99 after a bulk load). Also: a single broker's acked
                    # events survive a power loss within a second, not within 30 s.
                    "log.flush.interval.ms=1000",
                    "log.flush.scheduler.interval.ms=1000",
                    "",
                ]
            )
        )
        (self.data_dir / "ports").write_text(f"{self.port} {self.controller_port}")
        return config

    def _security_lines(self, *, setup: bool = False) -> list[str]:
        """Clients authenticate with SCRAM-SHA-512 and are authorised by ACLs. The controller
        listener stays PLAINTEXT on the loopback address only: its principal, ANONYMOUS, is
        the broker talking to its own controller (production: TLS there, see README)."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{self.admin_password}";'
        )
        protocols = "BROKER:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
        if setup:
            protocols += ",SETUP:PLAINTEXT"
        return [
            f"listener.security.protocol.map={protocols}",
            "inter.broker.listener.name=BROKER",
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
            f"listener.name.broker.{SASL_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN_USER};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]

    @property
    def _password_file(self) -> Path:
        return self.data_dir / "admin-password"

    def _formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").exists()

    @property
    def admin_password(self) -> str:
        """The superuser's password, chosen once per data dir (0600, beside the log dirs):
        CDT_KAFKA_ADMIN_PASSWORD when set (a test session gives all its brokers one, so its
        clients log in to any of them), else a random one."""
        path = self._password_file
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            chosen = os.environ.get("CDT_KAFKA_ADMIN_PASSWORD") or secrets.token_urlsafe(24)
            path.write_text(chosen)
        return path.read_text().strip()

    def client_env(self) -> dict[str, str]:
        return admin_client_env(self.admin_password)

    def write_admin_properties(self) -> Path:
        """A client properties file for the superuser that Kafka's console tools accept
        (`--command-config`), readable by its owner only."""
        path = self.data_dir / "admin.properties"
        path.touch(mode=0o600)
        path.chmod(0o600)
        superuser = KafkaSettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=SASL_MECHANISM,
            kafka_username=ADMIN_USER,
            kafka_password=SecretStr(self.admin_password),
        )
        lines = [f"bootstrap.servers={self.bootstrap_servers}", *java_client_properties(superuser)]
        path.write_text("\n".join([*lines, ""]))
        return path

    def _java(self, libs: Path, main: str, *args: str, heap: str) -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'app-logs'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self, *, log: IO[str] | None = None, timeout: float = 90) -> str:
        """Start (resolving jars and formatting storage on first use); returns bootstrap servers."""
        libs = resolve_classpath(log=log)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Storage formatted before the broker authenticated anyone has no superuser yet.
        without_superuser = self._formatted() and not self._password_file.exists()
        config = self._write_config()
        if not self._formatted():
            self._format(libs, config)
        self._stop_leftovers(config)
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: is another broker running?")
        if without_superuser:
            self._add_superuser(libs, log=log, timeout=timeout)
        self.proc = spawn(self._java(libs, "kafka.Kafka", str(config), heap=self.heap), log=log)
        wait_until(self._ready, timeout=timeout, what="Kafka", proc=self.proc, interval=0.3)
        self.write_admin_properties()
        return self.bootstrap_servers

    def _format(self, libs: Path, config: Path) -> None:
        subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(config),
                # The superuser exists from the first start: every client authenticates.
                "--add-scram",
                f"{SASL_MECHANISM}=[name={ADMIN_USER},password={self.admin_password}]",
                heap="256m",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def _add_superuser(self, libs: Path, *, log: IO[str] | None, timeout: float) -> None:
        """Once, for storage formatted without one: start the broker with an extra PLAINTEXT
        listener on 127.0.0.1, whose principal (ANONYMOUS) is a super user, create the
        superuser's credentials through it, and stop; the listener is gone at the next start."""
        from common.kafka_access import KafkaAccess
        from common.settings import KafkaSettings

        setup_port = free_port()
        setup = KafkaSettings(
            kafka_bootstrap_servers=f"127.0.0.1:{setup_port}",
            CDT_KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        )
        config = self._write_config(setup_port=setup_port)
        proc = spawn(self._java(libs, "kafka.Kafka", str(config), heap=self.heap), log=log)
        try:
            anonymous = {"CDT_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
            wait_until(
                lambda: broker_answers(setup.kafka_bootstrap_servers, anonymous),
                timeout=timeout,
                what="Kafka (adding its superuser)",
                proc=proc,
                interval=0.3,
            )

            async def add() -> None:
                async with KafkaAccess(setup) as access:
                    await access.set_password(ADMIN_USER, self.admin_password)

            asyncio.run(add())
        finally:
            stop_process(proc, timeout=60)
        self._write_config()

    def _stop_leftovers(self, config: Path) -> None:
        """A broker of this data dir that outlived its supervisor (killed, it is still shutting
        down) holds the ports and the log dir: stop it (controlled shutdown, SIGKILL after 60 s).
        Not for brokers in use: `make run` holds a lock on its data dir."""
        if leftovers := live_processes(
            lambda pid: "kafka.Kafka" in (args := cmdline(pid)) and str(config) in args
        ):
            stop_pids(leftovers, sig=signal.SIGTERM, timeout=60)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        return broker_answers(self.bootstrap_servers, self.client_env())

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
            self.proc.wait()
        else:
            stop_process(self.proc, timeout=60)
        self.proc = None

    def libs(self) -> Path:
        return resolve_classpath()


def admin_client_env(password: str) -> dict[str, str]:
    """The settings (`common.settings.KafkaSettings`) of a client acting as the superuser."""
    return {
        "CDT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CDT_KAFKA_SASL_MECHANISM": SASL_MECHANISM,
        "CDT_KAFKA_USERNAME": ADMIN_USER,
        "CDT_KAFKA_PASSWORD": password,
    }


def _cluster_id() -> str:
    """A random KRaft cluster id; one starting with '-' would parse as a command-line flag."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
