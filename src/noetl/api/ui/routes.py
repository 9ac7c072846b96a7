"""The web UI's pages: server-rendered shells (Jinja2) that a small script of our own fills from
the JSON API (`/api/runs`, `/api/executions`, `/api/catalog`, `/api/activity`, ...). Every asset
ships in this package (`static/`), so the UI works with no internet and no Node.

Auth is the API's: pages need a `read` token, kept in the `noetl_token` cookie (httponly,
samesite=strict). `/ui/login` takes the token from a form, or once from the URL
(`/ui?token=...` is sent there), checks it, sets the cookie and goes on to where the browser
was going.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from noetl import __version__
from noetl.api.auth import COOKIE, Authenticator
from noetl.tokens import READ

HERE = Path(__file__).parent
PAGES = {"runs": "Runs", "catalog": "Catalog", "workers": "Workers"}
COOKIE_SECONDS = 7 * 24 * 3600
_MAX_FORM_BYTES = 16 * 1024

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
)


def page(name: str, title: str, **values: Any) -> HTMLResponse:
    template = _templates.get_template(f"{name}.html")
    body = template.render(title=title, pages=PAGES, active=name, version=__version__, **values)
    return HTMLResponse(body, headers={"cache-control": "no-store"})


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path inside the UI, never another site."""
    if not target:
        return "/ui/runs"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui") or parts.path.startswith("/ui/login"):
        return "/ui/runs"
    return target


def install(app: FastAPI, authenticator: Authenticator) -> None:
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(router(authenticator))


def router(authenticator: Authenticator) -> APIRouter:
    ui = APIRouter(include_in_schema=False)

    @ui.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    @ui.get("/ui")
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    @ui.get("/ui/login", response_model=None)
    def login_page(request: Request, next: str | None = None, token: str | None = None) -> Response:
        if token:
            return _log_in(request, authenticator, token, next)
        return page("login", "Log in", next=safe_next(next), error=None)

    @ui.post("/ui/login", response_model=None)
    async def login(request: Request) -> Response:
        raw = await request.body()
        form = dict(parse_qsl(raw[:_MAX_FORM_BYTES].decode("utf-8", "replace")))
        return _log_in(request, authenticator, form.get("token", "").strip(), form.get("next"))

    @ui.get("/ui/logout")
    def logout() -> RedirectResponse:
        answer = RedirectResponse("/ui/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    @ui.get("/ui/runs")
    def runs() -> HTMLResponse:
        return page("runs", "Runs")

    @ui.get("/ui/runs/{execution_id}")
    def run(execution_id: int) -> HTMLResponse:
        return page("run", f"Run {execution_id}", execution_id=str(execution_id))

    @ui.get("/ui/catalog")
    def catalog() -> HTMLResponse:
        return page("catalog", "Catalog")

    @ui.get("/ui/workers")
    def workers() -> HTMLResponse:
        return page("workers", "Workers")

    return ui


def _log_in(request: Request, authenticator: Authenticator, token: str, target: str | None) -> Response:
    principal = authenticator.verify(token) if token else None
    if principal is None or not principal.may(READ):
        refused = page("login", "Log in", next=safe_next(target), error="That token is not valid.")
        refused.status_code = 401
        return refused
    answer = RedirectResponse(safe_next(target), status_code=303)
    answer.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


__all__ = ["install", "router", "safe_next"]
