"""Notifications persistence: tables in the `notifications` schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from common.outbox_tables import define_service_tables

SCHEMA = "notifications"
metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)
