"""What only the SQLite adapter, the store URLs and the credential cipher promise."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noetl.engine.events import COLUMNS, PLAYBOOK_STARTED, STEP_ENTER, Event
from noetl.errors import ConfigError, CredentialError, StoreError
from noetl.ids import Snowflake
from noetl.store import STORE_URL_ENV, default_store_url, open_store, sqlite_path
from noetl.store.codec import dump_time, load_time
from noetl.store.crypto import KEY_ENV, Cipher, key_from_text, load_key_file
from noetl.store.memory import MemoryStore
from noetl.store.ports import StoredCredential
from noetl.store.sqlite import SCHEMA_VERSION, SQLiteStore
from noetl.store.sqlite_checkpoint import SAFETY_PAGES

ids = Snowflake(node=9)
KEY_A = base64.urlsafe_b64encode(b"A" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"B" * 32).decode()
PASSWORD = "Tr0ub4dor&3-horse-battery-staple"

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@pytest.fixture(autouse=True)
def _test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_A)
    monkeypatch.delenv("NOETL_SQLITE_SYNC", raising=False)
    monkeypatch.delenv(STORE_URL_ENV, raising=False)


def event(execution_id: int, event_type: str = STEP_ENTER, **fields: object) -> Event:
    return Event(event_id=ids.next(), execution_id=execution_id, event_type=event_type, **fields)  # type: ignore[arg-type]


def secret() -> StoredCredential:
    return StoredCredential(name="warehouse", type="postgres", data={"user": "etl", "password": PASSWORD})


# -- schema and file behaviour ------------------------------------------------------------------


def test_event_table_has_exactly_the_event_columns(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(event)"))
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(event)")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert columns == COLUMNS
    assert {"idx_event_execution", "idx_event_parent_execution"} <= indexes
    assert "idx_event_type" not in indexes  # no query reads by type; it cost every commit pages
    assert version == SCHEMA_VERSION
    assert {"event", "execution", "catalog", "credential"} <= tables


def test_an_older_file_gets_the_run_list_indexes(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "old.db").close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP INDEX idx_execution_status_started")
        conn.execute("DROP INDEX idx_execution_path_started")
        conn.execute("PRAGMA user_version=3")
    SQLiteStore(tmp_path / "old.db").close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(execution)")}
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM execution WHERE path = 'p' "
                "ORDER BY started_at DESC, execution_id DESC LIMIT 50"
            )
        )
    assert {"idx_execution_status_started", "idx_execution_path_started"} <= indexes
    assert "idx_execution_path_started" in plan and "TEMP B-TREE" not in plan  # no sort of all rows


def test_an_older_file_loses_the_event_type_index_and_keeps_its_events(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "old.db")
    execution = ids.next()
    store.append([event(execution, PLAYBOOK_STARTED, meta={"path": "p"}), event(execution)])
    store.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("CREATE INDEX idx_event_type ON event (event_type)")
        conn.execute("PRAGMA user_version=5")
    reopened = SQLiteStore(tmp_path / "old.db")
    assert [e.event_type for e in reopened.read(execution)] == [PLAYBOOK_STARTED, STEP_ENTER]
    reopened.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(event)")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert "idx_event_type" not in indexes and "idx_event_execution" in indexes
    assert version == SCHEMA_VERSION == 6


def test_json_is_stored_compact_and_time_as_utc_milliseconds(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    execution = ids.next()
    store.append([event(execution, context={"a": [1, 2], "b": "ü"})])
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        context, created_at = conn.execute("SELECT context, created_at FROM event").fetchone()
    assert context == '{"a":[1,2],"b":"ü"}'
    assert len(created_at) == len("2026-01-02T03:04:05.678Z") and created_at.endswith("Z")


def test_data_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "noetl.db"
    store = SQLiteStore(path)
    execution = ids.next()
    store.append([event(execution, PLAYBOOK_STARTED, node_name="demo"), event(execution)])
    entry = store.register("kind: Playbook", path="demo")
    store.put_credential(secret())
    store.close()

    again = SQLiteStore(path)  # schema creation is idempotent
    assert len(again.read(execution)) == 2
    summary = again.execution(execution)
    assert summary is not None and summary.path == "demo"
    assert again.resource("demo") == entry
    stored = again.get_credential("warehouse")
    assert stored is not None and stored.data["password"] == PASSWORD
    assert again.register("kind: Playbook", path="demo").version == 2
    again.close()


def test_wal_and_synchronous_normal_by_default(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_the_log_is_checkpointed_beside_the_writer_from_the_first_write_to_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    checkpointer = store._checkpointer
    assert checkpointer is not None and not checkpointer.running  # a fork right after open has no thread
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == SAFETY_PAGES
    execution = ids.next()
    store.append([event(execution, PLAYBOOK_STARTED, meta={"path": "p"})])
    store.append([event(execution, result={"n": n, "pad": "x" * 2000}) for n in range(200)])
    assert checkpointer.running
    deadline = time.monotonic() + 10
    while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpointer.checkpoints > 0
    store.close()
    assert not checkpointer.running
    assert len(SQLiteStore(tmp_path / "s.db").read(execution)) == 201


def test_sync_mode_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    monkeypatch.setenv("NOETL_SQLITE_SYNC", "full")
    store = open_store(url)  # the edge reads the setting; the adapter takes it as an argument
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    monkeypatch.setenv("NOETL_SQLITE_SYNC", "sometimes")
    with pytest.raises(ConfigError, match="NOETL_SQLITE_SYNC"):
        open_store(url)
    with pytest.raises(StoreError, match="'sometimes' is not one of OFF, NORMAL, FULL, EXTRA"):
        SQLiteStore(tmp_path / "s.db", synchronous="sometimes")


def test_the_database_file_never_holds_a_plain_password(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put_credential(secret())
    store.put_credential(StoredCredential(name="warehouse", type="postgres", data={"password": PASSWORD}))

    def raw_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db"))

    assert PASSWORD.encode() not in raw_bytes()  # the WAL file included
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert PASSWORD.encode() not in raw_bytes()
    store.close()
    assert PASSWORD.encode() not in path.read_bytes()
    with sqlite3.connect(path) as conn:
        (sealed,) = conn.execute("SELECT data_encrypted FROM credential").fetchone()
    assert json.loads(sealed)["alg"] == "AES-256-GCM"


def test_a_wrong_key_is_a_credential_error_naming_the_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.put_credential(secret())
    store.close()

    monkeypatch.setenv(KEY_ENV, KEY_B)
    again = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(
        CredentialError, match=r"cannot decrypt credential 'warehouse': wrong NOETL_ENCRYPTION_KEY\?"
    ):
        again.get_credential("warehouse")
    assert again.delete_credential("warehouse") is True
    again.close()


def test_sqlite_errors_become_store_errors(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not a database file, just text " * 100)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(bad)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)

    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    with pytest.raises(StoreError):
        store.read(1)


def test_a_value_that_is_not_json_is_a_store_error_and_nothing_is_written() -> None:
    store = SQLiteStore(":memory:")
    execution = ids.next()
    with pytest.raises(StoreError, match="not JSON"):
        store.append([event(execution), event(execution, context={"when": object()})])
    assert store.read(execution) == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="schema version"):
        SQLiteStore(tmp_path / "s.db")


def test_a_failed_append_rolls_back_the_whole_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    execution = ids.next()
    store._conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON event WHEN NEW.node_name = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(StoreError, match="boom"):
        store.append(
            [event(execution, PLAYBOOK_STARTED), event(execution), event(execution, node_name="boom")]
        )
    assert store.read(execution) == []
    assert store.execution(execution) is None
    store.close()


def test_a_10k_item_loop_worth_of_events_is_fast(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    execution = ids.next()
    payload = {"command_id": "1:step:2:i0", "result": {"value": 42, "text": "x" * 100}}
    batches = [
        [event(execution, "call.done", node_name="loop", result={"status": "COMPLETED", "context": payload})
         for _ in range(1000)]
        for _ in range(50)
    ]  # fmt: skip
    started = time.perf_counter()
    for batch in batches:
        store.append(batch)
    elapsed = time.perf_counter() - started
    assert len(store.read(execution, after_event_id=batches[-1][-2].event_id)) == 1
    store.close()
    assert elapsed < 10, f"50,000 events took {elapsed:.1f}s"


# -- store URLs ---------------------------------------------------------------------------------


def test_sqlite_url_paths() -> None:
    assert sqlite_path("sqlite:///relative/path.db") == "relative/path.db"
    assert sqlite_path("sqlite:////abs/path.db") == "/abs/path.db"
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    with pytest.raises(StoreError):
        sqlite_path("sqlite://host/x.db")


def test_open_store_relative_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/run.db")
    assert isinstance(store, SQLiteStore)
    assert store.url == "sqlite:///data/run.db"
    store.close()
    assert (tmp_path / "data" / "run.db").is_file()


def test_open_store_absolute_sqlite_url(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    store = open_store(f"sqlite:///{target}")
    assert isinstance(store, SQLiteStore)
    store.close()
    assert target.is_file()
    assert str(target).startswith("/")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_open_store_in_memory_sqlite(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    store.append([event(ids.next())])
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_open_store_memory() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert store.url == "memory://"


def test_open_store_rejects_unknown_schemes() -> None:
    with pytest.raises(StoreError, match=r"mysql://db/x.*sqlite://.*memory://.*postgresql://"):
        open_store("mysql://db/x")


def test_open_store_postgres_without_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "noetl.store.postgres", None)  # makes the import fail
    with pytest.raises(StoreError, match="PostgreSQL store not available"):
        open_store("postgresql://localhost/noetl")
    with pytest.raises(StoreError, match="PostgreSQL store not available"):
        open_store("postgres://localhost/noetl")


def test_default_url_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv(STORE_URL_ENV, url)
    assert default_store_url() == url
    store = open_store()
    assert store.url == url
    store.close()
    assert (tmp_path / "env.db").is_file()


def test_default_url_is_a_file_in_the_user_data_dir() -> None:
    from platformdirs import user_data_dir

    url = default_store_url()
    assert url == "sqlite:///" + (Path(user_data_dir("noetl")) / "noetl.db").as_posix()
    if os.name == "posix":
        assert url.startswith("sqlite:////")


def test_importing_the_store_package_is_cheap() -> None:
    code = (
        "import sys, noetl.store; print(sorted(m for m in ('sqlite3', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- cipher and key handling --------------------------------------------------------------------


def test_cipher_round_trip_uses_a_fresh_nonce() -> None:
    cipher = Cipher(b"k" * 32)
    data = {"password": PASSWORD, "nested": {"n": 1}, "text": "ü"}
    one, two = cipher.encrypt(data), cipher.encrypt(data)
    assert one != two
    assert PASSWORD not in one
    assert cipher.decrypt(one) == cipher.decrypt(two) == data


def test_wrong_key_and_garbage_are_credential_errors() -> None:
    sealed = Cipher(b"k" * 32).encrypt({"a": 1})
    with pytest.raises(CredentialError, match=r"cannot decrypt credential 'x': wrong NOETL_ENCRYPTION_KEY\?"):
        Cipher(b"z" * 32).decrypt(sealed, name="x")
    with pytest.raises(CredentialError, match="malformed"):
        Cipher(b"k" * 32).decrypt("not json", name="x")
    with pytest.raises(CredentialError):
        Cipher(b"short")


def test_env_key_accepts_fernet_and_standard_base64_and_passphrases(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytes(range(256))[-32:]  # contains bytes that differ between the two base64 alphabets
    assert key_from_text(base64.urlsafe_b64encode(raw).decode()) == raw
    assert key_from_text(base64.b64encode(raw).decode()) == raw
    derived = key_from_text("correct horse battery staple")
    assert len(derived) == 32 and derived == key_from_text("correct horse battery staple")
    assert derived != key_from_text("correct horse battery stapler")

    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(raw).decode())
    sealed = Cipher.from_env().encrypt({"a": 1})
    assert Cipher(raw).decrypt(sealed) == {"a": 1}


def test_env_key_wins_over_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "encryption.key"
    Cipher.from_env(key_file=key_file)
    assert not key_file.exists()


@posix_only
def test_key_file_is_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    key_file = tmp_path / "data" / "encryption.key"
    sealed = Cipher.from_env(key_file=key_file).encrypt({"a": 1})

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(key_file.read_text().strip())) == 32
    assert Cipher.from_env(key_file=key_file).decrypt(sealed) == {"a": 1}
    assert [p.name for p in key_file.parent.iterdir()] == ["encryption.key"]  # no temp file left


@posix_only
def test_a_loose_key_file_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "encryption.key"
    key = load_key_file(key_file)
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="noetl.store.crypto"):
        assert load_key_file(key_file) == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_a_bad_key_file_is_a_credential_error(tmp_path: Path) -> None:
    key_file = tmp_path / "encryption.key"
    key_file.write_text("not a key\n")
    key_file.chmod(0o600)
    with pytest.raises(CredentialError, match="does not hold"):
        load_key_file(key_file)


def test_sqlite_store_uses_the_key_file_when_no_env_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    key_file = tmp_path / "keys" / "encryption.key"
    store = SQLiteStore(tmp_path / "s.db", cipher=Cipher.from_env(key_file=key_file))
    store.put_credential(secret())
    store.close()

    reopened = SQLiteStore(tmp_path / "s.db", cipher=Cipher.from_env(key_file=key_file))
    got = reopened.get_credential("warehouse")
    assert got is not None and got.data["password"] == PASSWORD
    reopened.close()


@given(
    st.datetimes(datetime(1900, 1, 1), datetime(9000, 1, 1), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_stored_time_is_the_utc_millisecond_whatever_the_zone(moment: datetime, offset_minutes: int) -> None:
    elsewhere = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=None).isoformat(
        timespec="milliseconds"
    )
    assert dump_time(moment) == dump_time(elsewhere) == expected + "Z"
    assert load_time(dump_time(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_stored_time_within_one_second_and_across_seconds() -> None:
    base = datetime(2026, 12, 3, 18, 9, 59, 998_500, tzinfo=UTC)
    texts = [dump_time(base + timedelta(microseconds=step * 700)) for step in range(6)]
    assert texts == [
        "2026-12-03T18:09:59.998Z",
        "2026-12-03T18:09:59.999Z",
        "2026-12-03T18:09:59.999Z",
        "2026-12-03T18:10:00.000Z",
        "2026-12-03T18:10:00.001Z",
        "2026-12-03T18:10:00.002Z",
    ]
    assert dump_time(datetime(2027, 12, 3, 18, 9, 59, tzinfo=UTC)) == "2027-12-03T18:09:59.000Z"
