"""The SQL of the PostgreSQL store: its numbered migrations and the statements it runs."""

from __future__ import annotations

from typing import Final

from noetl.engine.events import COLUMNS

# -- migrations ---------------------------------------------------------------------------------
#
# (version, name, SQL). `{schema}` stands for the quoted schema name. Append new migrations with
# the next number; never edit one that has shipped. Each runs in its own transaction and is
# written to be idempotent (IF NOT EXISTS), so a schema that was created by hand is adopted.

MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (
        1,
        "event log, execution projection, catalog, credentials, commands, runtimes",
        """
CREATE TABLE IF NOT EXISTS {schema}.event (
    event_id            BIGINT PRIMARY KEY,
    execution_id        BIGINT NOT NULL,
    parent_event_id     BIGINT,
    parent_execution_id BIGINT,
    catalog_id          BIGINT,
    event_type          TEXT NOT NULL,
    node_id             TEXT,
    node_name           TEXT,
    node_type           TEXT,
    status              TEXT,
    context             JSONB,
    meta                JSONB,
    result              JSONB,
    worker_id           TEXT,
    created_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS event_execution_idx ON {schema}.event (execution_id, event_id);
CREATE INDEX IF NOT EXISTS event_type_idx ON {schema}.event (event_type);
CREATE INDEX IF NOT EXISTS event_parent_execution_idx ON {schema}.event (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_command_id_idx ON {schema}.event ((meta->>'command_id'))
    WHERE (meta->>'command_id') IS NOT NULL;

CREATE TABLE IF NOT EXISTS {schema}.execution (
    execution_id        BIGINT PRIMARY KEY,
    path                TEXT,
    catalog_id          BIGINT,
    parent_execution_id BIGINT,
    status              TEXT NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    completed_at        TIMESTAMPTZ,
    error               TEXT
);
CREATE INDEX IF NOT EXISTS execution_started_idx ON {schema}.execution (started_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS execution_status_idx ON {schema}.execution (status);
CREATE INDEX IF NOT EXISTS execution_parent_idx ON {schema}.execution (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS {schema}.catalog (
    catalog_id BIGINT PRIMARY KEY,
    path       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    content    TEXT NOT NULL,
    meta       JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (path, version)
);
CREATE INDEX IF NOT EXISTS catalog_kind_idx ON {schema}.catalog (kind);
CREATE INDEX IF NOT EXISTS catalog_created_idx ON {schema}.catalog (created_at DESC, catalog_id DESC);

CREATE TABLE IF NOT EXISTS {schema}.credential (
    id             BIGINT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    data_encrypted TEXT NOT NULL,
    description    TEXT,
    tags           TEXT[] NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS credential_type_idx ON {schema}.credential (type);

CREATE TABLE IF NOT EXISTS {schema}.command (
    command_id   TEXT PRIMARY KEY,
    event_id     BIGINT UNIQUE,
    execution_id BIGINT NOT NULL,
    step         TEXT NOT NULL,
    tool_kind    TEXT,
    pool         TEXT,
    status       TEXT NOT NULL DEFAULT 'PENDING',
    worker_id    TEXT,
    attempt      INTEGER NOT NULL DEFAULT 1,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    lease_until  TIMESTAMPTZ,
    claimed_at   TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS command_queue_idx ON {schema}.command (status, pool, created_at);
CREATE INDEX IF NOT EXISTS command_execution_idx ON {schema}.command (execution_id);

CREATE TABLE IF NOT EXISTS {schema}.runtime (
    runtime_id   BIGINT PRIMARY KEY,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    uri          TEXT,
    status       TEXT,
    labels       JSONB,
    capabilities JSONB,
    capacity     INTEGER,
    runtime      JSONB,
    heartbeat    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, name)
);
""",
    ),
    (
        2,
        "execute dedup",
        """
CREATE TABLE IF NOT EXISTS {schema}.execute_dedup (
    scope        BIGINT NOT NULL,
    dedup_key    TEXT NOT NULL,
    execution_id BIGINT NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, dedup_key)
);
""",
    ),
    (
        3,
        "execution write sequence",
        """
ALTER TABLE {schema}.execution ADD COLUMN IF NOT EXISTS write_seq BIGINT NOT NULL DEFAULT 0;
""",
    ),
    (
        4,
        "API tokens and snowflake node leases",
        """
CREATE TABLE IF NOT EXISTS {schema}.api_token (
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS api_token_live_idx ON {schema}.api_token (name) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS {schema}.node_lease (
    node_id    INTEGER PRIMARY KEY,
    owner      TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL
);
""",
    ),
    (
        5,
        "schedules, their ticks, subscriptions and their message claims",
        """
CREATE TABLE IF NOT EXISTS {schema}.schedule (
    schedule_id BIGINT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    spec        JSONB NOT NULL,
    enabled     BOOLEAN NOT NULL,
    source      TEXT NOT NULL,
    next_run_at TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.schedule_tick (
    schedule_id  BIGINT NOT NULL,
    tick_at      TIMESTAMPTZ NOT NULL,
    execution_id BIGINT,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick_at)
);
CREATE INDEX IF NOT EXISTS schedule_tick_pending_idx ON {schema}.schedule_tick (schedule_id, tick_at)
    WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS {schema}.subscription (
    subscription_id BIGINT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    path            TEXT NOT NULL,
    spec            JSONB NOT NULL,
    enabled         BOOLEAN NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.subscription_message (
    subscription_id BIGINT NOT NULL,
    message_key     TEXT NOT NULL,
    execution_id    BIGINT NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, message_key)
);
""",
    ),
    (
        6,
        "run listing by status or playbook, newest first",
        """
CREATE INDEX IF NOT EXISTS execution_status_started_idx
    ON {schema}.execution (status, started_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS execution_path_started_idx
    ON {schema}.execution (path, started_at DESC, execution_id DESC);
""",
    ),
    (
        7,
        "the write sequence of each event (what another server wrote since, without a full read)",
        """
ALTER TABLE {schema}.event ADD COLUMN IF NOT EXISTS write_seq BIGINT;
CREATE INDEX IF NOT EXISTS event_write_seq_idx ON {schema}.event (execution_id, write_seq);
""",
    ),
    (
        8,
        "no index on event_type: no query reads events by type, and every insert paid for it",
        """
DROP INDEX IF EXISTS {schema}.event_type_idx;
""",
    ),
)
SCHEMA_VERSION: Final = max(version for version, _, _ in MIGRATIONS)

