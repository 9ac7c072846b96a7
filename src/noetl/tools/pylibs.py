"""`libs:` of the python tool: modules to bind as globals, and the libraries a step declares.

Shapes:

* a map `{alias: module}` or `{alias: {from: package, import: name}}`: import and bind each alias;
  a failure stops the step with an error naming the lib and how to install it. A value written
  as a pip requirement (`psycopg2-binary`, `psycopg[binary]>=3`) is mapped to its import name.
* a list of names (`[json, "math as m", requests, psycopg2-binary]`): each is a module name or a
  pip distribution name. What is installed is imported and bound (`psycopg2-binary` binds
  `psycopg2`); what is not is only a declaration, as upstream treats it: the step runs, and only
  if its code then imports the missing module does it fail, with a message naming the library
  and the `pip install` command.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LibError", "Libs", "load_libs", "missing_module_message"]

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Distributions whose import name is not their project name (for libraries not installed, where
# no metadata can tell). Keys are normalised project names.
_KNOWN_IMPORTS = {
    "psycopg2-binary": "psycopg2",
    "psycopg-binary": "psycopg",
    "pyyaml": "yaml",
    "beautifulsoup4": "bs4",
    "scikit-learn": "sklearn",
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "pillow": "PIL",
    "python-dateutil": "dateutil",
    "pyjwt": "jwt",
    "python-dotenv": "dotenv",
    "google-cloud-storage": "google.cloud.storage",
    "google-cloud-bigquery": "google.cloud.bigquery",
    "google-cloud-secret-manager": "google.cloud.secretmanager",
    "azure-storage-blob": "azure.storage.blob",
    "snowflake-connector-python": "snowflake.connector",
    "mysql-connector-python": "mysql.connector",
    "duckdb-engine": "duckdb_engine",
    "attrs": "attr",
    "protobuf": "google.protobuf",
}


class LibError(Exception):
    """A lib the step asked to bind cannot be imported; the message is for the user."""


@dataclass
class Libs:
    bindings: dict[str, Any] = field(default_factory=dict)  # global name -> module or object
    missing: dict[str, str] = field(default_factory=dict)  # top-level module -> declared requirement


def normalise(name: str) -> str:
    """A project name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _installed_modules() -> dict[str, tuple[str, ...]]:
    """Installed distribution (normalised) -> its top-level import names."""
    found: dict[str, list[str]] = {}
    import importlib.metadata  # only when a playbook lists libraries: it is slow to import

    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            found.setdefault(normalise(dist), []).append(module)
    return {dist: tuple(sorted(mods)) for dist, mods in found.items()}


def _import_name(project: str) -> str:
    """The module a project is imported as: from its metadata when installed, else a guess."""
    key = normalise(project)
    installed = [m for m in _installed_modules().get(key, ()) if not m.startswith("_")]
    if installed:
        return key.replace("-", "_") if key.replace("-", "_") in installed else installed[0]
    if key in _KNOWN_IMPORTS:
        return _KNOWN_IMPORTS[key]
    return re.sub(r"^python-|-python$|-binary$", "", key).replace("-", "_")


def _project(requirement: str) -> str | None:
    """The project name of a pip requirement (`psycopg[binary]>=3.1` -> `psycopg`)."""
    match = _REQUIREMENT.match(requirement)
    return match.group(1) if match else None


def install_hint(requirement: str) -> str:
    return (
        f"pip install '{requirement}'"
        if re.search(r"[\[<>=!~ ]", requirement)
        else f"pip install {requirement}"
    )


def load_libs(libs: Any) -> Libs:
    """Resolve a `libs:` value (see the module doc)."""
    out = Libs()
    if libs is None or libs == "" or libs == {} or libs == []:
        return out
    if isinstance(libs, str):
        libs = [libs]
    if isinstance(libs, Mapping):
        for alias, target in libs.items():
            out.bindings[str(alias)] = _import_bound(str(alias), target)
        return out
    if not isinstance(libs, (list, tuple)):
        raise LibError("libs must be a map {alias: module} or a list of module or pip package names")
    for item in libs:
        if isinstance(item, Mapping):
            nested = load_libs(item)
            out.bindings.update(nested.bindings)
            out.missing.update(nested.missing)
        elif isinstance(item, str) and item.strip():
            _declare(item.strip(), out)
        else:
            raise LibError(f"libs: cannot read entry {item!r} (expected a module or pip package name)")
    return out


