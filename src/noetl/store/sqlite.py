"""`SQLiteStore`: the Store port on the standard library's sqlite3 (the embedded mode).

One connection per store, shared across threads behind a lock. Writes run in explicit
`BEGIN IMMEDIATE` transactions (so two processes on one file queue on the busy timeout instead
of failing on a lock upgrade); the file uses WAL with `synchronous=NORMAL` unless the
`synchronous` argument (NOETL_SQLITE_SYNC, passed by `open_store`) says otherwise (NORMAL in WAL mode never corrupts the file; a power cut
may lose the last transactions, which `FULL` prevents at the cost of an fsync per commit).
SQL text is constant, so sqlite3's statement cache prepares each statement once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noetl.engine.events import COLUMNS, Event, utcnow
from noetl.errors import Conflict, StoreError
from noetl.ids import default_ids
from noetl.settings import SQLITE_SYNC_MODES as SYNC_MODES
from noetl.store import projection
from noetl.store.codec import dump_json, dump_time, event_row, load_json, load_time, row_event
from noetl.store.ports import (
    RUNNING,
    CatalogEntry,
    ExecutionSummary,
    StoredCredential,
    TokenRecord,
    WorkerRecord,
)
from noetl.store.solo import SoloCoordination, free_node
from noetl.store.sqlite_behind import Batch, DeferredAppends, Schedule
from noetl.store.sqlite_checkpoint import SAFETY_PAGES, Checkpointer
from noetl.store.sqlite_triggers import TRIGGER_SCHEMA, SQLiteTriggers
from noetl.store.trigger_memory import LocalLocks

if TYPE_CHECKING:
    from noetl.store.crypto import Cipher

# 4: schedules and subscriptions (sqlite_triggers); 5: run-list indexes; 6: no index on
# event_type (no query reads by it, and with seven event types per step it cost every commit a
# page per type: ~100 us of a step's ~200 us of SQLite work).
SCHEMA_VERSION = 6
MEMORY = ":memory:"

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS event (
    event_id            INTEGER PRIMARY KEY,
    execution_id        INTEGER NOT NULL,
    parent_event_id     INTEGER,
    parent_execution_id INTEGER,
    catalog_id          INTEGER,
    event_type          TEXT NOT NULL,
    node_id             TEXT,
    node_name           TEXT,
    node_type           TEXT,
    status              TEXT,
    context             TEXT,
    meta                TEXT,
    result              TEXT,
    worker_id           TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_event_execution ON event (execution_id, event_id);
DROP INDEX IF EXISTS idx_event_type;
CREATE INDEX IF NOT EXISTS idx_event_parent_execution ON event (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS execution (
    execution_id        INTEGER PRIMARY KEY,
    path                TEXT,
    catalog_id          INTEGER,
    parent_execution_id INTEGER,
    status              TEXT NOT NULL,
    started_at          TEXT NOT NULL,
    completed_at        TEXT,
    error               TEXT
);
CREATE INDEX IF NOT EXISTS idx_execution_started ON execution (started_at, execution_id);
CREATE INDEX IF NOT EXISTS idx_execution_status ON execution (status);
CREATE INDEX IF NOT EXISTS idx_execution_status_started ON execution (status, started_at, execution_id);
CREATE INDEX IF NOT EXISTS idx_execution_path_started ON execution (path, started_at, execution_id);
CREATE INDEX IF NOT EXISTS idx_execution_parent ON execution (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS catalog (
    catalog_id INTEGER PRIMARY KEY,
    path       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    content    TEXT NOT NULL,
    meta       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (path, version)
);
CREATE INDEX IF NOT EXISTS idx_catalog_kind ON catalog (kind);

CREATE TABLE IF NOT EXISTS credential (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    data_encrypted TEXT NOT NULL,
    description    TEXT,
    tags           TEXT NOT NULL DEFAULT '[]',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_token (
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_api_token_live ON api_token (name) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS node_lease (
    node_id    INTEGER PRIMARY KEY,
    owner      TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS worker (
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    info TEXT NOT NULL,
    heartbeat TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"""
    + TRIGGER_SCHEMA
)

