"""Finding 2: `GET /api/credentials/NAME?include_data=true` returned the plaintext secret to anyone,
anyone could overwrite or delete a credential, and an http step with `auth: {credential: X, type:
basic}` put the base64 of `user:password` (what the Authorization header carries) unmasked in
the events.

Now secret data leaves the server only to a worker holding a command that uses the credential;
writing credentials needs the admin scope; and the basic-auth header value is masked like the
password it encodes.
"""

from __future__ import annotations

import base64

from tests.security.helpers import events, execute, http, make_token, ok, register, wait_end
from tests.support.auth import TEST_TOKEN
from tests.support.stub_api import StubAPI

SECRET = {"username": "svc-user", "password": "pa55-w0rd-XYZ"}


def _put(client_token: str | None, url: str, data: dict[str, str], description: str) -> int:
    with http(url, client_token) as client:
        body = {"name": "svc", "type": "basic", "data": data, "description": description}
        return client.post("/api/credentials", json=body).status_code


def test_no_token_reads_secret_data(server: str) -> None:
    with http(server) as admin:
        assert _put(None, server, SECRET, "x") == 401
        ok(admin.post("/api/credentials", json={"name": "svc", "type": "basic", "data": SECRET}))
        reader = make_token(admin, "read", "reader")
        worker = make_token(admin, "worker", "worker")
    for token in (None, reader, worker, TEST_TOKEN):
        with http(server, token) as client:
            answer = client.get("/api/credentials/svc", params={"include_data": "true"})
            assert answer.status_code in (401, 403), (token, answer.status_code, answer.text)
            assert SECRET["password"] not in answer.text
            # A worker must name a command it holds that uses the credential.
            forged = client.get(
                "/api/credentials/svc",
                params={"include_data": "true", "worker_id": "w1", "command_id": "1:start:2"},
            )
            assert forged.status_code in (401, 403), (token, forged.text)
            assert SECRET["password"] not in forged.text


def test_only_admin_writes_credentials(server: str) -> None:
    with http(server) as admin:
        ok(
            admin.post(
                "/api/credentials",
                json={"name": "svc", "type": "basic", "data": SECRET, "description": "real"},
            )
        )
        tokens: list[str | None] = [None]  # anyone first; then the smaller scopes
        for index in range(3):
            token = tokens[index] if index < len(tokens) else None
            assert _put(token, server, {"username": "evil", "password": "evil"}, "forged") in (401, 403)
            with http(server, token) as client:
                assert client.delete("/api/credentials/svc").status_code in (401, 403)
            if index == 0:
                tokens += [make_token(admin, "read", "reader"), make_token(admin, "worker", "worker")]
        listed = ok(admin.get("/api/credentials"))["items"]
        assert [(c["name"], c["description"]) for c in listed] == [("svc", "real")]


BASIC = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: basic_auth
  path: security/basic_auth
workload:
  url: ""
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: "{{ workload.url }}"
      auth: {credential: svc, type: basic}
"""


def test_basic_auth_header_is_masked_in_the_events(worker_server: str, stub_api: StubAPI) -> None:
    encoded = base64.b64encode(f"{SECRET['username']}:{SECRET['password']}".encode()).decode()
    with http(worker_server) as admin:
        ok(admin.post("/api/credentials", json={"name": "svc", "type": "basic", "data": SECRET}))
        register(admin, BASIC)
        execution_id = execute(admin, "security/basic_auth", url=f"{stub_api.base_url}/api/v1/echo")
        final = wait_end(admin, execution_id)
        assert final["status"] == "COMPLETED", final
        log = (
            admin.get(f"/api/executions/{execution_id}").text
            + admin.get(f"/api/executions/{execution_id}/status").text
        )
        assert "authorization" in str(events(admin, execution_id)).lower()  # the echo did carry it
    assert encoded not in log
    assert SECRET["password"] not in log
