"""The AsyncAPI 3.0 document of the platform's topics, generated from the one declaration of
the topics (`common.topics`) and the pydantic contracts (`common.contracts`).

`python -m common.asyncapi` rewrites `docs/asyncapi.yaml`; `--check` exits 1 when the committed
document differs from what the code declares (CI runs the test that does the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from common import topics
from common.contracts import activities, notifications, scoring, teams
from common.envelope import SPEC_VERSION, EventContract
from common.topics import TopicSpec

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
CONTRACTS: tuple[type[EventContract], ...] = (
    teams.TeamChanged,
    teams.MemberChanged,
    teams.AdminUnitChanged,
    activities.ActivityRecorded,
    activities.ActivityVoided,
    activities.PartnerChanged,
    scoring.ScoreUpdated,
    scoring.ScoreLatest,
    scoring.EvaluationRoundChanged,
    notifications.AlertRaised,
)
# What the Kafka key of each topic's records is (the partitioning: one key's records in order).
KEYS: dict[str, str] = {
    topics.TEAMS_TEAM.name: "the team id",
    topics.TEAMS_MEMBER.name: "the member id",
    topics.TEAMS_ADMIN_UNIT.name: "the unit code",
    topics.ACTIVITY_RECORDED.name: "the team id",
    topics.ACTIVITY_VOIDED.name: "the team id",
    topics.ACTIVITIES_PARTNER.name: "the partner id",
    topics.SCORE_UPDATED.name: "`subject_type:subject_id:period`",
    topics.SCORE_LATEST.name: "`subject_type:subject_id:period`",
    topics.EVALUATION_ROUND.name: "the round id",
    topics.ALERT_RAISED.name: "the alert id",
}
SCHEMAS = "#/components/schemas/{model}"


def channel_id(topic: TopicSpec) -> str:
    """A component key (letters, digits, `_`, `-`) for the topic."""
    return topic.name.replace(".", "_")


def _headers(contract: type[EventContract]) -> dict[str, Any]:
    """The CloudEvents (Kafka binary mode) headers every record of the contract carries."""
    return {
        "type": "object",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_time",
            "content-type",
        ],
        "properties": {
            "ce_specversion": {"type": "string", "const": SPEC_VERSION},
            "ce_id": {"type": "string", "description": "event id (UUIDv7); readers dedupe by it"},
            "ce_type": {"type": "string", "const": contract.CE_TYPE},
            "ce_source": {"type": "string", "description": "the producing service, `/cdt/...`"},
            "ce_time": {"type": "string", "format": "date-time"},
            "ce_dataschema": {
                "type": "string",
                "format": "uri",
                "description": "where this schema is served: "
                f"`<CDT_SCHEMA_BASE_URL>/schemas/{contract.CE_TYPE}.json`",
            },
            "ce_subject": {"type": "string", "description": "what the event is about"},
            "content-type": {"type": "string", "const": "application/json"},
            "traceparent": {"type": "string", "description": "W3C trace context"},
            "tracestate": {"type": "string"},
        },
    }


def document() -> dict[str, Any]:
    """The whole document as plain data (deterministic: same code, same document)."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {}
    for contract in CONTRACTS:
        payload = contract.model_json_schema(ref_template=SCHEMAS, mode="serialization")
        schemas.update(payload.pop("$defs", {}))
        name = contract.__name__
        messages[name] = {
            "name": name,
            "title": contract.CE_TYPE,
            "summary": (contract.__doc__ or name).strip().splitlines()[0],
            "contentType": "application/json",
            "headers": _headers(contract),
            "payload": payload,
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": KEYS[contract.TOPIC.name]},
                    "bindingVersion": "0.5.0",
                }
            },
        }
        by_topic.setdefault(contract.TOPIC.name, []).append(name)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in topics.DOMAIN_TOPICS:
        key = channel_id(topic)
        channels[key] = {
            "address": topic.name,
            "description": f"Key: {KEYS[topic.name]}. "
            + ("Compacted: the latest record per key is kept." if topic.compacted else ""),
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in by_topic[topic.name]},
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": ["compact" if topic.compacted else "delete"]
                    },
                    "bindingVersion": "0.5.0",
                }
            },
        }
        operations[f"publish_{key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{m}"} for m in by_topic[topic.name]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CDT platform events",
            "version": "1.0.0",
            "description": "The topics of Vietnam's Community Digital Technology Teams platform: "
            "what each service publishes. Generated by `python -m common.asyncapi` from "
            "`libs/common/topics.py` and `libs/common/contracts/`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "the broker `make run` starts (SASL_PLAINTEXT; production: "
                "SASL_SSL). Every client logs in with its own principal, and ACLs allow it "
                "only its topics and groups: docs/subscribers.md",
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "SASL SCRAM-SHA-512; an agency's principal is created by "
                    "`python -m common.kafka_access add-subscriber`",
                }
            },
        },
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT} is stale: run python -m common.asyncapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
