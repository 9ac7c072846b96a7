"""The user documentation is checked against the code it describes.

* Every ```yaml block in `docs/` and `README.md` that is a playbook (it has `apiVersion` and
  `kind: Playbook`) passes `noetl validate` (the command itself, through typer's CliRunner). A
  block preceded by the line `<!-- fragment -->` is a deliberate excerpt and is not validated;
  one preceded by `<!-- run -->` is also run with `noetl run --json` and must COMPLETE.
* `docs/settings.md` is generated from `noetl.settings.Settings`; regenerate it with
  `python -m tests.unit.test_docs_snippets --write`.
* Every route the FastAPI app serves appears in `docs/api.md` with its method.
* Relative links in the docs point at files, and the README links every page of `docs/`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SETTINGS_MD = DOCS / "settings.md"
API_MD = DOCS / "api.md"
FRAGMENT = "<!-- fragment -->"
RUN = "<!-- run -->"
_FENCE = re.compile(r"^```yaml[ \t]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Snippet:
    file: Path
    line: int
    text: str
    marker: str | None  # FRAGMENT, RUN or None

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"

    @property
    def is_playbook(self) -> bool:
        return bool(
            re.search(r"^apiVersion:", self.text, re.M) and re.search(r"^kind:\s*Playbook\b", self.text, re.M)
        )


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def snippets() -> Iterator[Snippet]:
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            marker = before if before in (FRAGMENT, RUN) else None
            line = text.count("\n", 0, match.start()) + 1
            yield Snippet(path, line, match.group(1), marker)


def playbook_snippets() -> list[Snippet]:
    return [s for s in snippets() if s.is_playbook and s.marker != FRAGMENT]


def _invoke(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from noetl.cli.main import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("snippet", playbook_snippets(), ids=lambda s: s.id)
def test_playbook_snippet_validates(snippet: Snippet, tmp_path: Path) -> None:
    path = tmp_path / "snippet.yaml"
    path.write_text(snippet.text, encoding="utf-8")
    result = _invoke(["validate", str(path)])
    assert result.exit_code == 0, f"{snippet.id}: noetl validate said:\n{result.output}"


def test_there_are_many_snippets_and_few_fragments() -> None:
    found = list(snippets())
    playbooks = [s for s in found if s.is_playbook]
    fragments = [s for s in found if s.marker == FRAGMENT]
    assert len(playbooks) >= 20, [s.id for s in playbooks]
    assert len(fragments) <= len(playbooks) // 3, [s.id for s in fragments]


@pytest.mark.parametrize("snippet", [s for s in playbook_snippets() if s.marker == RUN], ids=lambda s: s.id)
def test_runnable_snippet_completes(
    snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOETL_RESULT_STORE_DIR", str(tmp_path / "results"))
    path = tmp_path / "snippet.yaml"
    path.write_text(snippet.text, encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    result = _invoke(["run", str(path), "--json", "--quiet", "--store", store])
    assert result.exit_code == 0, f"{snippet.id}: noetl run said:\n{result.output}"
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "COMPLETED", outcome


# ------------------------------------------------------------------------------------ links

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_point_at_files() -> None:
    broken = []
    for path in doc_files():
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / t).resolve() for t in _LINK.findall(readme) if "://" not in t}
    pages = {p.resolve() for p in DOCS.rglob("*.md")}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - linked)
    assert not missing, f"docs pages the README does not link: {missing}"


# ------------------------------------------------------------------------------- settings.md


def _values_of(parse: Any) -> str:
    from noetl import settings as s

    named = {
        s.as_text: "text",
        s.as_int: "integer",
        s.as_positive_int: "integer ≥ 1",
        s.as_port: "port (1-65535)",
        s.as_seconds: "seconds > 0",
    }
    if parse in named:
        return named[parse]
    for cell in parse.__closure__ or ():
        if isinstance(cell.cell_contents, tuple):
            return "one of " + ", ".join(f"`{o}`" for o in cell.cell_contents)
    raise AssertionError(f"describe the values of parser {parse!r} in tests/unit/test_docs_snippets.py")


def _default_of(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, int) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        return f"`{value}` ({value // (1024 * 1024)} MiB)"
    return f"`{value}`"


def settings_markdown() -> str:
    from noetl.settings import Settings

    lines = [
        "# Settings and environment variables",
        "",
        "<!-- Generated from src/noetl/settings.py by "
        "`python -m tests.unit.test_docs_snippets --write`; do not edit by hand. -->",
        "",
        "Every environment variable NoETL reads, with its default. A command-line flag wins over the",
        "environment, the environment over the default; an unset or blank variable means the default.",
        "A value that cannot be used stops the command with a message naming the variable, for example",
        "`NOETL_PORT='x': expected an integer`. `noetl run`, `noetl server start` and `noetl worker start`",
        "read the same variables. `one of` values are compared without regard to case.",
        "",
        "| Variable | Values | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for spec in fields(Settings):
        meta = spec.metadata
        doc = " ".join(str(meta["doc"]).split()).replace("|", "\\|")
        lines.append(
            f"| `{meta['env']}` | {_values_of(meta['parse'])} | {_default_of(spec.default)} | {doc} |"
        )
    lines += [
        "",
        "`NOETL_ENCRYPTION_KEY` and `NOETL_API_TOKEN` are secrets: they never appear in the output of",
        "any command or in logs. Flags that set the same things: `--store` (`NOETL_STORE_URL`),",
        "`--server` (`NOETL_SERVER_URL`), `--host`/`--port`, `--bus` (`NOETL_BUS_URL`),",
        "`--token-file` (`NOETL_TOKEN_FILE`), `--log-level` (`NOETL_LOG_LEVEL`).",
        "",
    ]
    return "\n".join(lines)


def test_settings_md_is_generated_from_settings() -> None:
    expected = settings_markdown()
    actual = SETTINGS_MD.read_text(encoding="utf-8") if SETTINGS_MD.exists() else ""
    assert actual == expected, (
        "docs/settings.md is stale: run python -m tests.unit.test_docs_snippets --write"
    )


def test_settings_md_names_every_variable_the_code_reads() -> None:
    from noetl.settings import Settings

    text = SETTINGS_MD.read_text(encoding="utf-8")
    for spec in fields(Settings):
        assert f"`{spec.metadata['env']}`" in text
    # No NOETL_ variable is read outside settings.py (the sources name only ones it defines).
    defined = {spec.metadata["env"] for spec in fields(Settings)}
    used = set()
    for source in (ROOT / "src" / "noetl").rglob("*.py"):
        if source.name == "settings.py":
            continue  # defines them (its docstring has a NOETL_NAME placeholder)
        used |= set(re.findall(r"\bNOETL_[A-Z][A-Z0-9_]*[A-Z0-9]\b", source.read_text(encoding="utf-8")))
    not_settings = {"NOETL_COMMANDS"}  # the NATS stream name, not a variable
    unknown = {name for name in used - defined - not_settings if not name.startswith("NOETL_SUB")}
    assert not unknown, f"variables named in src/ but not in Settings (so not in docs/settings.md): {unknown}"


# ------------------------------------------------------------------------------------ api.md


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the server's app serves, mounts included as `MOUNT`."""
    from noetl.api.app import create_app
    from noetl.runtime.control import ControlPlane
    from noetl.store import open_store

    app = create_app(ControlPlane(open_store("memory://")), admin_token="docs-test")
    found: list[tuple[str, str]] = []

    def walk(routes: Any) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's included routers
            if inner is not None:
                walk(inner.routes)
            elif getattr(route, "methods", None):
                found.extend((m, route.path) for m in sorted(set(route.methods) - {"HEAD"}))
            elif getattr(route, "path", None):
                found.append(("MOUNT", route.path))

    walk(app.routes)
    return found


def api_md_rows() -> set[tuple[str, str]]:
    """(method, path) pairs documented in api.md's tables: `| GET, POST | `/a`, `/b` | ...`."""
    rows: set[tuple[str, str]] = set()
    for line in API_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Z, ]+", cells[0]):
            continue
        methods = [m.strip() for m in cells[0].split(",") if m.strip()]
        for path in re.findall(r"`([^`]+)`", cells[1]):
            rows.update((m, path) for m in methods)
    return rows


def test_api_md_lists_every_route() -> None:
    documented = api_md_rows()
    routes = app_routes()
    assert len(routes) > 50
    missing = [f"{m} {p}" for m, p in routes if (m, p) not in documented]
    assert not missing, f"routes the app serves that docs/api.md does not list: {missing}"
    served = set(routes)
    stale = sorted(f"{m} {p}" for m, p in documented if (m, p) not in served)
    assert not stale, f"docs/api.md lists routes the app does not serve: {stale}"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        SETTINGS_MD.write_text(settings_markdown(), encoding="utf-8")
        print(f"wrote {SETTINGS_MD.relative_to(ROOT)}")
        return 0
    print("usage: python -m tests.unit.test_docs_snippets --write", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
