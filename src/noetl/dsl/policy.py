"""Policy rules of a tool: `tool.spec.policy.rules`, each `{when, then: {do, ...}}` or
`{else: {do, ...}}`, with retry settings (attempts, delay, backoff) and jump targets."""

from __future__ import annotations

from typing import Any, cast

from noetl.dsl.checks import Checks, found, is_count, line_of, show
from noetl.dsl.model import Backoff, PolicyAction, PolicyRule

POLICY_ACTIONS: tuple[PolicyAction, ...] = ("continue", "retry", "fail", "jump", "break")
BACKOFFS: tuple[Backoff, ...] = ("fixed", "linear", "exponential")


def parse_policy(
    checks: Checks, raw: dict[Any, Any], *, step: str | None, prefix: str, labels: tuple[str, ...] | None
) -> tuple[PolicyRule, ...]:
    """The rules under `<prefix>.spec.policy.rules` (none when any level is absent)."""
    spec = raw.get("spec")
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        checks.fail(
            f"{prefix}.spec must be a mapping (e.g. {{policy: {{rules: [...]}}}}), got {show(spec)}",
            step=step,
            field=f"{prefix}.spec",
            line=line_of(raw, "spec"),
        )
    policy = spec.get("policy")
    if policy is None:
        return ()
    if not isinstance(policy, dict):
        checks.fail(
            f"{prefix}.spec.policy must be a mapping with 'rules', got {show(policy)}",
            step=step,
            field=f"{prefix}.spec.policy",
            line=line_of(spec, "policy"),
        )
    rules = policy.get("rules")
    if rules is None:
        return ()
    if not isinstance(rules, list):
        checks.fail(
            f"{prefix}.spec.policy.rules must be a list of {{when, then: {{do: ...}}}} rules, "
            f"got {show(rules)}",
            step=step,
            field=f"{prefix}.spec.policy.rules",
            line=line_of(policy, "rules"),
        )
    return tuple(
        parse_rule(checks, rule, rules, index, step=step, prefix=prefix, labels=labels)
        for index, rule in enumerate(rules)
    )


def parse_rule(
    checks: Checks,
    rule: Any,
    rules: list[Any],
    index: int,
    *,
    step: str | None,
    prefix: str,
    labels: tuple[str, ...] | None,
) -> PolicyRule:
    field = f"{prefix}.spec.policy.rules[{index}]"
    line = line_of(rules, index)
    if not isinstance(rule, dict):
        checks.fail(
            f"policy rule must be a mapping ({{when, then: {{do: ...}}}} or {{else: {{do: ...}}}}), "
            f"got {show(rule)}",
            step=step,
            field=field,
            line=line,
        )
    is_else = "else" in rule
    when, then = _condition_and_then(checks, rule, step=step, field=field, line=line)
    then_line = line_of(then) or line
    action = then.get("do")
    if action not in POLICY_ACTIONS:
        checks.fail(
            f"policy rule action 'do' must be one of {', '.join(POLICY_ACTIONS)}, {found(action)}",
            step=step,
            field=field,
            line=line_of(then, "do") or then_line,
        )
    attempts, delay, backoff = _retry_settings(checks, then, step=step, field=field)
    to = _jump_target(checks, then, action, labels, step=step, field=field, then_line=then_line)
    rule_set = checks.mapping(
        then, "set", step=step, field=f"{field}.set", what="variable name -> value template"
    )
    return PolicyRule(
        action=cast(PolicyAction, action),
        when=when,
        is_else=is_else,
        attempts=attempts,
        delay=None if delay is None else float(delay),
        backoff=backoff,
        to=to,
        set=rule_set,
    )


def _condition_and_then(
    checks: Checks, rule: dict[Any, Any], *, step: str | None, field: str, line: int | None
) -> tuple[str | bool | None, dict[Any, Any]]:
    """The rule's condition (None for the `else` rule) and its `then` mapping."""
    when: str | bool | None = None
    if "else" in rule:
        body = rule["else"]
        if not isinstance(body, dict):
            checks.fail(
                f"the 'else' of a policy rule must be a mapping ({{then: {{do: ...}}}} or {{do: ...}}), "
                f"got {show(body)}",
                step=step,
                field=field,
                line=line_of(rule, "else"),
            )
        then = body.get("then", body)
    else:
        if "when" not in rule:
            checks.fail(
                "policy rule needs 'when' (a condition) or must be an 'else' rule",
                step=step,
                field=field,
                line=line,
            )
        when = checks.check_when(rule["when"], step=step, field=f"{field}.when", line=line_of(rule, "when"))
        then = rule.get("then", rule)
    if not isinstance(then, dict):
        checks.fail(
            f"policy rule 'then' must be a mapping like {{do: retry, attempts: 3}}, got {show(then)}",
            step=step,
            field=field,
            line=line,
        )
    return when, then


def _retry_settings(
    checks: Checks, then: dict[Any, Any], *, step: str | None, field: str
) -> tuple[int | None, int | float | None, Backoff]:
    """`attempts`, `delay` and `backoff` of a rule (checked whatever its action)."""
    attempts = then.get("attempts")
    if attempts is not None and not is_count(attempts, 1):
        checks.fail(
            f"attempts must be an integer >= 1 (total tries including the first), got {show(attempts)}",
            step=step,
            field=f"{field}.attempts",
            line=line_of(then, "attempts"),
        )
    delay = then.get("delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0):
        checks.fail(
            f"delay must be a number of seconds >= 0, got {show(delay)}",
            step=step,
            field=f"{field}.delay",
            line=line_of(then, "delay"),
        )
    backoff = then.get("backoff", "fixed")
    if backoff is None:
        backoff = "fixed"
    if backoff not in BACKOFFS:
        checks.fail(
            f"backoff must be one of {', '.join(BACKOFFS)}, got {show(backoff)}",
            step=step,
            field=f"{field}.backoff",
            line=line_of(then, "backoff"),
        )
    return attempts, delay, cast(Backoff, backoff)


def _jump_target(
    checks: Checks,
    then: dict[Any, Any],
    action: Any,
    labels: tuple[str, ...] | None,
    *,
    step: str | None,
    field: str,
    then_line: int | None,
) -> str | None:
    """`to`: required by a `jump` rule and, inside a pipeline, one of its task labels."""
    to = then.get("to")
    if action == "jump":
        if not isinstance(to, str) or not to:
            checks.fail(
                "a 'jump' rule needs 'to': the label of the pipeline task to continue at",
                step=step,
                field=f"{field}.to",
                line=line_of(then, "to") or then_line,
            )
        if labels is not None and to not in labels:
            checks.fail(
                f"jump target '{to}' is not a task of this pipeline (tasks: {', '.join(labels)})",
                step=step,
                field=f"{field}.to",
                line=line_of(then, "to"),
            )
    elif to is not None and not isinstance(to, str):
        checks.fail(
            f"'to' must be a task label, got {show(to)}",
            step=step,
            field=f"{field}.to",
            line=line_of(then, "to"),
        )
    return to
