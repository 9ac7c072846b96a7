"""What the environment of user code (python and shell steps) leaves out: the variables that hold
the control plane's own secrets. User code runs with the worker's rights (README, Security), but
it does not need the API token, the credential encryption key or the store's URL (which may hold
a database password), so they are not handed to it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

SECRET_VARIABLES = frozenset({"NOETL_API_TOKEN", "NOETL_ENCRYPTION_KEY", "NOETL_STORE_URL"})


def command_environment(extra: Mapping[str, str | None] | None = None) -> dict[str, str] | None:
    """The environment of a command: this process's without the secret variables, plus `extra`
    (a None value removes a variable). None when that is this process's own environment as is
    (a process then inherits it without encoding every variable again)."""
    secrets = [name for name in SECRET_VARIABLES if name in os.environ]  # not a walk of environ
    if not secrets and not extra:
        return None
    env = {key: value for key, value in os.environ.items() if key not in secrets}
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def scrub_process() -> None:
    """Remove the secret variables from this process (the python-tool fork server, before it
    forks any step's process) and forget settings parsed from them."""
    for name in SECRET_VARIABLES:
        os.environ.pop(name, None)
    from noetl.settings import forget

    forget()


def text_values(values: Mapping[Any, Any], as_text: Any) -> dict[str, str | None]:
    """A step's `env` mapping with its keys as text and its values through `as_text` (None kept:
    it removes the variable)."""
    return {str(key): None if value is None else as_text(value) for key, value in values.items()}
