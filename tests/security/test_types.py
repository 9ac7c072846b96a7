"""The value types every request field goes through (`noetl.api.types`): the id pattern is exact at
int64's bound, ids are strings of digits or numbers, text refuses NUL and lone surrogates, names
refuse blanks. These run in-process (no server)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from noetl.api.models import ClaimManyBody, ExecuteBody, parse
from noetl.api.types import ID_PATTERN, MAX_ID, Id, Name, Text
from noetl.errors import ValidationFailed


class Probe(BaseModel):
    id: Id | None = None
    text: Text | None = None
    name: Name | None = None


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0", True),
        ("7", True),
        (str(MAX_ID), True),
        (str(MAX_ID - 1), True),
        ("9223372036854775799", True),
        ("922337203685477580", True),
        (str(MAX_ID + 1), False),
        ("9999999999999999999", False),
        ("00", False),
        ("07", False),
        ("-1", False),
        ("1\n", False),
        ("", False),
        ("\uff11\uff12", False),  # fullwidth digits
    ],
)
def test_the_id_pattern_is_exact(text: str, valid: bool) -> None:
    assert bool(re.fullmatch(ID_PATTERN, text)) is valid
    if valid:
        assert Probe(id=text).id == int(text)
    else:
        with pytest.raises(ValidationError):
            Probe(id=text)


@given(st.text(alphabet="0123456789", max_size=21) | st.integers(0, 2 * MAX_ID).map(str))
def test_ids_accepted_are_what_the_pattern_says(text: str) -> None:
    """The validator reads digits without a regular expression; it must agree with ID_PATTERN
    (what the OpenAPI document promises) on every string of digits."""
    if re.fullmatch(ID_PATTERN, text):
        assert Probe(id=text).id == int(text)
    else:
        with pytest.raises(ValidationError):
            Probe(id=text)


@pytest.mark.parametrize("value", [True, -1, 2**63, 1.5, float("nan"), [], {}])
def test_ids_that_are_no_int64_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        Probe(id=value)


def test_numbers_and_strings_are_the_same_id() -> None:
    assert Probe(id=12).id == Probe(id="12").id == Probe(id=12.0).id == 12


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udfff"])
def test_text_refuses_nul_and_lone_surrogates(bad: str) -> None:
    with pytest.raises(ValidationError):
        Probe(text=bad)
    assert Probe(text="tab\tnewline\n ünïcode 🙂").text == "tab\tnewline\n ünïcode 🙂"


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000", "\u00a0"])
def test_names_refuse_blanks(blank: str) -> None:
    with pytest.raises(ValidationError):
        Probe(name=blank)
    assert Probe(name=" w1 ").name == " w1 "


def test_messages_name_the_field() -> None:
    with pytest.raises(ValidationFailed, match=r"^Invalid parent_execution_id"):
        parse(ExecuteBody, {"path": "p", "parent_execution_id": "x"})
    with pytest.raises(ValidationFailed, match="limit"):
        parse(ClaimManyBody, {"worker_id": "w", "limit": True})
    assert parse(ClaimManyBody, {"worker_id": "w", "limit": 5.0}).limit == 5  # JSON Schema's integer
    with pytest.raises(ValidationFailed, match="worker_id"):
        parse(ClaimManyBody, {"worker_id": 5})
