"""Local mode: `noetl server start --with-worker` on the embedded SQLite store runs schedules, driven
with the `noetl schedule` / `noetl subscription` commands as a user would; a restarted server
resumes its schedules from the store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.cli import noetl
from tests.support.cluster import Cluster, wait_for, wait_terminal
from tests.support.playbooks import with_header

pytestmark = pytest.mark.slow

PLAYBOOK = with_header(
    "local-ticked",
    "tests/local-ticked",
    """workload: {who: nobody}
schedules:
  - {name: nightly, cron: "0 3 * * *", timezone: Europe/Paris, catchup: skip}
workflow:
  - step: start
    tool: {kind: python, input: {who: "{{ workload.who }}"}, code: "result = {'hello': who}"}
""",
)


def cli_json(*args: str) -> dict[str, object]:
    result = noetl(*args, "--json")
    assert result.code == 0, f"noetl {' '.join(args)}: {result.stderr}"
    answer: dict[str, object] = result.json
    return answer


def test_a_laptop_server_on_sqlite_runs_schedules_and_resumes_them(tmp_path: Path) -> None:
    playbook = tmp_path / "local.yaml"
    playbook.write_text(PLAYBOOK)
    with Cluster(tmp_path, f"sqlite:///{tmp_path / 'local.db'}") as cluster:
        server = cluster.start_server("laptop", extra_args=("--with-worker",))
        url = server.url
        assert noetl("register", str(playbook), "--server", url).code == 0
        declared = cli_json("schedule", "list", "--server", url)["items"]
        assert [s["name"] for s in declared] == ["tests/local-ticked:nightly"]  # type: ignore[index]

        added = cli_json(
            "schedule", "add", "every-second", "tests/local-ticked", "--every", "1s", "--set", "who=cron",
            "--server", url,
        )  # fmt: skip
        sid = str(added["schedule_id"])
        wait_for(lambda: len(ticks(sid, url)) >= 3, 30, "three ticks")
        first = ticks(sid, url)[-1]
        done = wait_terminal(url, str(first["execution_id"]), 60)
        assert done["status"] == "COMPLETED" and done["result"] == {"hello": "cron"}, (
            done["error"],
            done["steps"],
        )

        server.terminate()
        assert server.wait_exit(20), server.tail()
        stopped = time.time()
        server = cluster.restart_server(server, "laptop-again")
        wait_for(lambda: newest(sid, url) > stopped + 1, 30, "a tick after the restart")  # resumed

        cli_json("schedule", "pause", "every-second", "--server", url)
        count = len(ticks(sid, url))
        manual = cli_json("schedule", "trigger", sid, "--server", url)
        assert manual["status"] == "started"
        time.sleep(1.5)
        assert len(ticks(sid, url)) == count + 1  # paused: only the manual run
        shown = cli_json("schedule", "show", "every-second", "--server", url)
        assert shown["enabled"] is False and shown["ticks"][0]["execution_id"] == manual["execution_id"]  # type: ignore[index]
        assert cli_json("schedule", "rm", sid, "--server", url)["deleted"] is True
        bad = noetl("schedule", "add", "x", "tests/local-ticked", "--cron", "99 * * * *", "--server", url)
        assert bad.code == 2 and "cron" in bad.stderr

        sub = cli_json(
            "subscription", "add", "orders", "tests/local-ticked", "--subject", "orders.new", "--dedup-field", "id",
            "--server", url,
        )  # fmt: skip
        assert sub["dedup"] == {"field": "id", "header": "Nats-Msg-Id", "window_secs": 300.0}
        assert cli_json("subscription", "pause", "orders", "--server", url)["enabled"] is False
        assert [s["name"] for s in cli_json("subscription", "list", "--server", url)["items"]] == ["orders"]  # type: ignore[index]
        assert cli_json("subscription", "events", "orders", "--server", url)["events"] == []
        assert cli_json("subscription", "rm", "orders", "--server", url)["deleted"] is True


def ticks(sid: str, url: str) -> list[dict[str, object]]:
    from tests.support.cluster import get_json

    items: list[dict[str, object]] = get_json(url, f"/api/schedules/{sid}/ticks", limit=1000)["items"]
    return items


def newest(sid: str, url: str) -> float:
    from datetime import datetime

    found = ticks(sid, url)
    if not found:
        return 0.0
    return datetime.fromisoformat(str(found[0]["tick_at"]).replace("Z", "+00:00")).timestamp()
