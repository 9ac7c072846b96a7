"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.support` must import the same way under pytest and under `python -m tests.support.stub_api`.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.auth import use_test_token  # noqa: E402
from tests.support.stub_api import StubAPI  # noqa: E402

use_test_token()  # auth is on everywhere: every server, worker and CLI call uses the test token

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_TEST_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of the local test database; skips when PostgreSQL is down, but fails when CI=true."""
    if not _reachable(PG_HOST, PG_PORT):
        message = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must run, not skip)")
        pytest.skip(f"{message}; start it to run this test")
    return PG_TEST_DSN


@pytest.fixture
def stub_api() -> Iterator[StubAPI]:
    """A fresh deterministic HTTP stub on an ephemeral port (`stub_api.base_url`)."""
    with StubAPI() as api:
        yield api


SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """`../shared/conformance/playbooks`, read in place; skips when missing, fails when CI=true."""
    path = SHARED_DIR / "conformance" / "playbooks"
    if not path.is_dir():
        message = f"the conformance corpus is not at {path}"
        if _ci():
            pytest.fail(f"{message} (CI=true: conformance tests must run, not skip)")
        pytest.skip(f"{message}; check out ../shared beside the project")
    return path


NATS_HOST = "127.0.0.1"
NATS_PORT = 4222


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the local NATS (JetStream) server; skips when it is down, but fails when CI=true."""
    if not _reachable(NATS_HOST, NATS_PORT):
        message = f"NATS is not reachable on {NATS_HOST}:{NATS_PORT}"
        if _ci():
            pytest.fail(f"{message} (CI=true: NATS tests must run, not skip)")
        pytest.skip(f"{message}; start nats-server -js to run this test")
    return f"nats://{NATS_HOST}:{NATS_PORT}"
