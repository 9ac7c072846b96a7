"""The `runner` fixture: each conformance expectation runs once per mode (local, server,
distributed); see `runners.py`. Package-scoped, so a mode's cluster is started once and is gone
before the next package's tests (the chaos suite starts clusters of its own on the same NATS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.conformance.runners import (
    CORPUS_FILES,
    MODES,
    LocalRunner,
    Runner,
    ServerRunner,
)
from tests.conftest import PG_TEST_DSN
from tests.support.cluster import Cluster, post_json
from tests.support.credentials import (
    KEY_ENV,
    PG_ALIASES,
    add_credential,
    fresh_encryption_key,
    pg_credential_data,
)

SERVER_TIMEOUT = 120.0  # seconds one execution may take through the server
DISTRIBUTED_TIMEOUT = 180.0  # on 2 workers of a loaded 2-core machine
LEASE_SECONDS = "3"
WORKERS = ("conf-w1", "conf-w2")
# Trust auth: any password works; the corpus only needs the credentials to exist.
CREDENTIAL_PASSWORD = "conformance-any-password"


@pytest.fixture(scope="package", params=MODES)
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, conformance_dir: Path
) -> Iterator[Runner]:
    mode: str = request.param
    tmp = tmp_path_factory.mktemp(f"conformance-{mode}")
    if mode == "local":
        yield _local(conformance_dir, tmp)
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    bus = request.getfixturevalue("nats_url") if mode == "distributed" else None
    schema = f"noetl_conf_{uuid.uuid4().hex[:8]}"
    try:
        with Cluster(tmp, f"{dsn}?schema={schema}", bus_url=bus, env={KEY_ENV: fresh_encryption_key()}) as c:
            yield _server(mode, conformance_dir, c, dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _local(corpus: Path, tmp: Path) -> LocalRunner:
    """Every run gets a copy of a template store holding the corpus's PostgreSQL credentials."""
    env = {KEY_ENV: fresh_encryption_key()}
    template = tmp / "template.db"
    data = pg_credential_data(PG_TEST_DSN, password=CREDENTIAL_PASSWORD)
    for alias in PG_ALIASES:
        add_credential(f"sqlite:///{template}", alias, "postgres", data, env=env)
    return LocalRunner(corpus, tmp, template, env)


def _server(mode: str, corpus: Path, cluster: Cluster, dsn: str, schema: str) -> ServerRunner:
    # INFO: the server logs the late events it ignores (see Runner.commands_run_twice).
    env = {"NOETL_LOG_LEVEL": "INFO"}
    if mode == "server":
        server = cluster.start_server("server", env=env, extra_args=("--with-worker", "--workers", "16"))
        workers: tuple[str, ...] = ()
        timeout = SERVER_TIMEOUT
    else:
        server = cluster.start_server("server", env={**env, "NOETL_LEASE_SECONDS": LEASE_SECONDS})
        for worker_id in WORKERS:
            cluster.start_worker(worker_id, server.url, heartbeat_interval=1, concurrency=4)
        workers = WORKERS
        timeout = DISTRIBUTED_TIMEOUT
    runner = ServerRunner(
        mode, corpus, cluster, server, dsn=dsn, schema=schema, timeout=timeout, workers=workers
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(runner.register, CORPUS_FILES))
    data = pg_credential_data(dsn, password=CREDENTIAL_PASSWORD)
    for alias in PG_ALIASES:
        post_json(server.url, "/api/credentials", {"name": alias, "type": "postgres", "data": data})
    return runner
