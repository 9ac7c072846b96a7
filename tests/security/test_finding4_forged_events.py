"""Finding 4: forged worker events were accepted: a `call.done` + `command.completed` from a worker
that never claimed the command completed the run with the forged result and discarded the real
one, and a posted `playbook.failed` failed a run.

Now events about a command are taken only from the worker holding it (the rest are refused and
named under `rejected`, or a 409 for a single event), and engine-only event types are a 403.
"""

from __future__ import annotations

from tests.security.helpers import (
    claim,
    events,
    execute,
    http,
    ok,
    outcome,
    pending_of,
    register,
    report,
    status,
)


def test_a_worker_that_never_claimed_a_command_cannot_report_it(server: str) -> None:
    with http(server) as client:
        register(client)
        execution_id = execute(client)
        command = pending_of(client, execution_id)
        forged = report(client, command, "forger", outcome(command, {"forged": True}))
        assert forged.status_code in (200, 409), forged.text
        if forged.status_code == 200:
            assert forged.json().get("rejected") == [command["command_id"]]
        single = client.post(
            "/api/events",
            json={
                "execution_id": execution_id,
                "worker_id": "forger",
                **outcome(command, {"forged": True})[2],
            },
        )
        assert single.status_code == 409, single.text
        log = events(client, execution_id)
        assert not [
            e for e in log if (e.get("worker_id") or (e.get("meta") or {}).get("worker_id")) == "forger"
        ]
        assert status(client, execution_id)["status"] == "RUNNING"

        # The real worker claims and runs it: its result is the one that counts.
        assert claim(client, command, "honest").status_code == 200
        late = report(client, command, "forger", outcome(command, {"forged": True}))  # claimed by another
        assert late.status_code == 409 or late.json().get("rejected") == [command["command_id"]]
        assert "rejected" not in ok(report(client, command, "honest", outcome(command, {"real": 1})))
        second = pending_of(client, execution_id)
        assert ok(claim(client, second, "honest"))
        ok(report(client, second, "honest", outcome(second, {"real": 2})))
        final = status(client, execution_id)
        assert final["status"] == "COMPLETED", final
        assert "forged" not in str(events(client, execution_id))


def test_posted_engine_events_are_refused(server: str) -> None:
    with http(server) as client:
        register(client)
        execution_id = execute(client)
        command = pending_of(client, execution_id)
        ok(claim(client, command, "w1"))
        for event_type in ("playbook.failed", "playbook.completed", "command.issued", "step.enter"):
            body = {
                "execution_id": execution_id,
                "worker_id": "w1",
                "step": "start",
                "event_type": event_type,
                "payload": {"command_id": command["command_id"], "error": "forged"},
            }
            answer = client.post("/api/events", json=body)
            assert answer.status_code == 403, (event_type, answer.status_code, answer.text)
            batch = report(client, command, "w1", [body])
            assert batch.status_code == 403, (event_type, batch.status_code, batch.text)
        assert status(client, execution_id)["status"] == "RUNNING"
        assert "forged" not in str(events(client, execution_id))
