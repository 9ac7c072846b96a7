"""Finding a nested playbook: the catalog first, then YAML files near the parent playbook whose
`metadata.path` matches (when the parent came from a file)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import yaml

from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.dsl.yaml_lines import load_yaml
from noetl.errors import NoetlError, PlaybookError
from noetl.store.ports import Catalog, CatalogEntry
from noetl.tools.base import ChildRequest

log = logging.getLogger(__name__)

_MAX_FILES = 5000
_index_cache: dict[Path, dict[str, Path]] = {}


class PlaybookResolver:
    """Resolves a child request to a playbook; catalog entries are parsed by `parse` (a cache)."""

    def __init__(self, catalog: Catalog, parse: Callable[[CatalogEntry], Playbook]) -> None:
        self.catalog = catalog
        self.parse = parse

    def resolve(self, request: ChildRequest, parent: Playbook | None = None) -> tuple[Playbook, int | None]:
        """The requested playbook and its catalog id (None for one found in a file). Raises
        PlaybookError when it cannot be found or parsed."""
        if request.catalog_id is not None:
            entry = self.catalog.resource_by_id(request.catalog_id)
            if entry is None:
                raise PlaybookError(f"no catalog entry with id {request.catalog_id}")
            return self._parsed(entry), entry.catalog_id
        path = request.path
        if not path:
            raise PlaybookError("a nested playbook needs 'path' or 'catalog_id'")
        entry = self.catalog.resource(path, request.version)
        if entry is not None:
            return self._parsed(entry), entry.catalog_id
        base_dir = source_dir(parent)
        for root in _roots(base_dir):
            found = _index(root).get(path.strip("/"))
            if found is not None:
                return parse_playbook(found.read_text(encoding="utf-8"), source=str(found)), None
        where = f" or under {base_dir}" if base_dir else ""
        version = f" version {request.version}" if request.version is not None else ""
        raise PlaybookError(f"playbook '{path}'{version} not found in the catalog{where}")

    def _parsed(self, entry: CatalogEntry) -> Playbook:
        try:
            return self.parse(entry)
        except NoetlError as exc:
            raise PlaybookError(str(exc)) from exc


def source_dir(playbook: Playbook | None) -> Path | None:
    """The folder of a playbook read from a file (None for catalog playbooks)."""
    if playbook is None or not playbook.source or playbook.source.startswith("catalog:"):
        return None
    return _folder(playbook.source)


@functools.lru_cache(maxsize=256)
def _folder(source: str) -> Path:
    return Path(source).resolve().parent  # asked for every command: resolved once per file


def _roots(base_dir: Path | None) -> list[Path]:
    if base_dir is None:
        return []
    return [base_dir, base_dir.parent]


def _index(root: Path) -> dict[str, Path]:
    """metadata.path -> file, for the YAML files under root (cached per root)."""
    cached = _index_cache.get(root)
    if cached is not None:
        return cached
    index: dict[str, Path] = {}
    count = 0
    for pattern in ("*.yaml", "*.yml"):
        for file in sorted(root.rglob(pattern)):
            count += 1
            if count > _MAX_FILES:
                break
            try:
                doc = load_yaml(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                continue
            if not isinstance(doc, dict) or doc.get("kind") != "Playbook":
                continue
            meta = doc.get("metadata")
            if isinstance(meta, dict):
                key = str(meta.get("path") or meta.get("name") or "").strip("/")
                if key and key not in index:
                    index[key] = file
    _index_cache[root] = index
    return index
