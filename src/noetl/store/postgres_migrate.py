"""The schema migrations of a PostgreSQL store: applied once, in order, under a session advisory
lock (servers starting together queue on it), each recorded in `<schema>.schema_migrations`."""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import TupleRow

from noetl.store.postgres_sql import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("noetl.store.postgres")

Connection = psycopg.Connection[TupleRow]


def migrate(conn: Connection, quoted: str, schema: str, where: str) -> None:
    """Apply the migrations `schema` (`quoted`: its quoted SQL name) lacks; `where` names the
    database in log lines."""
    if not pending(conn, quoted, schema, where):
        return
    lock_key = f"noetl.schema_migrations:{schema}"
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key,))
    try:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, name, text in pending(conn, quoted, schema, where):  # again: another server may have won
            with conn.transaction():
                conn.execute(text.replace("{schema}", quoted))
                conn.execute(
                    f"INSERT INTO {quoted}.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            log.info("postgres store %s: applied migration %d (%s)", where, version, name)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_key,))


def pending(conn: Connection, quoted: str, schema: str, where: str) -> list[tuple[int, str, str]]:
    """The migrations not yet recorded (all of them when the schema does not exist)."""
    table = f"{quoted}.schema_migrations"
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if row is None or not row[0]:
        return list(MIGRATIONS)
    applied = {version for (version,) in conn.execute(f"SELECT version FROM {table}")}
    newer = [version for version in applied if version > SCHEMA_VERSION]
    if newer:
        log.warning(
            "postgres store %s: schema %s has migration %d; this NoETL knows up to %d",
            where,
            schema,
            max(newer),
            SCHEMA_VERSION,
        )
    return [migration for migration in MIGRATIONS if migration[0] not in applied]