def _declare(entry: str, out: Libs) -> None:
    name, _, alias = (part.strip() for part in entry.partition(" as "))
    if _MODULE.match(name):
        try:
            module = importlib.import_module(name)
        except ImportError:
            pass
        else:
            if alias:
                out.bindings[alias] = module
            else:
                top = name.split(".")[0]
                out.bindings[top] = importlib.import_module(top)
            return
    project = _project(name)
    if project is None:
        raise LibError(f"libs: {entry!r} is neither a module name nor a pip package name")
    module_name = _import_name(project)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        out.missing[module_name.split(".")[0]] = name
        return
    if alias:
        out.bindings[alias] = module
    else:
        top = module_name.split(".")[0]
        out.bindings[top] = importlib.import_module(top)


def _import_bound(alias: str, target: Any) -> Any:
    """`alias: target` of the map form: import it or fail naming the lib."""
    if target is None or target is True:
        target = alias
    try:
        if isinstance(target, str):
            return _import_text(target.strip())
        if isinstance(target, Mapping):
            source = target.get("from")
            name = target.get("import") or target.get("module")
            if source and name:
                module = importlib.import_module(str(source))
                try:
                    return getattr(module, str(name))
                except AttributeError:
                    return importlib.import_module(f"{source}.{name}")
            if source or name:
                return importlib.import_module(str(source or name))
    except ImportError as exc:
        raise LibError(_bound_failure(alias, target, exc)) from None
    except Exception as exc:
        raise LibError(
            f"cannot import lib '{alias}' ({_describe(target)}): {type(exc).__name__}: {exc}"
        ) from None
    raise LibError(
        f"lib '{alias}': expected a module name or {{from: <package>, import: <name>}}, got {target!r}"
    )


def _import_text(name: str) -> Any:
    """A module named by a module name or a pip project name (`PyYAML` -> yaml)."""
    if _MODULE.match(name):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    project = _project(name)
    module_name = _import_name(project) if project else name
    if module_name == name:
        return importlib.import_module(name)
    return importlib.import_module(module_name)


def _bound_failure(alias: str, target: Any, exc: ImportError) -> str:
    text = f"cannot import lib '{alias}' ({_describe(target)}): {type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        declared = target if isinstance(target, str) and not _MODULE.match(target.strip()) else None
        text += f"; install it where the step runs: {install_hint(declared or _guess_project(exc.name))}"
    return text


def _describe(target: Any) -> str:
    if isinstance(target, Mapping) and target.get("from") and target.get("import"):
        return f"from {target['from']} import {target['import']}"
    if isinstance(target, Mapping):
        return str(target.get("from") or target.get("import") or target.get("module"))
    return str(target)


def _guess_project(module: str) -> str:
    top = module.split(".")[0]
    for project, name in _KNOWN_IMPORTS.items():
        if name == module or name == top:
            return project
    return top.replace("_", "-")


def missing_module_message(exc: ModuleNotFoundError, missing: Mapping[str, str]) -> str | None:
    """A clear message for code that imported a module that is not installed, else None."""
    if not exc.name:
        return None
    top = exc.name.split(".")[0]
    declared = missing.get(top)
    if declared is not None:
        return (
            f"python library '{declared}' (module '{exc.name}') is listed in libs but not installed "
            f"where the step runs; install it there: {install_hint(declared)}"
        )
    return (
        f"python module '{exc.name}' is not installed where the step runs; install it there "
        f"(e.g. {install_hint(_guess_project(exc.name))}) and list it in the step's libs"
    )
