"""`noetl.settings`: the one place NOETL_* environment variables are read and checked."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noetl.errors import ConfigError, NoetlError
from noetl.ids import node_id
from noetl.settings import DEFAULT_SERVER_URL, STANDARD_VARIABLES, Settings, settings

SRC = Path(__file__).resolve().parents[2] / "src" / "noetl"
KEY = "q2PN0mB6cWuZ7s3b3Qd9pQ2cC1kXJ0m5Q8v4aHq9Jx0="


def test_defaults() -> None:
    config = Settings.from_env({})
    assert config == Settings()
    assert config.store_url is None
    assert config.sqlite_sync == "NORMAL"
    assert config.encryption_key is None
    assert config.server_url == "http://localhost:8082" == DEFAULT_SERVER_URL
    assert config.public_server_url is None
    assert config.host == "127.0.0.1"
    assert config.port == 8082
    assert config.bus_url is None
    assert config.lease_seconds == 30.0
    assert config.snowflake_node_id is None
    assert config.log_level is None
    assert config.log_format == "text"


def test_every_variable_is_parsed_to_its_type() -> None:
    config = Settings.from_env(
        {
            "NOETL_STORE_URL": " postgresql://db/noetl?schema=x ",
            "NOETL_SQLITE_SYNC": "full",
            "NOETL_ENCRYPTION_KEY": KEY,
            "NOETL_SERVER_URL": "http://api:9000/",
            "NOETL_PUBLIC_SERVER_URL": "https://noetl.example.com",
            "NOETL_HOST": "127.0.0.1",
            "NOETL_PORT": "9090",
            "NOETL_BUS_URL": "nats://127.0.0.1:4222",
            "NOETL_LEASE_SECONDS": "2.5",
            "NOETL_SNOWFLAKE_NODE_ID": "17",
            "NOETL_LOG_LEVEL": "debug",
            "NOETL_LOG_FORMAT": "JSON",
            "HOME": "/not/a/setting",
        }
    )
    assert config == Settings(
        store_url="postgresql://db/noetl?schema=x",
        sqlite_sync="FULL",
        encryption_key=KEY,
        server_url="http://api:9000/",
        public_server_url="https://noetl.example.com",
        host="127.0.0.1",
        port=9090,
        bus_url="nats://127.0.0.1:4222",
        lease_seconds=2.5,
        snowflake_node_id=17,
        log_level="DEBUG",
        log_format="json",
    )
    assert isinstance(config.port, int) and isinstance(config.lease_seconds, float)


def test_blank_values_mean_the_default() -> None:
    blank = {f.metadata["env"]: "  " for f in dataclasses.fields(Settings)}
    assert Settings.from_env(blank) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NOETL_LEASE_SECONDS", "abc", "expected a number of seconds greater than 0"),
        ("NOETL_LEASE_SECONDS", "0", "expected a number of seconds greater than 0"),
        ("NOETL_LEASE_SECONDS", "-3", "expected a number of seconds greater than 0"),
        ("NOETL_LEASE_SECONDS", "nan", "expected a number of seconds greater than 0"),
        ("NOETL_LEASE_SECONDS", "inf", "expected a number of seconds greater than 0"),
        ("NOETL_PORT", "http", "expected an integer"),
        ("NOETL_PORT", "70000", "expected a port number from 1 to 65535"),
        ("NOETL_PORT", "0", "expected a port number from 1 to 65535"),
        ("NOETL_SNOWFLAKE_NODE_ID", "node-1", "expected an integer"),
        ("NOETL_SQLITE_SYNC", "sometimes", "expected one of OFF, NORMAL, FULL, EXTRA"),
        ("NOETL_LOG_LEVEL", "verbose", "expected one of CRITICAL, FATAL, ERROR, WARN, WARNING"),
        ("NOETL_LOG_FORMAT", "xml", "expected one of text, json"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r}: {expected}")
    assert isinstance(caught.value, NoetlError)


def test_the_encryption_key_stays_out_of_the_repr() -> None:
    config = Settings.from_env({"NOETL_ENCRYPTION_KEY": KEY, "NOETL_PORT": "9090"})
    assert KEY not in repr(config)
    assert "port=9090" in repr(config)


def test_settings_are_frozen_and_every_field_names_its_variable_and_says_what_it_is() -> None:
    config = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert all(name.startswith("NOETL_") or name in STANDARD_VARIABLES for name in names)
    assert len(set(names)) == len(names)
    assert all(f.metadata["doc"].strip() for f in dataclasses.fields(Settings))


def test_settings_parses_once_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_LEASE_SECONDS", "7")
    first = settings()
    assert first.lease_seconds == 7.0
    assert settings() is first  # cached while the environment stays the same
    monkeypatch.setenv("NOETL_LEASE_SECONDS", "8")
    assert settings().lease_seconds == 8.0  # a changed environment is seen
    monkeypatch.setenv("NOETL_LEASE_SECONDS", "abc")
    with pytest.raises(ConfigError, match="NOETL_LEASE_SECONDS"):
        settings()
    monkeypatch.delenv("NOETL_LEASE_SECONDS")
    assert settings().lease_seconds == 30.0


def test_defaults_agree_with_the_modules_that_use_them() -> None:
    from noetl.client import DEFAULT_SERVER_URL as CLIENT_DEFAULT
    from noetl.runtime.control import DEFAULT_LEASE_SECONDS
    from noetl.store.sqlite import SYNC_MODES

    config = Settings()
    assert config.lease_seconds == DEFAULT_LEASE_SECONDS
    assert config.server_url == CLIENT_DEFAULT
    assert config.sqlite_sync in SYNC_MODES


def test_node_id_takes_the_configured_id_modulo_1024_else_the_process_id() -> None:
    assert node_id(17) == 17
    assert node_id(1024 + 5) == 5
    assert node_id(None) == os.getpid() % 1024


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_") or k == "NOETL_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


def test_the_shared_id_generator_uses_the_configured_node() -> None:
    code = "from noetl.ids import default_ids; print(default_ids.node)"
    assert _python(code, NOETL_SNOWFLAKE_NODE_ID="5").stdout.strip() == "5"
    assert _python(code, NOETL_SNOWFLAKE_NODE_ID="1029").stdout.strip() == "5"
    bad = _python(code, NOETL_SNOWFLAKE_NODE_ID="five")
    assert bad.returncode != 0
    assert "ConfigError: NOETL_SNOWFLAKE_NODE_ID='five': expected an integer" in bad.stderr


def test_importing_settings_is_cheap() -> None:
    code = (
        "import sys, noetl.settings; "
        "print(sorted(m for m in ('pydantic', 'platformdirs', 'sqlite3', 'httpx', 'typer') if m in sys.modules))"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _environment_reads(path: Path) -> list[str]:
    """`os.environ` / `os.getenv` / `environ` uses and typer `envvar=` options in one module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            found.append(f"{path.name}:{node.lineno} {node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [a.name for a in node.names if a.name in ("environ", "getenv", "environb")]
            found += [f"{path.name}:{node.lineno} from os import {name}" for name in names]
        elif isinstance(node, ast.keyword) and node.arg == "envvar":
            found.append(f"{path.name}:{node.lineno} envvar=")
    return found


def test_only_settings_reads_the_environment() -> None:
    # toolenv.py builds the environment of user code (os.environ without the control plane's
    # secrets) and removes those secrets from the python-tool fork server.
    allowed = {SRC / "settings.py", SRC / "tools" / "toolenv.py"}
    reads = [r for p in sorted(SRC.rglob("*.py")) if p not in allowed for r in _environment_reads(p)]
    assert reads == []
    assert _environment_reads(SRC / "settings.py")  # the check does see a read
