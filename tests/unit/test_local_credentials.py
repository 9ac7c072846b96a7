"""`noetl run`'s credentials: a missing one's message says how to add it to the store the run
reads (no `--store` for the default store), without a password from the store URL."""

from __future__ import annotations

import pytest

from noetl.errors import MissingCredential
from noetl.store import default_store_url
from noetl.store.memory import MemoryStore
from noetl.worker.credentials import local_store_credentials


def test_a_missing_credential_names_a_store_that_is_not_the_default() -> None:
    credentials = local_store_credentials(MemoryStore(), "postgresql://app:s3cret@db/noetl")
    with pytest.raises(MissingCredential) as missing:
        credentials.resolve("pg")
    text = str(missing.value)
    assert "in the store postgresql://app:***@db/noetl" in text
    assert text.endswith("--store postgresql://app:***@db/noetl")
    assert "s3cret" not in text


def test_a_missing_credential_of_the_default_store_needs_no_option() -> None:
    credentials = local_store_credentials(MemoryStore(), default_store_url())
    with pytest.raises(MissingCredential) as missing:
        credentials.resolve("pg")
    assert str(missing.value) == (
        "credential 'pg' not found; add it with: noetl credential add pg --type <type> --data '{...}'"
    )
