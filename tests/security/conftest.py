"""Fixtures of the security tests: real servers on a fresh SQLite store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, f"sqlite:///{tmp_path}/store.db") as running:
        yield running


@pytest.fixture
def server(cluster: Cluster) -> str:
    """A server without a worker: commands wait until someone claims them over HTTP."""
    return cluster.start_server("server").url


@pytest.fixture
def worker_server(cluster: Cluster) -> str:
    """A server that also runs its commands (`--with-worker`)."""
    return cluster.start_server("server", extra_args=("--with-worker",)).url
