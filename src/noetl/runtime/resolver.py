"""Finding a nested playbook: the catalog first, then YAML files near the parent playbook whose
`metadata.path` matches."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.dsl.yaml_lines import load_yaml
from noetl.errors import PlaybookError
from noetl.store.ports import Catalog

log = logging.getLogger(__name__)

_MAX_FILES = 5000
_index_cache: dict[Path, dict[str, Path]] = {}


class PlaybookResolver:
    def __init__(self, catalog: Catalog, base_dir: Path | None) -> None:
        self.catalog = catalog
        self.base_dir = base_dir

    def resolve(
        self, *, path: str | None, catalog_id: int | None = None, version: int | None = None
    ) -> tuple[Playbook, int | None]:
        if catalog_id is not None:
            entry = self.catalog.resource_by_id(catalog_id)
            if entry is None:
                raise PlaybookError(f"no catalog entry with id {catalog_id}")
            return parse_playbook(
                entry.content, source=f"catalog:{entry.path}@{entry.version}"
            ), entry.catalog_id
        if not path:
            raise PlaybookError("a nested playbook needs 'path' or 'catalog_id'")
        entry = self.catalog.resource(path, version)
        if entry is not None:
            return parse_playbook(
                entry.content, source=f"catalog:{entry.path}@{entry.version}"
            ), entry.catalog_id
        for root in self._roots():
            found = _index(root).get(path.strip("/"))
            if found is not None:
                return parse_playbook(found.read_text(encoding="utf-8"), source=str(found)), None
        where = f" or under {self.base_dir}" if self.base_dir else ""
        raise PlaybookError(f"playbook '{path}' not found in the catalog{where}")

    def _roots(self) -> list[Path]:
        if self.base_dir is None:
            return []
        return [self.base_dir, self.base_dir.parent]


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
