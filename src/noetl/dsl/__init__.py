"""The playbook DSL: parse and validate YAML into the typed model of `noetl.dsl.model`."""

from noetl.dsl.model import (
    Arc,
    Loop,
    Next,
    Playbook,
    PolicyRule,
    Step,
    ToolSpec,
)
from noetl.dsl.parser import API_VERSIONS, load_playbook, parse_playbook

__all__ = [
    "API_VERSIONS",
    "Arc",
    "Loop",
    "Next",
    "Playbook",
    "PolicyRule",
    "Step",
    "ToolSpec",
    "load_playbook",
    "parse_playbook",
]
