"""The web UI's pages and its login, over HTTP (the browser tests drive the same pages in
chromium): pages need a read token, the login page takes it from a form or once from the URL and
keeps it in an httponly, samesite=strict cookie; assets ship in the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.auth import AUTH, TEST_TOKEN

import noetl.api.ui.routes as ui_routes
from noetl.api.app import create_app
from noetl.api.auth import required_scope
from noetl.api.ui.routes import safe_next
from noetl.runtime.control import ControlPlane
from noetl.store import open_store

NO_AUTH = {"Authorization": ""}


@pytest.fixture
def client() -> Iterator[TestClient]:
    store = open_store("memory://")
    app = create_app(ControlPlane(store), admin_token=TEST_TOKEN)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client
    store.close()


def test_pages_send_a_browser_without_a_token_to_the_login_page(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/ui/runs"
    answer = client.get("/ui/runs/42", params={"step": "a"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fruns%2F42%3Fstep%3Da"
    login = client.get("/ui/login")
    assert login.status_code == 200 and 'name="token"' in login.text
    assert client.get("/api/runs").status_code == 401  # the API still answers 401, not a page


def test_a_token_in_the_url_becomes_an_httponly_strict_cookie(client: TestClient) -> None:
    first = client.get("/ui", params={"token": TEST_TOKEN})
    assert first.status_code == 303 and first.headers["location"].startswith("/ui/login?")
    second = client.get(first.headers["location"])
    assert second.status_code == 303 and second.headers["location"] == "/ui"
    cookie = second.headers["set-cookie"].lower()
    assert cookie.startswith(f"noetl_token={TEST_TOKEN}".lower())
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    client.cookies.set("noetl_token", TEST_TOKEN)
    page = client.get("/ui/runs")
    assert page.status_code == 200 and "/ui/static/runs.js" in page.text
    assert client.get("/api/runs").status_code == 200  # the cookie works for the API too


def test_the_login_form_checks_the_token(client: TestClient) -> None:
    refused = client.post("/ui/login", content=b"token=wrong&next=%2Fui%2Fcatalog")
    assert refused.status_code == 401 and "not valid" in refused.text and "set-cookie" not in refused.headers
    accepted = client.post(
        "/ui/login",
        content=f"token={TEST_TOKEN}&next=%2Fui%2Fcatalog".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert accepted.status_code == 303 and accepted.headers["location"] == "/ui/catalog"
    logout = client.get("/ui/logout", cookies={"noetl_token": TEST_TOKEN})
    assert (
        'noetl_token=""' in logout.headers["set-cookie"]
        or "max-age=0" in logout.headers["set-cookie"].lower()
    )


def test_a_read_token_may_look_but_not_act(client: TestClient) -> None:
    made = client.post("/api/tokens", json={"name": "viewer", "scope": "read"}, headers=AUTH)
    assert made.status_code in (200, 201), made.text
    token = made.json()["token"]
    client.cookies.set("noetl_token", token)
    assert client.get("/ui/workers").status_code == 200
    assert client.get("/api/activity").status_code == 200
    assert client.post("/api/execute", json={"path": "x"}).status_code == 403


def test_every_page_and_asset_is_served_from_the_package(client: TestClient) -> None:
    client.cookies.set("noetl_token", TEST_TOKEN)
    for path in ("/ui/runs", "/ui/runs/1", "/ui/catalog", "/ui/workers"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "http://" not in page.text and "https://" not in page.text, path
    client.cookies.clear()
    static = Path(ui_routes.__file__).parent / "static"
    for asset in sorted(static.iterdir()):
        answer = client.get(f"/ui/static/{asset.name}", headers=NO_AUTH)
        assert answer.status_code == 200, asset.name
        assert "https://" not in answer.text and "http://" not in answer.text.replace(
            "http://www.w3.org", ""
        ), asset.name


def test_scopes_and_redirect_targets() -> None:
    assert required_scope("GET", "/ui/runs") == "read"
    assert required_scope("GET", "/metrics") == "read"
    assert required_scope("GET", "/ui/static/app.js") is None
    assert required_scope("POST", "/ui/login") is None
    assert required_scope("GET", "/docs/assets/swagger-ui.css") is None
    assert safe_next("https://evil.example/ui") == "/ui/runs"
    assert safe_next("//evil.example/ui") == "/ui/runs"
    assert safe_next("/api/tokens") == "/ui/runs"
    assert safe_next("/ui/runs/5?step=a") == "/ui/runs/5?step=a"
