"""The CLI reads the settings at its edge: flag > environment > default, and a bad variable is
a clear error (exit 2) naming it, before any work starts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noetl.cli import common
from noetl.cli.main import app
from noetl.logs import StructuredFormatter

HELLO = str(Path(__file__).resolve().parents[2] / "examples" / "hello.yaml")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "NOETL_STORE_URL",
        "NOETL_SERVER_URL",
        "NOETL_LOG_LEVEL",
        "NOETL_LOG_FORMAT",
        "NOETL_BUS_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (the commands configure it)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (["run", HELLO, "--quiet"], "NOETL_LEASE_SECONDS", "abc"),
        (["events", "1"], "NOETL_SQLITE_SYNC", "sometimes"),
        (["status", "1"], "NOETL_PORT", "70000"),
        (["server", "start"], "NOETL_PORT", "http"),
        (["worker", "start"], "NOETL_LOG_FORMAT", "xml"),
        (["credential", "list"], "NOETL_SNOWFLAKE_NODE_ID", "x"),
    ],
)
def test_a_bad_variable_ends_the_command_with_exit_2_naming_it(
    command: list[str], variable: str, value: str, root_logger: logging.Logger
) -> None:
    code, _, err = invoke(*command, env={variable: value})
    assert code == 2
    assert err.startswith(f"error: {variable}={value!r}: expected")


@pytest.mark.parametrize(
    "command", [["run", HELLO], ["worker", "start"], ["server", "start"], ["events", "1"], ["cancel", "1"]]
)
def test_in_a_fresh_process_a_bad_variable_is_one_line_not_a_traceback(command: list[str]) -> None:
    """Nothing was imported yet: the settings are checked before any module that reads them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_") or k == "NOETL_API_TOKEN"}
    env["NOETL_SNOWFLAKE_NODE_ID"] = "node-a"
    done = subprocess.run(
        [sys.executable, "-m", "noetl", *command], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stderr) == (
        2,
        "error: NOETL_SNOWFLAKE_NODE_ID='node-a': expected an integer\n",
    )


def test_a_bad_log_level_flag_is_an_invalid_argument(root_logger: logging.Logger) -> None:
    code, _, err = invoke("run", HELLO, "--log-level", "loud")
    assert (code, err.strip()) == (2, "error: --log-level='loud': expected one of " + _levels())


def _levels() -> str:
    from noetl.settings import LOG_LEVELS

    return ", ".join(LOG_LEVELS)


def test_logging_flag_then_environment_then_the_commands_default(
    monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger
) -> None:
    assert common.setup_logging(None, "INFO") == "INFO"
    assert root_logger.level == logging.INFO
    monkeypatch.setenv("NOETL_LOG_LEVEL", "debug")
    assert common.setup_logging(None, "INFO") == "DEBUG"
    assert root_logger.level == logging.DEBUG
    assert common.setup_logging("error", "INFO") == "ERROR"
    assert root_logger.level == logging.ERROR
    formatter = root_logger.handlers[0].formatter
    assert isinstance(formatter, StructuredFormatter) and formatter.as_json is False
    monkeypatch.setenv("NOETL_LOG_FORMAT", "json")
    common.setup_logging(None, "INFO")
    formatter = root_logger.handlers[0].formatter
    assert isinstance(formatter, StructuredFormatter) and formatter.as_json is True


def test_the_store_flag_wins_over_the_environment(tmp_path: Path, root_logger: logging.Logger) -> None:
    env_store = f"sqlite:///{tmp_path}/env.db"
    code, out, _ = invoke("run", HELLO, "--quiet", "--json", env={"NOETL_STORE_URL": env_store})
    assert code == 0
    execution_id = json.loads(out)["execution_id"]
    assert (tmp_path / "env.db").is_file()

    code, out, _ = invoke("events", execution_id, "--json", env={"NOETL_STORE_URL": env_store})
    assert code == 0
    assert json.loads(out)[0]["event_type"] == "playbook_started"

    flag_store = f"sqlite:///{tmp_path}/flag.db"
    code, _, err = invoke("events", execution_id, "--store", flag_store, env={"NOETL_STORE_URL": env_store})
    assert (code, err.strip()) == (1, f"error: no events for execution {execution_id}")
    assert (tmp_path / "flag.db").is_file()


def test_the_server_flag_wins_over_the_environment() -> None:
    env = {"NOETL_SERVER_URL": "http://127.0.0.1:9/"}
    code, _, err = invoke("cancel", "1", env=env)
    assert code == 1
    assert "cannot reach the NoETL server at http://127.0.0.1:9:" in err
    code, _, err = invoke("cancel", "1", "--server", "http://127.0.0.1:7", env=env)
    assert code == 1
    assert "cannot reach the NoETL server at http://127.0.0.1:7:" in err


def test_the_worker_bus_flag_wins_over_the_environment(root_logger: logging.Logger) -> None:
    env = {"NOETL_BUS_URL": "kafka://from-env"}
    code, _, err = invoke("worker", "start", env=env)
    assert (code, err.strip()) == (2, "error: unsupported bus URL 'kafka://from-env': use nats://host:port")
    code, _, err = invoke("worker", "start", "--bus", "amqp://from-flag", env=env)
    assert (code, err.strip()) == (2, "error: unsupported bus URL 'amqp://from-flag': use nats://host:port")
