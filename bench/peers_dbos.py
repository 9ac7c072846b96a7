"""A DBOS step chain, run by `make bench-peers` in the peers' virtual environment (not in ours):

    bench/.peers-venv/bin/python bench/peers_dbos.py SYSTEM_DB_URL SCHEMA STEPS

One durable workflow of STEPS no-op steps in sequence (each step's output checkpointed in the
system database, as this project checkpoints each step's outcome in its event log). Prints one
JSON line: the workflow's result and the seconds of launch, the workflow call and shutdown.
SCHEMA (PostgreSQL only; "" for SQLite) keeps the run's tables apart from anything else.
"""

from __future__ import annotations

import json
import sys
import time

from dbos import DBOS, DBOSConfig


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def chain(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += noop(i)
    return total


def main() -> None:
    url, schema, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config: DBOSConfig = {"name": "bench", "system_database_url": url, "log_level": "WARNING"}
    if schema:
        config["dbos_system_schema"] = schema
    DBOS(config=config)
    begin = time.perf_counter()
    DBOS.launch()
    launched = time.perf_counter()
    result = chain(steps)
    ran = time.perf_counter()
    DBOS.destroy()
    ended = time.perf_counter()
    print(
        json.dumps(
            {"result": result, "launch": launched - begin, "workflow": ran - launched, "destroy": ended - ran}
        )
    )


if __name__ == "__main__":
    main()