_EVENT_COLUMNS = ", ".join(COLUMNS)
_INSERT_EVENT_STRICT = f"INSERT INTO event ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS))})"
_INSERT_EVENT = _INSERT_EVENT_STRICT.replace("INSERT INTO", "INSERT OR IGNORE INTO")
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM event"
_START_EXECUTION = """
INSERT INTO execution (execution_id, path, catalog_id, parent_execution_id, status, started_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (execution_id) DO UPDATE SET
    path = excluded.path, catalog_id = excluded.catalog_id,
    parent_execution_id = excluded.parent_execution_id, started_at = excluded.started_at
"""
_FINISH_EXECUTION = """
INSERT INTO execution (execution_id, status, started_at, completed_at, error) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (execution_id) DO UPDATE SET
    status = excluded.status, completed_at = excluded.completed_at, error = excluded.error
"""
_EXECUTION_COLUMNS = (
    "execution_id, path, catalog_id, status, started_at, completed_at, parent_execution_id, error"
)
_CATALOG_COLUMNS = "catalog_id, path, version, kind, content, created_at, meta"
_CREDENTIAL_COLUMNS = "name, type, data_encrypted, description, tags, created_at, updated_at"
_PUT_CREDENTIAL = """
INSERT INTO credential (id, name, type, data_encrypted, description, tags, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    type = excluded.type, data_encrypted = excluded.data_encrypted,
    description = excluded.description, tags = excluded.tags, updated_at = excluded.updated_at
"""


