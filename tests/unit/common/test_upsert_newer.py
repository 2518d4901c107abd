"""`common.db.upsert_newer`: the one "newer version wins" upsert of the replicas."""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from common.db import upsert_newer

metadata = MetaData(schema="demo")
replica = Table(
    "replica",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String),
    Column("name", String),
    Column("note", String),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True)),
)


def sql(statement: ClauseElement) -> str:
    return " ".join(str(statement.compile(dialect=postgresql.dialect())).split())


def test_only_a_newer_version_overwrites_every_column_but_the_key() -> None:
    text = sql(upsert_newer(replica, {"id": 1, "name": "a", "version": 2}))
    assert "ON CONFLICT (id) DO UPDATE SET" in text
    assert "name = excluded.name, version = excluded.version, updated_at = now()" in text
    assert text.endswith("WHERE demo.replica.version < excluded.version")


def test_chosen_columns_composite_key_several_rows_and_no_stamp() -> None:
    rows = [
        {"id": 1, "kind": "k", "name": "a", "note": "x", "version": 2},
        {"id": 2, "kind": "k", "name": "b", "note": "y", "version": 1},
    ]
    statement = upsert_newer(replica, rows, key=("id", "kind"), columns=("name",), stamp=None)
    text = sql(statement.returning(replica.c.version))
    assert "ON CONFLICT (id, kind) DO UPDATE SET name = excluded.name WHERE" in text
    assert "note = excluded" not in text and "updated_at" not in text
    # one statement, the rows in one JSON parameter typed by the table's row type
    assert 'FROM jsonb_populate_recordset(NULL::"demo"."replica", CAST(%(table_rows)s' in text
    assert "VALUES" not in text
    params = statement.compile(dialect=postgresql.dialect()).params
    assert json.loads(params["table_rows"]) == rows
    assert text.endswith("RETURNING demo.replica.version")