EVENT_COLUMNS = ", ".join(COLUMNS)
EXECUTION_COLUMNS = (
    "execution_id, path, catalog_id, status, started_at, completed_at, parent_execution_id, error"
)
CATALOG_COLUMNS = "catalog_id, path, version, kind, content, created_at, meta"
CREDENTIAL_COLUMNS = "name, type, data_encrypted, description, tags, created_at, updated_at"


class Statements:
    """The SQL of one store, with its (validated, quoted) schema name filled in."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = schema
        self.bump_write_seq = (
            f"UPDATE {s}.execution SET write_seq = write_seq + 1 WHERE execution_id = %s RETURNING write_seq"
        )
        self.get_write_seq = f"SELECT write_seq FROM {s}.execution WHERE execution_id = %s"
        # Insert a batch of one execution's events from one JSON array of rows and bump its
        # write sequence, in one statement (a data-modifying CTE runs whether or not it is read).
        # Each event row carries the write sequence of the write that stored it (the value the
        # execution's update returns, so concurrent writers never share one), and a server reads
        # just what others wrote since it last saw the execution (`unseen`).
        self.append_events = (
            f"WITH seq AS (UPDATE {s}.execution SET write_seq = write_seq + 1 WHERE execution_id = %s"
            " RETURNING write_seq),"
            f" added AS (INSERT INTO {s}.event ({EVENT_COLUMNS}, write_seq)"
            f" SELECT {EVENT_COLUMNS}, (SELECT write_seq FROM seq)"
            f" FROM jsonb_populate_recordset(NULL::{s}.event, %s::jsonb)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id)"
            " SELECT write_seq FROM seq"
        )
        self.insert_event = (
            f"INSERT INTO {s}.event ({EVENT_COLUMNS}, write_seq) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        # Strict appends: an event id that is stored already fails the statement (and the batch).
        self.append_events_strict = self.append_events.replace(" ON CONFLICT (event_id) DO NOTHING", "")
        self.insert_event_strict = self.insert_event.replace(" ON CONFLICT (event_id) DO NOTHING", "")
        select_events = f"SELECT {EVENT_COLUMNS} FROM {s}.event"
        self.read_events = f"{select_events} WHERE execution_id = %s ORDER BY event_id"
        self.read_events_after = (
            f"{select_events} WHERE execution_id = %s AND event_id > %s ORDER BY event_id"
        )
        self.read_events_unseen = (
            f"{select_events} WHERE execution_id = %s AND write_seq > %s ORDER BY write_seq, event_id"
        )
        self.get_event = f"{select_events} WHERE event_id = %s"
        self.start_execution = f"""
            INSERT INTO {s}.execution
                (execution_id, path, catalog_id, parent_execution_id, status, started_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (execution_id) DO UPDATE SET
                path = excluded.path, catalog_id = excluded.catalog_id,
                parent_execution_id = excluded.parent_execution_id, started_at = excluded.started_at
        """
        self.finish_execution = f"""
            INSERT INTO {s}.execution (execution_id, status, started_at, completed_at, error)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (execution_id) DO UPDATE SET
                status = excluded.status, completed_at = excluded.completed_at, error = excluded.error
        """
        self.get_execution = f"SELECT {EXECUTION_COLUMNS} FROM {s}.execution WHERE execution_id = %s"
        select_catalog = f"SELECT {CATALOG_COLUMNS} FROM {s}.catalog"
        self.register = f"""
            INSERT INTO {s}.catalog (catalog_id, path, version, kind, content, created_at, meta)
            SELECT %s, %s, COALESCE(MAX(version), 0) + 1, %s, %s, %s, '{{}}'::jsonb
            FROM {s}.catalog WHERE path = %s
            RETURNING version
        """
        self.latest_resource = f"{select_catalog} WHERE path = %s ORDER BY version DESC LIMIT 1"
        self.resource_version = f"{select_catalog} WHERE path = %s AND version = %s"
        self.resource_by_id = f"{select_catalog} WHERE catalog_id = %s"
        self.entries = f"{select_catalog} ORDER BY created_at DESC, catalog_id DESC"
        self.entries_of_kind = f"{select_catalog} WHERE kind = %s ORDER BY created_at DESC, catalog_id DESC"
        self.put_credential = f"""
            INSERT INTO {s}.credential
                (id, name, type, data_encrypted, description, tags, created_at, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s)
            ON CONFLICT (name) DO UPDATE SET
                type = excluded.type, data_encrypted = excluded.data_encrypted,
                description = excluded.description, tags = excluded.tags,
                updated_at = excluded.updated_at
        """
        select_credentials = f"SELECT {CREDENTIAL_COLUMNS} FROM {s}.credential"
        self.get_credential = f"{select_credentials} WHERE name = %s"
        self.list_credentials = f"{select_credentials} ORDER BY name"
        self.delete_credential = f"DELETE FROM {s}.credential WHERE name = %s"