class SQLiteStore(SQLiteTriggers, SoloCoordination):
    def __init__(
        self,
        path: str | Path = MEMORY,
        *,
        url: str | None = None,
        cipher: Cipher | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        """`synchronous`: SQLite's `PRAGMA synchronous` mode (`open_store` passes NOETL_SQLITE_SYNC)."""
        super().__init__()
        self.path = str(path)
        self.url = url or ("sqlite://" if self.path == MEMORY else f"sqlite:///{self.path}")
        self._cipher = cipher
        self._lock = threading.Lock()
        self._behind: DeferredAppends | None = None  # see write_behind
        self._trigger_locks = LocalLocks()
        self._checkpointer = None if self.path == MEMORY else Checkpointer(self.path)
        sync = synchronous.strip().upper()
        if sync not in SYNC_MODES:
            raise StoreError(f"SQLite synchronous mode {synchronous!r} is not one of {', '.join(SYNC_MODES)}")
        with self._errors(f"open {self.path}"):
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            try:
                self._setup(sync)
            except BaseException:
                self._conn.close()
                raise

    def _setup(self, sync: str) -> None:
        conn = self._conn
        if self.path != MEMORY:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_PAGES}")  # see sqlite_checkpoint
        conn.execute(f"PRAGMA synchronous={sync}")
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {found}; this NoETL understands up to {SCHEMA_VERSION}"
            )
        if found < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise

    def close(self) -> None:
        behind, self._behind = self._behind, None
        try:
            if behind is not None:
                behind.flush()
        finally:
            if self._checkpointer is not None:
                self._checkpointer.stop()
            with self._lock, self._errors("close"):
                self._conn.close()

    @contextmanager
    def write_behind(self, schedule: Schedule) -> Iterator[None]:
        """Within the block, `append` keeps its events and `schedule` has them written a moment
        later (`sqlite_behind`); the block's end writes what is left."""
        if self._behind is not None:  # nested: the outer block owns the deferral
            yield
            return
        behind = self._behind = DeferredAppends(self._write_batches, schedule)
        try:
            yield
        finally:
            self._behind = None
            behind.flush()

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"sqlite store {self.url}: {action}: {exc}") from exc
        except (sqlite3.Error, UnicodeError, OSError) as exc:
            raise StoreError(f"sqlite store {self.url}: {action}: {exc}") from exc

    @contextmanager
    def _held(self) -> Iterator[None]:
        """The connection's lock, once what `append` deferred (if anything) is written."""
        if self._behind is not None:
            self._behind.flush()
        with self._lock:
            yield

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._held(), self._errors(action):
            yield self._conn

    @contextmanager
    def _writing(self, action: str, *, deferred: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises.
        `deferred`: the write of the deferred appends themselves (it does not wait for them)."""
        if self._checkpointer is not None:
            self._checkpointer.ensure_started()
        with self._lock if deferred else self._held(), self._errors(action):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    # -- event log -------------------------------------------------------------------------

    def append(self, events: Sequence[Event], *, strict: bool = False) -> None:
        if not events:
            return
        batch = Batch(events, [event_row(event) for event in events], strict)
        if self._behind is not None:
            self._behind.put(batch)
            return
        with self._writing(f"append {len(batch.rows)} events") as conn:
            self._insert(conn, batch)

    def _write_batches(self, batches: list[Batch]) -> None:
        """One transaction for deferred batches: every batch or none."""
        count = sum(len(batch.rows) for batch in batches)
        with self._writing(f"append {count} events", deferred=True) as conn:
            for batch in batches:
                self._insert(conn, batch)

    def _insert(self, conn: sqlite3.Connection, batch: Batch) -> None:
        insert = _INSERT_EVENT_STRICT if batch.strict else _INSERT_EVENT  # strict: a stored id fails it all
        plain: list[Any] = []
        for event, row in zip(batch.events, batch.rows, strict=True):
            if event.event_type not in projection.PROJECTED_TYPES:
                plain.append(row)
                continue
            # Rare: insert alone, so the projection only follows events that were new.
            if conn.execute(insert, row).rowcount == 1:
                self._project(conn, event)
        if plain:
            conn.executemany(insert, plain)

    @staticmethod
    def _project(conn: sqlite3.Connection, event: Event) -> None:
        change = projection.change(event)
        if isinstance(change, projection.Start):
            conn.execute(
                _START_EXECUTION,
                (
                    change.execution_id,
                    change.path,
                    change.catalog_id,
                    change.parent_execution_id,
                    RUNNING,
                    dump_time(change.started_at),
                ),
            )
        elif isinstance(change, projection.Finish):
            completed = dump_time(change.completed_at)
            conn.execute(
                _FINISH_EXECUTION, (change.execution_id, change.status, completed, completed, change.error)
            )

    def read(self, execution_id: int, *, after_event_id: int | None = None) -> list[Event]:
        with self._reading("read events") as conn:
            if after_event_id is None:
                rows = conn.execute(
                    f"{_SELECT_EVENTS} WHERE execution_id = ? ORDER BY event_id", (execution_id,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"{_SELECT_EVENTS} WHERE execution_id = ? AND event_id > ? ORDER BY event_id",
                    (execution_id, after_event_id),
                ).fetchall()
        return [row_event(row) for row in rows]

    def known_event_ids(self, event_ids: Sequence[int]) -> set[int]:
        ids = list(dict.fromkeys(event_ids))
        found: set[int] = set()
        with self._reading("check event ids") as conn:
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT event_id FROM event WHERE event_id IN ({marks})", chunk
                ).fetchall()
                found.update(int(row[0]) for row in rows)
        return found

    def get_event(self, event_id: int) -> Event | None:
        with self._reading("get event") as conn:
            row = conn.execute(f"{_SELECT_EVENTS} WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else row_event(row)

    def execution(self, execution_id: int) -> ExecutionSummary | None:
        with self._reading("get execution") as conn:
            row = conn.execute(
                f"SELECT {_EXECUTION_COLUMNS} FROM execution WHERE execution_id = ?", (execution_id,)
            ).fetchone()
        return None if row is None else _execution(row)

    def executions(
        self,
        *,
        status: str | None = None,
        parent_execution_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
        path: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> list[ExecutionSummary]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if parent_execution_id is not None:
            where.append("parent_execution_id = ?")
            params.append(parent_execution_id)
        for clause, value in (
            ("path = ?", path),
            ("started_at >= ?", None if started_after is None else dump_time(started_after)),
            ("started_at < ?", None if started_before is None else dump_time(started_before)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {_EXECUTION_COLUMNS} FROM execution"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, execution_id DESC LIMIT ? OFFSET ?"
        with self._reading("list executions") as conn:
            rows = conn.execute(sql, (*params, limit, offset)).fetchall()
        return [_execution(row) for row in rows]

    # -- catalog ---------------------------------------------------------------------------

    def register(self, content: str, *, path: str, kind: str = "playbook") -> CatalogEntry:
        catalog_id, created_at = default_ids.next(), dump_time(utcnow())
        with self._writing(f"register {path}") as conn:
            version = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM catalog WHERE path = ?", (path,)
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO catalog ({_CATALOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, '{{}}')",
                (catalog_id, path, version, kind.lower(), content, created_at),
            )
        return CatalogEntry(catalog_id, path, version, kind.lower(), content, load_time(created_at), {})

    def resource(self, path: str, version: int | None = None) -> CatalogEntry | None:
        with self._reading(f"get {path}") as conn:
            if version is None:
                row = conn.execute(
                    f"SELECT {_CATALOG_COLUMNS} FROM catalog WHERE path = ? ORDER BY version DESC LIMIT 1",
                    (path,),
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT {_CATALOG_COLUMNS} FROM catalog WHERE path = ? AND version = ?", (path, version)
                ).fetchone()
        return None if row is None else _catalog_entry(row)

    def resource_by_id(self, catalog_id: int) -> CatalogEntry | None:
        with self._reading("get catalog entry") as conn:
            row = conn.execute(
                f"SELECT {_CATALOG_COLUMNS} FROM catalog WHERE catalog_id = ?", (catalog_id,)
            ).fetchone()
        return None if row is None else _catalog_entry(row)

    def entries(self, kind: str | None = None) -> list[CatalogEntry]:
        order = " ORDER BY created_at DESC, catalog_id DESC"
        with self._reading("list catalog") as conn:
            if kind is None:
                rows = conn.execute(f"SELECT {_CATALOG_COLUMNS} FROM catalog{order}").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_CATALOG_COLUMNS} FROM catalog WHERE kind = ?{order}", (kind.lower(),)
                ).fetchall()
        return [_catalog_entry(row) for row in rows]

    # -- credentials -----------------------------------------------------------------------

    @property
    def cipher(self) -> Cipher:
        """Built on first use, so stores that never touch credentials never need a key."""
        if self._cipher is None:
            from noetl.store.crypto import Cipher

            self._cipher = Cipher.from_env()
        return self._cipher

    def put_credential(self, credential: StoredCredential) -> None:
        sealed = self.cipher.encrypt(credential.data)
        now = dump_time(utcnow())
        created = dump_time(credential.created_at) if credential.created_at else now
        tags = dump_json(list(credential.tags))
        with self._writing(f"put credential {credential.name!r}") as conn:
            row = (default_ids.next(), credential.name, credential.type, sealed, credential.description)
            conn.execute(_PUT_CREDENTIAL, (*row, tags, created, now))

    def get_credential(self, name: str) -> StoredCredential | None:
        with self._reading(f"get credential {name!r}") as conn:
            row = conn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM credential WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else self._credential(row)

    def list_credentials(self) -> list[StoredCredential]:
        with self._reading("list credentials") as conn:
            rows = conn.execute(f"SELECT {_CREDENTIAL_COLUMNS} FROM credential ORDER BY name").fetchall()
        return [self._credential(row) for row in rows]

    def delete_credential(self, name: str) -> bool:
        with self._writing(f"delete credential {name!r}") as conn:
            return conn.execute("DELETE FROM credential WHERE name = ?", (name,)).rowcount > 0

    def _credential(self, row: tuple[Any, ...]) -> StoredCredential:
        name, type_, sealed, description, tags, created_at, updated_at = row
        return StoredCredential(
            name=name,
            type=type_,
            data=self.cipher.decrypt(sealed, name=name),
            description=description,
            tags=tuple(json.loads(tags)),
            created_at=load_time(created_at),
            updated_at=load_time(updated_at),
        )

    # -- API tokens ------------------------------------------------------------------------

    def put_token(self, record: TokenRecord) -> None:
        with self._writing(f"add token {record.name!r}") as conn:
            conn.execute(
                "INSERT INTO api_token (name, scope, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (record.name, record.scope, record.token_hash, dump_time(record.created_at)),
            )

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._reading("look up a token") as conn:
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_token WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else _token(row)

    def tokens(self) -> list[TokenRecord]:
        with self._reading("list tokens") as conn:
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_token ORDER BY created_at, rowid"
            ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, name: str) -> bool:
        with self._writing(f"revoke token {name!r}") as conn:
            cursor = conn.execute(
                "UPDATE api_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (dump_time(utcnow()), name),
            )
            return cursor.rowcount > 0

    # -- snowflake nodes (several processes may share one SQLite file) ----------------------

    def lease_node(self, owner: str, ttl_seconds: float) -> int:
        now = time.time()
        with self._writing("lease a snowflake node") as conn:
            conn.execute("DELETE FROM node_lease WHERE expires_at <= ? AND owner <> ?", (now, owner))
            row = conn.execute("SELECT node_id FROM node_lease WHERE owner = ?", (owner,)).fetchone()
            if row is not None:
                node = int(row[0])
                conn.execute(
                    "UPDATE node_lease SET expires_at = ? WHERE owner = ?", (now + ttl_seconds, owner)
                )
                return node
            taken = [int(r[0]) for r in conn.execute("SELECT node_id FROM node_lease").fetchall()]
            node = free_node(taken)
            conn.execute(
                "INSERT INTO node_lease (node_id, owner, expires_at) VALUES (?, ?, ?)",
                (node, owner, now + ttl_seconds),
            )
            return node

    def release_node(self, owner: str) -> None:
        with self._writing("release a snowflake node") as conn:
            conn.execute("DELETE FROM node_lease WHERE owner = ?", (owner,))

    # -- worker registry -------------------------------------------------------------------

    def upsert_worker(self, record: WorkerRecord) -> WorkerRecord:
        now = dump_time(utcnow())
        with self._held(), self._errors("register a worker"):
            self._conn.execute(
                "INSERT INTO worker (name, kind, status, info, heartbeat, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, name) DO UPDATE SET status = excluded.status, info = excluded.info,"
                " heartbeat = excluded.heartbeat",
                (
                    record.name,
                    record.kind,
                    record.status,
                    dump_json(record.info) or "{}",
                    dump_time(record.heartbeat),
                    now,
                ),
            )
        found = [w for w in self.workers(record.kind) if w.name == record.name]
        return found[0]

    def touch_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._held(), self._errors("record a heartbeat"):
            cursor = self._conn.execute(
                "UPDATE worker SET heartbeat = ? WHERE kind = ? AND name = ?",
                (dump_time(utcnow()), kind, name),
            )
            return cursor.rowcount > 0

    def remove_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._held(), self._errors("remove a worker"):
            cursor = self._conn.execute("DELETE FROM worker WHERE kind = ? AND name = ?", (kind, name))
            return cursor.rowcount > 0

    def workers(self, kind: str | None = None) -> list[WorkerRecord]:
        sql = "SELECT name, kind, status, info, heartbeat, created_at FROM worker"
        params: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            params = (kind,)
        with self._held(), self._errors("list workers"):
            rows = self._conn.execute(sql + " ORDER BY name", params).fetchall()
        return [
            WorkerRecord(
                name=row[0],
                kind=row[1],
                status=row[2],
                info=load_json(row[3]) or {},
                heartbeat=load_time(row[4]),
                created_at=load_time(row[5]),
            )
            for row in rows
        ]


_TOKEN_COLUMNS = "name, scope, token_hash, created_at, revoked_at"


def _token(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        name=row[0],
        scope=row[1],
        token_hash=row[2],
        created_at=load_time(row[3]),
        revoked_at=load_time(row[4]) if row[4] else None,
    )


def _execution(row: tuple[Any, ...]) -> ExecutionSummary:
    execution_id, path, catalog_id, status, started_at, completed_at, parent_execution_id, error = row
    return ExecutionSummary(
        execution_id=execution_id,
        path=path,
        catalog_id=catalog_id,
        status=status,
        started_at=load_time(started_at),
        completed_at=None if completed_at is None else load_time(completed_at),
        parent_execution_id=parent_execution_id,
        error=error,
    )


def _catalog_entry(row: tuple[Any, ...]) -> CatalogEntry:
    catalog_id, path, version, kind, content, created_at, meta = row
    return CatalogEntry(
        catalog_id=catalog_id,
        path=path,
        version=version,
        kind=kind,
        content=content,
        created_at=load_time(created_at),
        meta=load_json(meta) or {},
    )
