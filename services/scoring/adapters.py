"""Scoring persistence: tables in the `scoring` schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from common.outbox_tables import define_service_tables

SCHEMA = "scoring"
metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)
