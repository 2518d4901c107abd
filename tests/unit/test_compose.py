"""docker-compose.yml cannot run here (no Docker engine); its structure is checked instead."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from activities.settings import ActivitiesSettings
from common.settings import ServiceSettings
from devstack.kafka import kafka_version
from notifications.settings import NotificationsSettings
from scoring.settings import ScoringSettings
from teams.settings import TeamsSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES: dict[str, type[ServiceSettings]] = {
    "teams": TeamsSettings,
    "activities": ActivitiesSettings,
    "scoring": ScoringSettings,
    "notifications": NotificationsSettings,
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def env_names(settings: type[ServiceSettings]) -> set[str]:
    return {(f.alias or name).upper() for name, f in settings.model_fields.items()}


def test_compose_runs_the_whole_stack() -> None:
    services = compose()["services"]
    assert set(services) >= {"postgres", "kafka", "otel-collector", "jaeger", *SERVICES}


def test_kafka_image_is_the_pinned_release_in_kraft_mode_with_sasl_and_acls() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    script = (ROOT / "deploy/kafka/compose-kafka.sh").read_text()
    assert kafka["command"] == ["/bin/bash", "/cdt/compose-kafka.sh"]
    assert "./deploy/kafka/compose-kafka.sh:/cdt/compose-kafka.sh:ro" in kafka["volumes"]
    for line in (
        "process.roles=broker,controller",
        "offsets.topic.replication.factor=1",
        "listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
    ):
        assert f"\n{line}\n" in script, line
    assert "--add-scram" in script


def test_kafka_setup_provisions_topics_and_principals_as_the_superuser() -> None:
    setup = compose()["services"]["kafka-setup"]
    assert setup["command"][:4] == ["python", "-m", "common.kafka_access", "provision-services"]
    assert setup["environment"]["CDT_KAFKA_USERNAME"] == "admin"
    assert setup["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_service_ports_commands_and_env_agree_with_the_code() -> None:
    services = compose()["services"]
    for name, settings in SERVICES.items():
        service = services[name]
        port = settings.model_fields["http_port"].default
        assert service["ports"] == [f"{port}:{port}"], name
        # Each logs in as its own principal, whose credentials kafka-setup wrote.
        assert service["command"] == [
            "sh",
            "-c",
            f". /var/lib/cdt-kafka/{name}.env && exec python -m {name} api",
        ]
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.exists()
        known = env_names(settings) | {"HTTP_PORT"}  # HTTP_PORT feeds the image's healthcheck
        assert set(service["environment"]) <= known, set(service["environment"]) - known
        assert str(port) in {str(v) for v in service["environment"].values()}
        assert service["environment"]["CDT_TRACES_EXPORTER"] == "otlp"
        assert service["depends_on"]["kafka-setup"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["environment"]["CDT_CREATE_TOPICS"] == "false"


def test_database_url_points_at_the_compose_postgres() -> None:
    env = compose()["services"]["teams"]["environment"]
    postgres = compose()["services"]["postgres"]["environment"]
    match = re.fullmatch(
        r"postgresql\+asyncpg://(\w+):(\w+)@postgres:5432/(\w+)", env["DATABASE_URL"]
    )
    assert match is not None
    assert match.groups() == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_collector_forwards_traces_to_jaeger() -> None:
    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"].startswith("jaeger:")
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]


def test_kubernetes_manifests_agree_with_the_code() -> None:
    k8s = ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    docs = [
        d
        for name in kustomization["resources"]
        for d in yaml.safe_load_all((k8s / name).read_text())
        if d
    ]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, settings in SERVICES.items():
        port = settings.model_fields["http_port"].default
        api = deployments[f"{name}-api"]["spec"]["template"]["spec"]["containers"][0]
        worker = deployments[f"{name}-worker"]["spec"]["template"]["spec"]["containers"][0]
        assert api["command"] == ["python", "-m", name, "api"]
        assert worker["command"] == ["python", "-m", name, "worker"]
        assert api["ports"] == [{"containerPort": port}]
        assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    assert kafka["spec"]["kafka"]["version"] == kafka_version()
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert set(config) <= env_names(ServiceSettings)


def test_the_keycloak_profile_issues_the_tokens_the_services_verify() -> None:
    stack = compose()
    keycloak = stack["services"]["keycloak"]
    assert keycloak["profiles"] == ["keycloak"]  # only when asked for: teams issues otherwise
    assert "--import-realm" in keycloak["command"]
    env = stack["x-service-env"]
    assert env["CDT_OIDC_ISSUER"] == "${CDT_OIDC_ISSUER:-http://teams:8001}"
    realm = json.loads((ROOT / "deploy/keycloak/cdt-realm.json").read_text(encoding="utf-8"))
    mount = "./deploy/keycloak/cdt-realm.json:/opt/keycloak/data/import/cdt-realm.json:ro"
    assert mount in keycloak["volumes"]
    assert realm["realm"] == "cdt" and realm["accessTokenLifespan"] <= 60  # no deny list there
    [client] = realm["clients"]
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    audience = ServiceSettings.model_fields["cdt_oidc_audience"].default
    assert mappers["oidc-audience-mapper"]["included.custom.audience"] == audience
    roles = mappers["oidc-usermodel-attribute-mapper"]
    assert (roles["claim.name"], roles["jsonType.label"]) == ("roles", "JSON")
    assert roles["access.token.claim"] == "true"
