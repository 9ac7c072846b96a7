"""One exception hierarchy for the whole package.

Adapters translate driver errors (sqlite3, psycopg, httpx, nats) into these, so callers
never need to know which backend is in use.
"""

from __future__ import annotations


class NoetlError(Exception):
    """Base class of every error NoETL raises on purpose."""


class PlaybookError(NoetlError):
    """A playbook is invalid: it names the step and field, and the YAML line when known."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        field: str | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.step = step
        self.field = field
        self.line = line
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        where: list[str] = []
        if self.source:
            where.append(self.source + (f":{self.line}" if self.line else ""))
        elif self.line:
            where.append(f"line {self.line}")
        if self.step:
            where.append(f"step '{self.step}'")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class TemplateError(NoetlError):
    """A template could not be parsed or rendered."""


class ToolError(NoetlError):
    """A tool failed in a way its caller should report as a step error."""

    def __init__(self, message: str, *, retryable: bool = False, data: object = None) -> None:
        self.retryable = retryable
        self.data = data
        super().__init__(message)


class ArgumentError(NoetlError):
    """An argument of a command or of the Python API is malformed (`--set` without `=`, a
    `--payload` that is not a JSON object, an unknown credential type)."""


class ConfigError(NoetlError):
    """A setting (an environment variable) has a value NoETL cannot use; the message names it."""


class CredentialError(NoetlError):
    """A credential is missing, malformed or cannot be decrypted."""


class MissingCredential(CredentialError):
    """A credential alias is not where the run looks for it. `where` says where that is (" on the
    server URL"), `option` is the `noetl credential add` option that writes there ("--server
    URL", "--store URL", or "" for the default local store)."""

    def __init__(self, alias: str, *, where: str = "", option: str = "") -> None:
        self.alias = alias
        self.where = where
        self.option = option
        super().__init__(self.advice())

    def advice(self, type_: str = "<type>", data: str = "{...}") -> str:
        """The message, with the command that adds the credential where this run looks."""
        option = f" {self.option}" if self.option else ""
        return (
            f"credential '{self.alias}' not found{self.where}; add it with: "
            f"noetl credential add {self.alias} --type {type_} --data '{data}'{option}"
        )


class ValidationFailed(NoetlError):
    """A request is well-formed JSON but its content is not acceptable (HTTP 422)."""


class Forbidden(NoetlError):
    """The caller may not do this (HTTP 403): e.g. a worker asks for a secret of a command it
    does not hold."""


class StoreError(NoetlError):
    """The event store or catalog failed."""


class NotFound(StoreError):
    """A looked-up record (execution, catalog entry, command) does not exist."""


class Conflict(StoreError):
    """A write conflicts with existing state (duplicate claim, duplicate id)."""


class BusError(NoetlError):
    """The command bus failed."""


class EngineError(NoetlError):
    """The orchestration engine could not evaluate the playbook (bad template, bad loop input)."""
