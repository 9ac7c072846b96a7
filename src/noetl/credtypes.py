"""The credential types the tools accept for `auth:`. Pure data (the CLI reads it for its help
text at start-up, so nothing is imported here)."""

from __future__ import annotations

# The credential types the tools accept for `auth:` (a credential stored with `noetl credential
# add NAME --type TYPE`), and the tools that use each. `noetl credential add` offers and accepts
# exactly these (and the aliases below, which the tools read as the type they name).
CREDENTIAL_TYPES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres", "duckdb", "ducklake", "transfer", "loop.cursor"),
    "bearer": ("http",),
    "api_key": ("http",),
    "basic": ("http",),
}
CREDENTIAL_ALIASES: dict[str, str] = {
    "postgresql": "postgres",
    "pg": "postgres",
    "bearer_token": "bearer",
    "token": "bearer",
    "oauth2": "bearer",
    "apikey": "api_key",
}


def credential_type(name: str | None) -> str | None:
    """The canonical credential type `name` stands for (case-insensitive), else None."""
    text = (name or "").strip().lower()
    if text in CREDENTIAL_TYPES:
        return text
    return CREDENTIAL_ALIASES.get(text)


def credential_types_text() -> str:
    """`postgres (postgres, duckdb, ...), bearer (http), ...`: for help texts and errors."""
    return ", ".join(f"{name} ({', '.join(tools)})" for name, tools in CREDENTIAL_TYPES.items())
