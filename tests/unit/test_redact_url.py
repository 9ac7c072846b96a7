"""`noetl.secrets.redact_url`: the one helper that takes passwords out of store and bus URLs
before they reach a message, a log line or the server's start-up banner."""

from __future__ import annotations

import pytest

from noetl.secrets import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://noetl:s3cret@db:5432/noetl", "postgresql://noetl:***@db:5432/noetl"),
        ("nats://user:p%40ss@127.0.0.1:4222", "nats://user:***@127.0.0.1:4222"),
        ("postgresql://noetl@db/noetl", "postgresql://noetl@db/noetl"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        (
            "postgresql://db/noetl?user=a&password=hunter2&schema=x",
            "postgresql://db/noetl?user=a&password=***&schema=x",
        ),
        ("host=db user=a password='it\\'s long' dbname=n", "host=db user=a password=*** dbname=n"),
        ("sqlite:///tmp/noetl.db", "sqlite:///tmp/noetl.db"),
    ],
)
def test_passwords_are_replaced(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_password_text_is_gone() -> None:
    assert "hunter2" not in redact_url("postgresql://x:hunter2@h/d?password=hunter2")
