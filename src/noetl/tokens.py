"""API tokens: how they look, how they are stored (hashed), and where the local admin token lives.

A token is `noetl_` followed by 43 URL-safe characters (32 random bytes). The store keeps only
its SHA-256 (a token has 256 bits of entropy, so a slow hash adds nothing). Scopes: `admin`
(everything), `worker` (register and heartbeat, claim commands, report the events of commands it
holds, fetch the secrets those commands need) and `read` (GET routes only); each includes the
ones after it.

The admin token of a server is `NOETL_API_TOKEN`; when that is unset, a token file (mode 0600,
`NOETL_TOKEN_FILE`, else `api-token` in the per-user data directory), created on the server's
first start. The CLI and workers on the same machine read the same file, so a local set-up needs
no configuration (the Jupyter pattern). Standard library only: every command can import this.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ADMIN, WORKER, READ = "admin", "worker", "read"
SCOPES = (ADMIN, WORKER, READ)
_RANK = {READ: 0, WORKER: 1, ADMIN: 2}
PREFIX = "noetl_"
TOKEN_FILE_NAME = "api-token"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def allows(scope: str, needed: str) -> bool:
    """Whether a token of `scope` may do what needs `needed` (admin > worker > read)."""
    return _RANK.get(scope, -1) >= _RANK[needed]


def default_token_file() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("noetl")) / TOKEN_FILE_NAME


def read_token_file(path: Path) -> str | None:
    """The token in `path`, or None when there is no such file (or it is empty)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def ensure_token_file(path: Path) -> str:
    """The admin token kept in `path`, created (mode 0600) when missing."""
    found = read_token_file(path)
    if found:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server wrote it first
        return read_token_file(path) or ensure_token_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def client_token(api_token: str | None, token_file: str | None) -> str | None:
    """The token a client (CLI, worker) sends: NOETL_API_TOKEN, else the local token file."""
    if api_token:
        return api_token
    return read_token_file(Path(token_file) if token_file else default_token_file())
