"""`tool.spec.policy.rules`: what to do with one attempt's outcome.

Inside a rule, `output` is the attempt's outcome: `{status: ok|error, data, error: {message,
status, retryable, kind}, http: {status, headers}, exit_code, attempt}`. `error.kind` is one of
`noetl.tools.failure.KINDS` (server_error, rate_limit, auth, not_found, client_error, timeout,
connection, tool); `error.retryable` is true for server_error, rate_limit, timeout and connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from noetl.dsl.model import Backoff, PolicyAction, PolicyRule
from noetl.template import evaluate_condition
from noetl.tools.base import ToolResult

_ACTIONS = ("continue", "retry", "fail", "jump", "break")
DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 300.0


def rules_from_config(config: Mapping[str, Any] | None) -> tuple[PolicyRule, ...]:
    """Read rules from a tool config's raw `spec` block (as carried by a command)."""
    if not isinstance(config, Mapping):
        return ()
    spec = config.get("spec") if "spec" in config else None
    source = spec if isinstance(spec, Mapping) else config
    policy = source.get("policy")
    raw_rules = policy.get("rules") if isinstance(policy, Mapping) else None
    if not isinstance(raw_rules, list):
        return ()
    return tuple(rule_from_raw(raw) for raw in raw_rules if isinstance(raw, Mapping))


def rule_from_raw(raw: Mapping[str, Any]) -> PolicyRule:
    is_else = "else" in raw
    body: Any = raw.get("else") if is_else else raw
    if isinstance(body, Mapping) and isinstance(body.get("then"), Mapping):
        then = body["then"]
    elif isinstance(raw.get("then"), Mapping):
        then = raw["then"]
    else:
        then = body if isinstance(body, Mapping) else {}
    action = str(then.get("do", "continue"))
    if action not in _ACTIONS:
        action = "continue"
    backoff = str(then.get("backoff", "fixed"))
    if backoff not in ("fixed", "linear", "exponential"):
        backoff = "fixed"
    attempts = then.get("attempts", then.get("max_attempts"))
    delay = then.get("delay")
    setter = then.get("set")
    return PolicyRule(
        action=cast(PolicyAction, action),
        when=None if is_else else raw.get("when", True),
        is_else=is_else,
        attempts=int(attempts)
        if isinstance(attempts, (int, float, str)) and str(attempts).isdigit()
        else None,
        delay=float(delay) if isinstance(delay, (int, float)) else None,
        backoff=cast(Backoff, backoff),
        to=then.get("to"),
        set=dict(setter) if isinstance(setter, Mapping) else {},
    )


def outcome_view(result: ToolResult, attempt: int) -> dict[str, Any]:
    """The `output` a policy rule sees for one attempt."""
    view: dict[str, Any] = {
        "status": "ok" if result.ok else "error",
        "data": result.data,
        "attempt": attempt,
        "duration_ms": result.duration_ms,
    }
    if not result.ok:
        view["error"] = {
            "message": result.error or result.status,
            "status": result.http_status,
            "retryable": result.is_retryable,
            "kind": result.failure_kind,
        }
    if result.http_status is not None:
        headers = result.data.get("headers") if isinstance(result.data, Mapping) else None
        view["http"] = {"status": result.http_status, "headers": headers}
    if result.exit_code is not None:
        view["exit_code"] = result.exit_code
    return view


def match(rules: tuple[PolicyRule, ...], scope: Mapping[str, Any]) -> PolicyRule | None:
    """The first rule whose `when` holds (an `else` rule always holds)."""
    for rule in rules:
        if rule.is_else:
            return rule
        when = rule.when
        if when is None or when is True:
            return rule
        if when is False:
            continue
        if evaluate_condition(when, scope):
            return rule
    return None


def retry_delay(rule: PolicyRule, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = DEFAULT_RETRY_DELAY if rule.delay is None else rule.delay
    if rule.backoff == "linear":
        delay = base * attempt
    elif rule.backoff == "exponential":
        delay = base * (2 ** (attempt - 1))
    else:
        delay = base
    return min(max(delay, 0.0), MAX_RETRY_DELAY)
