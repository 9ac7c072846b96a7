"""Finding 3: masking was one set for the whole server: a credential value such as `1000` or
`postgres` used by one run masked that text in every later run, including stored command code (a
later run failed with a SyntaxError on `********1`).

Now a secret is masked only in the execution that resolved it (and its parents): another run's
data and code are left alone, while the run that used it still never shows it.
"""

from __future__ import annotations

from tests.security.helpers import events, execute, http, ok, register, wait_end
from tests.support.stub_api import StubAPI

VALUE = "40004000"  # a credential value that is also ordinary data elsewhere

USES_SECRET = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: uses_secret
  path: security/uses_secret
workload:
  url: ""
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: "{{ workload.url }}"
      auth: {credential: api_token, type: bearer}
"""

PLAIN = f"""\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: plain
  path: security/plain
workflow:
  - step: start
    tool:
      kind: python
      code: |
        count = {VALUE}
        result = {{"count": count + 1, "text": "port {VALUE}"}}
"""


def test_a_secret_of_one_run_leaves_other_runs_alone(worker_server: str, stub_api: StubAPI) -> None:
    with http(worker_server) as admin:
        ok(
            admin.post(
                "/api/credentials", json={"name": "api_token", "type": "bearer", "data": {"token": VALUE}}
            )
        )
        register(admin, USES_SECRET)
        register(admin, PLAIN)
        first = execute(admin, "security/uses_secret", url=f"{stub_api.base_url}/api/v1/echo")
        assert wait_end(admin, first)["status"] == "COMPLETED"
        first_log = str(events(admin, first))
        assert f"Bearer {VALUE}" not in first_log and VALUE not in first_log  # masked where it was used
        assert "authorization" in first_log.lower()

        second = execute(admin, "security/plain")
        final = wait_end(admin, second)
        assert final["status"] == "COMPLETED", final
        assert final["result"] == {"count": int(VALUE) + 1, "text": f"port {VALUE}"}
        issued = [e for e in events(admin, second) if e["event_type"] == "command.issued"]
        assert f"count = {VALUE}" in str(issued)  # the stored code is what was registered
