"""The API token the test suite runs with: auth is on in every test (the servers the tests
start take it as their admin token, the CLI and workers send it)."""

from __future__ import annotations

import os

TEST_TOKEN = "noetl_test-admin-token-0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def use_test_token() -> None:
    """Every process the tests start (servers, workers, the CLI) inherits the token."""
    os.environ["NOETL_API_TOKEN"] = TEST_TOKEN
