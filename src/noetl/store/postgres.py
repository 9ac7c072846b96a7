"""`PostgresStore`: the Store port on PostgreSQL (psycopg 3 and a `psycopg_pool.ConnectionPool`).

Everything lives in one schema, `noetl` unless the caller names another (the contract tests give
each test a schema of its own). The schema is created on construction by numbered migrations
(`noetl.store.postgres_sql.MIGRATIONS`, applied by `noetl.store.postgres_migrate`), recorded in `<schema>.schema_migrations` and applied under a session
advisory lock, so servers starting together queue instead of racing; once every migration is
recorded, construction runs no DDL at all (a role without CREATE rights can use a prepared schema).

Pooled connections run in autocommit with the session time zone UTC; every write is one explicit
transaction. `append` sends a batch as one pipelined `executemany` of `INSERT ... ON CONFLICT
(event_id) DO NOTHING RETURNING event_id` (one round trip, one prepared plan), so a retried event
is ignored and the execution projection (the rules of `noetl.store.projection`, as in the SQLite
adapter) follows only the events that were new, in the same transaction. JSON goes in as `Jsonb` (compact text, encoded up front so a value that is not
JSON fails before the transaction and names its event) and comes back parsed by psycopg.
Timestamps are stored as TIMESTAMPTZ at millisecond precision, like the other adapters.
psycopg errors become `Conflict` (integrity) or `StoreError`, with the original as `__cause__`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from noetl.engine.events import Event, utcnow
from noetl.errors import Conflict, StoreError
from noetl.ids import default_ids
from noetl.secrets import redact_url
from noetl.store import projection
from noetl.store.codec import utc_ms
from noetl.store.ports import (
    RUNNING,
    CatalogEntry,
    ExecutionSummary,
    StoredCredential,
    TokenRecord,
    WorkerRecord,
)
from noetl.store.postgres_locks import ExecutionLocks
from noetl.store.postgres_migrate import migrate
from noetl.store.postgres_rows import (
    TOKEN_COLUMNS,
    catalog_entry_of,
    configure,
    event_of,
    event_row,
    events_document,
    execution_of,
    token_of,
    utc,
)
from noetl.store.postgres_sql import EXECUTION_COLUMNS, Statements
from noetl.store.postgres_triggers import PostgresTriggers
from noetl.store.solo import free_node

if TYPE_CHECKING:
    from noetl.store.crypto import Cipher

log = logging.getLogger(__name__)

DEFAULT_SCHEMA: Final = "noetl"
MIN_POOL_SIZE: Final = 1
MAX_POOL_SIZE: Final = 10
CONNECT_TIMEOUT: Final = 30.0  # seconds to wait for the pool's first connection / a free connection

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

Connection = psycopg.Connection[TupleRow]


class PostgresStore(PostgresTriggers):
    """The Store port on PostgreSQL. `url` is a libpq URL (`postgresql://user@host:5432/db`)."""

    shared = True  # several server processes may share the database

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        cipher: Cipher | None = None,
        min_size: int = MIN_POOL_SIZE,
        max_size: int = MAX_POOL_SIZE,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(
                f"invalid PostgreSQL schema name {schema!r}: use lower-case letters, digits and '_' "
                "(63 at most, not starting with a digit)"
            )
        self.url = url
        self.schema = schema
        self._cipher = cipher
        self._where = redact_url(url)
        self._sql = Statements(f'"{schema}"')
        kwargs: dict[str, Any] = {"autocommit": True}
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"invalid PostgreSQL URL {self._where}: {exc}") from exc
        if "application_name" not in given:
            kwargs["application_name"] = "noetl"
        if "connect_timeout" not in given:  # libpq waits forever on an unanswering host
            kwargs["connect_timeout"] = max(1, round(timeout))
        # Connect once directly: it reports the real reason (bad password, no such database)
        # where a pool would only time out, and it holds the migration lock.
        with self._errors("connect"), psycopg.connect(url, **kwargs) as conn:
            configure(conn)
            migrate(conn, self._sql.schema, self.schema, self._where)
        self._conn_kwargs = kwargs
        self._locks: ExecutionLocks | None = None
        self._lock_pool_guard = threading.Lock()
        self._leaders: dict[str, Connection] = {}
        self._write_seqs: dict[int, int] = {}  # execution -> write sequence this process last saw
        self._locked_seqs: dict[int, int] = {}  # execution -> its write sequence while locked here
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=True,
            configure=configure,
            name=f"noetl-store-{schema}",
            timeout=timeout,
        )
        try:
            with self._errors("open the connection pool"):
                self._pool.wait(timeout=timeout)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r}, schema={self.schema!r})"

    def close(self) -> None:
        with self._errors("close"):
            self._pool.close()
            if self._locks is not None:
                self._locks.close()
            for conn in self._leaders.values():
                # Unlock before closing: the server ends a closed session's locks a moment
                # later, and the next leader should not have to wait for that.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock_all()")
                conn.close()
            self._leaders.clear()

    # -- cross-process coordination ---------------------------------------------------------

    @contextmanager
    def execution_lock(self, execution_id: int) -> Iterator[None]:
        """Serialise orchestration of one execution across server processes: a session-level
        advisory lock, on a connection of a small pool of its own, kept a moment after use so
        the next report of the same execution needs no round trip for it (`postgres_locks`)."""
        if self._locks is None:
            with self._lock_pool_guard:
                if self._locks is None:
                    self._locks = ExecutionLocks(
                        self.url,
                        self._conn_kwargs,
                        schema=self.schema,
                        get_write_seq=self._sql.get_write_seq,
                        configure=configure,
                    )
        with self._errors("lock execution"):
            lease = self._locks.take(execution_id)
        if not lease.kept and self._write_seqs.get(execution_id, lease.seq) != lease.seq:
            self._locks.shared(execution_id)  # another process wrote since this one last did
        self._locked_seqs[execution_id] = lease.seq
        try:
            yield
        finally:
            seq = self._locked_seqs.pop(execution_id, lease.seq)
            with self._errors("unlock execution"):
                self._locks.give_back(lease, seq)

    def claim_dedup(self, scope: int, key: str, window_secs: int, execution_id: int) -> int | None:
        """Race-safe dedup for `/api/execute`: the first claim of (scope, key) inside the window
        wins (returns None); later ones get the winner's execution id."""
        table = f"{self._sql.schema}.execute_dedup"
        with self._writing("claim a dedup key") as conn:
            conn.execute(
                f"DELETE FROM {table} WHERE scope = %s AND dedup_key = %s"
                " AND seen_at < now() - make_interval(secs => %s)",
                (scope, key, window_secs),
            )
            row = conn.execute(
                f"INSERT INTO {table} (scope, dedup_key, execution_id, seen_at) VALUES (%s, %s, %s, now())"
                " ON CONFLICT (scope, dedup_key) DO NOTHING RETURNING execution_id",
                (scope, key, execution_id),
            ).fetchone()
            if row is not None:
                return None
            found = conn.execute(
                f"SELECT execution_id FROM {table} WHERE scope = %s AND dedup_key = %s", (scope, key)
            ).fetchone()
        return int(found[0]) if found else None

    def try_leadership(self, role: str) -> bool:
        """Whether this process holds `role` (e.g. the recovery loop) among all processes on this
        database. The first caller takes a session advisory lock on a connection it keeps; the
        lock passes to another process only when this one exits or loses its connection."""
        held = self._leaders.get(role)
        if held is not None:
            try:
                held.execute("SELECT 1")
                return True
            except psycopg.Error:
                self._leaders.pop(role, None)
                try:
                    held.close()
                except psycopg.Error:
                    pass
        key = (
            zlib.crc32(f"{self.schema}.leader".encode()) & 0x7FFFFFFF,
            zlib.crc32(role.encode()) & 0x7FFFFFFF,
        )
        try:
            conn = psycopg.connect(self.url, **self._conn_kwargs)
        except psycopg.Error:
            return False
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        if row and row[0]:
            self._leaders[role] = conn
            return True
        conn.close()
        return False

    def lease_node(self, owner: str, ttl_seconds: float) -> int:
        table = f"{self._sql.schema}.node_lease"
        with self._writing("lease a snowflake node") as conn:
            conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            conn.execute(f"DELETE FROM {table} WHERE expires_at <= now() AND owner <> %s", (owner,))
            row = conn.execute(
                f"UPDATE {table} SET expires_at = now() + make_interval(secs => %s) WHERE owner = %s"
                " RETURNING node_id",
                (ttl_seconds, owner),
            ).fetchone()
            if row is not None:
                return int(row[0])
            node = free_node(int(r[0]) for r in conn.execute(f"SELECT node_id FROM {table}").fetchall())
            conn.execute(
                f"INSERT INTO {table} (node_id, owner, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s))",
                (node, owner, ttl_seconds),
            )
            return node

    def release_node(self, owner: str) -> None:
        with self._writing("release a snowflake node") as conn:
            conn.execute(f"DELETE FROM {self._sql.schema}.node_lease WHERE owner = %s", (owner,))

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.IntegrityError as exc:
            raise Conflict(f"postgres store {self._where}: {action}: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"postgres store {self._where}: {action}: {exc}") from exc

    @contextmanager
    def _reading(self, action: str) -> Iterator[Connection]:
        """A pooled connection in autocommit: each statement sees the latest committed data."""
        with self._errors(action), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _locked_or_pooled(self, execution_id: int, action: str) -> Iterator[Connection]:
        """The connection holding the execution's lock when this thread holds it (the write
        then fails if the lock's session died), else a pooled one; autocommit either way."""
        conn = self._locks.connection_of(execution_id) if self._locks is not None else None
        if conn is None:
            with self._reading(action) as pooled:
                yield pooled
            return
        with self._errors(action):
            yield conn

    @contextmanager
    def _writing(self, action: str, execution_id: int | None = None) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises. On the
        lock's connection when this thread holds `execution_id`'s lock."""
        if execution_id is not None:
            with (
                self._locked_or_pooled(execution_id, action) as conn,
                self._errors(action),
                conn.transaction(),
            ):
                yield conn
            return
        with self._errors(action), self._pool.connection() as conn, conn.transaction():
            yield conn

    # -- event log -------------------------------------------------------------------------

    def write_behind(self, schedule: Callable[[Callable[[], None]], None]) -> AbstractContextManager[None]:
        """Appends are written at once (nothing is deferred)."""
        return nullcontext()

    def append(self, events: Sequence[Event], *, strict: bool = False) -> None:
        if not events:
            return
        unique: dict[int, Event] = {}
        for event in events:  # a duplicate inside the batch: the first one wins
            unique.setdefault(event.event_id, event)
        batch = list(unique.values())
        projected = [event for event in batch if event.event_type in projection.PROJECTED_TYPES]
        executions = list(dict.fromkeys(event.execution_id for event in batch))
        document = events_document(batch) if not projected and len(executions) == 1 else None
        if document is not None:
            # The common case (a worker's report and the commands it leads to): the batch as one
            # JSON document (encoded in C) and one statement, so one round trip, atomic without
            # a transaction block.
            execution_id = executions[0]
            statement = self._sql.append_events_strict if strict else self._sql.append_events
            with self._locked_or_pooled(execution_id, f"append {len(batch)} events") as conn:
                found = conn.execute(statement, (execution_id, document)).fetchone()
            if found is not None:
                self._wrote(execution_id, int(found[0]))
            return
        encoded = [event_row(event) for event in batch]  # encode first: a bad event stores nothing
        action = f"append {len(encoded)} events"
        writing = self._writing(action, executions[0] if len(executions) == 1 else None)
        with writing as conn, conn.cursor() as cur:
            # Every write bumps the execution's write sequence (a server that did not make the
            # last write knows its cached state is behind, see `is_stale`), and its rows carry
            # it. An execution this batch starts has no row yet: its sequence becomes 1 below.
            sequences: dict[int, int] = {}
            for execution_id in executions:
                found = cur.execute(self._sql.bump_write_seq, (execution_id,)).fetchone()
                if found is not None:
                    sequences[execution_id] = int(found[0])
            rows = [(*row, sequences.get(e.execution_id, 1)) for row, e in zip(encoded, batch, strict=True)]
            # psycopg pipelines executemany: one round trip for the batch, one plan for every row.
            insert = self._sql.insert_event_strict if strict else self._sql.insert_event
            cur.executemany(insert, rows, returning=bool(projected))
            if projected:
                inserted: set[int] = set()
                while True:  # one result per row: the event_id when it was new, nothing when not
                    row = cur.fetchone()
                    if row is not None:
                        inserted.add(row[0])
                    if not cur.nextset():
                        break
                for event in projected:  # the projection follows only new events, in batch order
                    if event.event_id in inserted:
                        self._project(cur, event)
            for execution_id in executions:
                if execution_id not in sequences:
                    found = cur.execute(self._sql.bump_write_seq, (execution_id,)).fetchone()
                    if found is not None:
                        sequences[execution_id] = int(found[0])
        for execution_id, seq in sequences.items():
            self._wrote(execution_id, seq)

    def _wrote(self, execution_id: int, seq: int) -> None:
        """This process made the execution's latest write (sequence `seq`)."""
        self._write_seqs[execution_id] = seq
        if execution_id in self._locked_seqs:
            self._locked_seqs[execution_id] = seq

    def is_stale(self, execution_id: int) -> bool:
        """Whether another process wrote to the execution since this store last wrote or read it
        (read with the execution's lock, else one primary-key lookup)."""
        return self._write_seqs.get(execution_id) != self._current_seq(execution_id)

    def unseen(self, execution_id: int) -> list[Event] | None:
        """What other processes wrote to the execution since this process last saw it, in write
        order; the execution is current afterwards. None when this process never saw it."""
        seen = self._write_seqs.get(execution_id)
        if seen is None:
            return None
        current = self._current_seq(execution_id)
        with self._reading("read unseen events") as conn:
            rows = conn.execute(self._sql.read_events_unseen, (execution_id, seen)).fetchall()
        self._write_seqs[execution_id] = current
        return [event_of(row) for row in rows]

    def mark_current(self, execution_id: int) -> None:
        """Record the execution's write sequence as seen (after rebuilding state from the log)."""
        self._write_seqs[execution_id] = self._current_seq(execution_id)

    def _current_seq(self, execution_id: int) -> int:
        locked = self._locked_seqs.get(execution_id)
        if locked is not None:
            return locked
        with self._reading("read the write sequence") as conn:
            row = conn.execute(self._sql.get_write_seq, (execution_id,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _project(self, cur: psycopg.Cursor[TupleRow], event: Event) -> None:
        change = projection.change(event)
        if isinstance(change, projection.Start):
            cur.execute(
                self._sql.start_execution,
                (
                    change.execution_id,
                    change.path,
                    change.catalog_id,
                    change.parent_execution_id,
                    RUNNING,
                    change.started_at,
                ),
            )
        elif isinstance(change, projection.Finish):
            cur.execute(
                self._sql.finish_execution,
                (change.execution_id, change.status, change.completed_at, change.completed_at, change.error),
            )

    def read(self, execution_id: int, *, after_event_id: int | None = None) -> list[Event]:
        with self._reading("read events") as conn:
            if after_event_id is None:
                rows = conn.execute(self._sql.read_events, (execution_id,)).fetchall()
            else:
                rows = conn.execute(self._sql.read_events_after, (execution_id, after_event_id)).fetchall()
        return [event_of(row) for row in rows]

    def known_event_ids(self, event_ids: Sequence[int]) -> set[int]:
        if not event_ids:
            return set()
        with self._reading("check event ids") as conn:
            rows = conn.execute(
                f"SELECT event_id FROM {self._sql.schema}.event WHERE event_id = ANY(%s)", (list(event_ids),)
            ).fetchall()
        return {int(row[0]) for row in rows}

    def get_event(self, event_id: int) -> Event | None:
        with self._reading("get event") as conn:
            row = conn.execute(self._sql.get_event, (event_id,)).fetchone()
        return None if row is None else event_of(row)

    def execution(self, execution_id: int) -> ExecutionSummary | None:
        with self._reading("get execution") as conn:
            row = conn.execute(self._sql.get_execution, (execution_id,)).fetchone()
        return None if row is None else execution_of(row)

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
            where.append("status = %s")
            params.append(status)
        if parent_execution_id is not None:
            where.append("parent_execution_id = %s")
            params.append(parent_execution_id)
        for clause, value in (
            ("path = %s", path),
            ("started_at >= %s", started_after),
            ("started_at < %s", started_before),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {EXECUTION_COLUMNS} FROM {self._sql.schema}.execution"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, execution_id DESC LIMIT %s OFFSET %s"
        with self._reading("list executions") as conn:
            rows = conn.execute(sql, (*params, limit, offset)).fetchall()
        return [execution_of(row) for row in rows]

    # -- catalog ---------------------------------------------------------------------------

    def register(self, content: str, *, path: str, kind: str = "playbook") -> CatalogEntry:
        catalog_id, created_at, kind = default_ids.next(), utc_ms(utcnow()), kind.lower()
        with self._writing(f"register {path}") as conn:
            # Serialise registrations of one path, so MAX(version) + 1 is never taken twice.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.catalog:{path}",))
            row = conn.execute(
                self._sql.register, (catalog_id, path, kind, content, created_at, path)
            ).fetchone()
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise StoreError(f"postgres store {self._where}: register {path}: no row returned")
        return CatalogEntry(catalog_id, path, row[0], kind, content, created_at, {})

    def resource(self, path: str, version: int | None = None) -> CatalogEntry | None:
        with self._reading(f"get {path}") as conn:
            if version is None:
                row = conn.execute(self._sql.latest_resource, (path,)).fetchone()
            else:
                row = conn.execute(self._sql.resource_version, (path, version)).fetchone()
        return None if row is None else catalog_entry_of(row)

    def resource_by_id(self, catalog_id: int) -> CatalogEntry | None:
        with self._reading("get catalog entry") as conn:
            row = conn.execute(self._sql.resource_by_id, (catalog_id,)).fetchone()
        return None if row is None else catalog_entry_of(row)

    def entries(self, kind: str | None = None) -> list[CatalogEntry]:
        with self._reading("list catalog") as conn:
            if kind is None:
                rows = conn.execute(self._sql.entries).fetchall()
            else:
                rows = conn.execute(self._sql.entries_of_kind, (kind.lower(),)).fetchall()
        return [catalog_entry_of(row) for row in rows]

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
        now = utc_ms(utcnow())
        created = utc_ms(credential.created_at) if credential.created_at else now
        row = (default_ids.next(), credential.name, credential.type, sealed, credential.description)
        with self._writing(f"put credential {credential.name!r}") as conn:
            conn.execute(self._sql.put_credential, (*row, list(credential.tags), created, now))

    def get_credential(self, name: str) -> StoredCredential | None:
        with self._reading(f"get credential {name!r}") as conn:
            row = conn.execute(self._sql.get_credential, (name,)).fetchone()
        return None if row is None else self._credential(row)

    def list_credentials(self) -> list[StoredCredential]:
        with self._reading("list credentials") as conn:
            rows = conn.execute(self._sql.list_credentials).fetchall()
        return [self._credential(row) for row in rows]

    def delete_credential(self, name: str) -> bool:
        with self._writing(f"delete credential {name!r}") as conn:
            return conn.execute(self._sql.delete_credential, (name,)).rowcount > 0

    def _credential(self, row: tuple[Any, ...]) -> StoredCredential:
        name, type_, sealed, description, tags, created_at, updated_at = row
        return StoredCredential(
            name=name,
            type=type_,
            data=self.cipher.decrypt(sealed, name=name),
            description=description,
            tags=tuple(tags or ()),
            created_at=utc(created_at),
            updated_at=utc(updated_at),
        )

    # -- API tokens ------------------------------------------------------------------------

    def put_token(self, record: TokenRecord) -> None:
        with self._writing(f"add token {record.name!r}") as conn:
            conn.execute(
                f"INSERT INTO {self._sql.schema}.api_token (name, scope, token_hash, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (record.name, record.scope, record.token_hash, record.created_at),
            )

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._reading("look up a token") as conn:
            row = conn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM {self._sql.schema}.api_token WHERE token_hash = %s",
                (token_hash,),
            ).fetchone()
        return None if row is None else token_of(row)

    def tokens(self) -> list[TokenRecord]:
        with self._reading("list tokens") as conn:
            rows = conn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM {self._sql.schema}.api_token ORDER BY created_at, name"
            ).fetchall()
        return [token_of(row) for row in rows]

    def revoke_token(self, name: str) -> bool:
        with self._writing(f"revoke token {name!r}") as conn:
            cursor = conn.execute(
                f"UPDATE {self._sql.schema}.api_token SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                (name,),
            )
            return cursor.rowcount > 0

    # -- worker registry -------------------------------------------------------------------

    def upsert_worker(self, record: WorkerRecord) -> WorkerRecord:
        info = dict(record.info)
        labels = info.get("labels") if isinstance(info.get("labels"), dict) else None
        capacity = info.get("capacity") if isinstance(info.get("capacity"), int) else None
        with self._writing("register a worker") as conn:
            conn.execute(
                f"INSERT INTO {self._sql.schema}.runtime (runtime_id, name, kind, uri, status, labels, capacity,"
                " runtime, heartbeat) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (kind, name) DO UPDATE SET uri = EXCLUDED.uri, status = EXCLUDED.status,"
                " labels = EXCLUDED.labels, capacity = EXCLUDED.capacity, runtime = EXCLUDED.runtime,"
                " heartbeat = EXCLUDED.heartbeat, updated_at = now()",
                (
                    default_ids(),
                    record.name,
                    record.kind,
                    info.get("uri"),
                    record.status,
                    Jsonb(labels) if labels is not None else None,
                    capacity,
                    Jsonb(info),
                    utc(record.heartbeat),
                ),
            )
        return next(w for w in self.workers(record.kind) if w.name == record.name)

    def touch_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._writing("record a heartbeat") as conn:
            cursor = conn.execute(
                f"UPDATE {self._sql.schema}.runtime SET heartbeat = now(), updated_at = now()"
                " WHERE kind = %s AND name = %s",
                (kind, name),
            )
            return cursor.rowcount > 0

    def remove_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._writing("remove a worker") as conn:
            cursor = conn.execute(
                f"DELETE FROM {self._sql.schema}.runtime WHERE kind = %s AND name = %s", (kind, name)
            )
            return cursor.rowcount > 0

    def workers(self, kind: str | None = None) -> list[WorkerRecord]:
        sql = f"SELECT name, kind, status, runtime, heartbeat, created_at FROM {self._sql.schema}.runtime"
        params: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind = %s"
            params = (kind,)
        with self._reading("list workers") as conn:
            rows = conn.execute(sql + " ORDER BY name", params).fetchall()
        return [
            WorkerRecord(
                name=row[0],
                kind=row[1],
                status=row[2] or "",
                info=dict(row[3] or {}),
                heartbeat=utc(row[4]) if row[4] else utcnow(),
                created_at=utc(row[5]) if row[5] else None,
            )
            for row in rows
        ]
