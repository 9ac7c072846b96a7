"""Unit tests for noetl.template: minijinja-compatible rendering on sandboxed Jinja2."""

from __future__ import annotations

import time
from collections import ChainMap
from types import MappingProxyType
from typing import Any

import pytest

from noetl.errors import TemplateError
from noetl.template import (
    evaluate_condition,
    format_value,
    referenced_names,
    render_text,
    render_to_value,
    render_value,
    typed_parse,
)
from noetl.template import render as render_module


@pytest.fixture
def ctx() -> dict[str, Any]:
    """A context shaped like the engine's pass context."""
    return {
        "workload": {"threshold": 10, "pg_auth": "pg_local"},
        "threshold": 10,
        "ctx": {
            "current_page": "3",
            "iteration_count": 2,
            "json_data": {"name": "O'Brien", "score": 1.5},
            "has_more": True,
        },
        "iter": {"num": 3, "_index": 0},
        "start": {"random_value": 12, "data": {"random_value": 12}, "items": ["a", "b"]},
        "process_low": {"category": "low", "processed": 2},
        "aggregate": {"count": 7},
        "output": {"status": "ok", "data": {"x": 1}},
        "event": {"name": "loop.done"},
        "nothing": None,
        "nested": {"gone": None, "list": [1, None]},
        "text": "hello",
        "empty_list": [],
    }


# -- render_text --------------------------------------------------------------------------------


class TestRenderText:
    def test_string_without_markers_is_returned_unchanged(self) -> None:
        raw = "plain {text} with {{ only an opening"
        assert render_text(raw, {}) is raw

    def test_half_markers_do_not_trigger_jinja(self) -> None:
        # `{{` without `}}` would be a syntax error if Jinja saw it.
        assert render_text("a {{ b", {}) == "a {{ b"
        assert render_text("only {% opening", {}) == "only {% opening"
        assert render_text("only closing %} and }}", {}) == "only closing %} and }}"

    def test_comment_only_template_is_not_detected(self) -> None:
        assert render_text("{# note #}", {}) == "{# note #}"

    def test_interpolation(self, ctx: dict[str, Any]) -> None:
        text = "Aggregate completed with {{ aggregate.count }} items"
        assert render_text(text, ctx) == "Aggregate completed with 7 items"

    def test_block_statements(self, ctx: dict[str, Any]) -> None:
        template = "{% for x in start['items'] %}{{ loop.index }}={{ x }};{% endfor %}"
        assert render_text(template, ctx) == "1=a;2=b;"

    def test_loop_controls_extension(self) -> None:
        template = "{% for x in [1, 2, 3] %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}"
        assert render_text(template, {}) == "1"

    def test_raw_block_protects_braces(self) -> None:
        code = "{% raw %}print(f'{{x}} and {y}'){% endraw %}"
        assert render_text(code, {"x": 1}) == "print(f'{{x}} and {y}')"

    def test_accepts_any_mapping_without_copying(self) -> None:
        base = {"a": 1}
        assert render_text("{{ a }}-{{ b }}", ChainMap({"b": 2}, base)) == "1-2"
        assert render_text("{{ a }}", MappingProxyType(base)) == "1"

    def test_set_inside_template_does_not_leak_into_context(self) -> None:
        ctx: dict[str, Any] = {"a": 1}
        assert render_text("{% set a = 5 %}{% set b = 2 %}{{ a + b }}", ctx) == "7"
        assert ctx == {"a": 1}

    def test_globals_stay_available(self) -> None:
        assert render_text("{{ range(3) | join(',') }}", {}) == "0,1,2"
        assert render_text("{{ dict(a=1).a }}", {}) == "1"

    def test_context_key_shadows_a_global(self) -> None:
        assert render_text("{{ range }}", {"range": "mine"}) == "mine"


# -- 1. chainable undefined ---------------------------------------------------------------------


class TestUndefined:
    def test_chained_attribute_and_item_of_undefined_prints_empty(self) -> None:
        assert render_text("[{{ a.b.c }}][{{ a['b'][0] }}]", {}) == "[][]"

    def test_missing_key_of_a_map_is_undefined(self, ctx: dict[str, Any]) -> None:
        assert render_text("{{ output.http.status }}", ctx) == ""
        assert render_to_value("{{ output.http.status }}", ctx) is None

    def test_arithmetic_with_undefined_raises(self) -> None:
        with pytest.raises(TemplateError, match="undefined"):
            render_text("{{ missing + 1 }}", {})
        with pytest.raises(TemplateError):
            render_text("{{ 1 + missing }}", {})

    def test_ordering_comparison_with_undefined_raises(self) -> None:
        with pytest.raises(TemplateError):
            render_to_value("{{ missing > 3 }}", {})

    def test_equality_with_undefined_is_false(self) -> None:
        assert render_to_value("{{ missing == 3 }}", {}) is False

    def test_undefined_is_falsy_in_conditional_expression(self, ctx: dict[str, Any]) -> None:
        template = "{{ process_high.category if process_high else process_low.category }}"
        assert render_to_value(template, ctx) == "low"


# -- 2. None is undefined -----------------------------------------------------------------------


class TestNoneIsUndefined:
    def test_top_level_none(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ nothing is defined }}", ctx) is False
        assert render_to_value("{{ nothing is undefined }}", ctx) is True
        assert render_text("[{{ nothing }}]", ctx) == "[]"
        assert render_to_value("{{ nothing | default('fallback') }}", ctx) == "fallback"

    def test_none_through_attribute_and_item(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ nested.gone is defined }}", ctx) is False
        assert render_to_value("{{ nested['gone'] | default(5) }}", ctx) == 5
        assert render_to_value("{{ nested.list[1] is defined }}", ctx) is False
        assert render_to_value("{{ nested.gone.deeper }}", ctx) is None

    def test_none_test_accepts_none_and_undefined(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ nothing is none }}", ctx) is True
        assert render_to_value("{{ none is none }}", ctx) is True
        assert render_to_value("{{ missing is none }}", ctx) is True
        assert render_to_value("{{ 0 is none }}", ctx) is False

    def test_context_is_not_modified(self, ctx: dict[str, Any]) -> None:
        render_text("{{ nothing }}{{ nested.gone }}", ctx)
        assert ctx["nothing"] is None
        assert ctx["nested"] == {"gone": None, "list": [1, None]}


# -- 3. attribute access on mappings ------------------------------------------------------------


class TestMappingAttributes:
    def test_key_wins_over_dict_method(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ start.items }}", ctx) == ["a", "b"]
        assert render_to_value("{{ m.keys }}", {"m": {"keys": 3}}) == 3

    def test_methods_still_work_without_such_key(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ output.get('status') }}", ctx) == "ok"
        assert render_to_value("{{ output.get('nope', 'dflt') }}", ctx) == "dflt"
        assert render_to_value("{{ output.keys() | list }}", ctx) == ["status", "data"]

    def test_result_falls_through_to_the_mapping(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ start.result.random_value }}", ctx) == 12
        assert render_to_value("{{ r.result }}", {"r": {"result": 4}}) == 4

    def test_list_index_by_attribute(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ start['items'].1 }}", ctx) == "b"

    def test_unsafe_attributes_are_blocked(self) -> None:
        with pytest.raises(TemplateError):
            render_text("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


# -- 4. minijinja-style output ------------------------------------------------------------------


class TestOutputFormat:
    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("{{ true }}", "true"),
            ("{{ false }}", "false"),
            ("{{ [1, 'a'] }}", '[1, "a"]'),
            ("{{ {'k': 1} }}", '{"k": 1}'),
            ("{{ none }}", ""),
            ("{{ 1.0 }}", "1.0"),
            ("{{ 2.5 * 2 }}", "5.0"),
            ("{{ 7 // 2 }}", "3"),
            ("{{ x }}", '{"a": [true, null], "b": "é"}'),
        ],
    )
    def test_text(self, template: str, expected: str) -> None:
        assert render_text(" " + template + " ", {"x": {"a": [True, None], "b": "é"}}) == f" {expected} "

    def test_generators_print_as_lists(self) -> None:
        assert render_text("{{ [1, 2] | map('string') }}", {}) == '["1", "2"]'
        assert render_text("{{ [1, 2, 3] | select('odd') }}", {}) == "[1, 3]"

    def test_format_value(self) -> None:
        assert format_value(True) == "true"
        assert format_value(None) == ""
        assert format_value("é") == "é"
        assert format_value(3) == "3"
        assert format_value(0.1) == "0.1"
        assert format_value([1, "a", None]) == '[1, "a", null]'
        assert format_value({"b": 1, "a": {"c": False}}) == '{"b": 1, "a": {"c": false}}'
        assert format_value((1, 2)) == "[1, 2]"
        assert format_value({"x": {1, 2}}) == '{"x": [1, 2]}'
        assert format_value([float("nan")]) == "[null]"

    def test_format_value_of_undefined(self) -> None:
        from jinja2 import ChainableUndefined

        assert format_value(ChainableUndefined()) == ""
        assert format_value([ChainableUndefined()]) == "[null]"


# -- 5. filters ---------------------------------------------------------------------------------


class TestFilters:
    def test_default(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ missing | default('x') }}", ctx) == "x"
        assert render_to_value("{{ missing | d('x') }}", ctx) == "x"
        assert render_text("[{{ missing | default }}]", ctx) == "[]"
        assert render_to_value("{{ user_data | default({'name': 'x'}) }}", ctx) == {"name": "x"}
        assert render_to_value("{{ ctx.loop_results | default([]) }}", ctx) == []
        # Present but falsy values are kept.
        assert render_to_value("{{ 0 | default(5) }}", ctx) == 0
        assert render_to_value("{{ '' | default('x') }}", ctx) is None

    def test_default_refuses_a_second_argument(self) -> None:
        with pytest.raises(TemplateError, match="default"):
            render_text("{{ missing | default('x', true) }}", {})

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("{{ 5 | int }}", 5),
            ("{{ '42' | int }}", 42),
            ("{{ '007' | int }}", 7),
            ("{{ '3.9' | int }}", 3),
            ("{{ '-3.9' | int }}", -3),
            ("{{ 3.9 | int }}", 3),
            ("{{ '1e3' | int }}", 1000),
            ("{{ true | int }}", 1),
            ("{{ '12345678901234567' | int }}", 12345678901234567),
            ("{{ 2 | float }}", 2.0),
            ("{{ '2.5' | float }}", 2.5),
        ],
    )
    def test_int_and_float(self, template: str, expected: Any) -> None:
        value = render_to_value(template, {})
        assert value == expected
        assert type(value) is type(expected)

    @pytest.mark.parametrize("template", ["{{ 'abc' | int }}", "{{ missing | int }}", "{{ 'x' | float }}"])
    def test_int_and_float_fail_on_bad_input(self, template: str) -> None:
        with pytest.raises(TemplateError):
            render_text(template, {})

    def test_text_filters(self) -> None:
        assert render_text("{{ 'AbC' | lower }}{{ 'AbC' | upper }}", {}) == "abcABC"
        assert render_text("[{{ '  x  ' | trim }}]", {}) == "[x]"
        assert render_text("{{ true | string }}", {}) == "true"
        assert render_to_value("{{ [1, 'a'] | string }}", {}) == [1, "a"]
        assert render_to_value("{{ (5 | string) ~ 'x' }}", {}) == "5x"

    def test_split_and_join(self) -> None:
        assert render_to_value("{{ 'a b c' | split }}", {}) == ["a", "b", "c"]
        assert render_to_value("{{ 'a,b' | split(',') }}", {}) == ["a", "b"]
        assert render_to_value("{{ ['a', 1, true] | join }}", {}) == "a1true"
        assert render_to_value("{{ ['a', 'b'] | join('-') }}", {}) == "a-b"
        assert render_to_value("{{ missing | join(',') }}", {}) is None

    def test_first_and_last(self) -> None:
        assert render_to_value("{{ [3, 4] | first }}", {}) == 3
        assert render_to_value("{{ [3, 4] | last }}", {}) == 4
        assert render_to_value("{{ 'xyz' | last }}", {}) == "z"
        assert render_to_value("{{ [1, 2, 3] | select('odd') | last }}", {}) == 3
        for template in ("{{ [] | first }}", "{{ [] | last }}", "{{ '' | first }}"):
            with pytest.raises(TemplateError, match="empty"):
                render_text(template, {})

    def test_length_counts_utf8_bytes_of_strings(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ 'héllo' | length }}", ctx) == 6
        assert render_to_value("{{ 'abc' | len }}", ctx) == 3
        assert render_to_value("{{ start['items'] | length }}", ctx) == 2
        assert render_to_value("{{ output | length }}", ctx) == 2
        assert render_to_value("{{ missing | length }}", ctx) == 0
        assert render_to_value("{{ [1, 2, 3] | select('odd') | length }}", ctx) == 2
        with pytest.raises(TemplateError):
            render_text("{{ 5 | length }}", ctx)

    def test_keys_values_items(self) -> None:
        ctx = {"m": {"a": 1, "b": 2}}
        assert render_to_value("{{ m | keys }}", ctx) == ["a", "b"]
        assert render_to_value("{{ m | values }}", ctx) == [1, 2]
        assert render_to_value("{{ m | items }}", ctx) == [["a", 1], ["b", 2]]
        assert render_text("{% for k, v in m | items %}{{ k }}{{ v }}{% endfor %}", ctx) == "a1b2"
        for name in ("keys", "values", "items"):
            with pytest.raises(TemplateError, match="mapping"):
                render_text("{{ [1] | " + name + " }}", ctx)

    def test_get(self) -> None:
        ctx = {"m": {"a": 1, "n": None}, "xs": [10, 20]}
        assert render_to_value("{{ m | get('a') }}", ctx) == 1
        assert render_to_value("{{ m | get('zz') is defined }}", ctx) is False
        assert render_to_value("{{ m | get('n') is defined }}", ctx) is False
        assert render_to_value("{{ xs | get(1) }}", ctx) == 20
        assert render_to_value("{{ xs | get(5) | default('none') }}", ctx) == "none"

    def test_tojson_is_compact_and_sorted(self, ctx: dict[str, Any]) -> None:
        assert render_text("{{ {'b': 1, 'a': [1.5, none, true]} | tojson }}", ctx) == (
            '{"a":[1.5,null,true],"b":1}'
        )
        assert render_text("{{ missing | tojson }}", ctx) == "null"
        assert render_text("{{ nothing | tojson }}", ctx) == "null"
        assert render_text("{{ 'é<>' | tojson }}", ctx) == '"é<>"'

    def test_tojson_keeps_floats_as_numbers(self) -> None:
        # Deliberate divergence: 3.13.0 writes 1.5 as the string "1.5".
        assert render_text("{{ 1.5 | tojson }}", {}) == "1.5"
        assert render_to_value("{{ {'v': 1.5} | tojson }}", {}) == {"v": 1.5}

    def test_tojson_then_replace_for_sql(self, ctx: dict[str, Any]) -> None:
        template = "'{{ ctx.json_data | tojson | replace(\"'\", \"''\") }}'::jsonb"
        assert render_text(template, ctx) == '\'{"name":"O\'\'Brien","score":1.5}\'::jsonb'
        value = render_to_value('{{ ctx.json_data | tojson | replace("\'", "\'\'") }}', ctx)
        assert value == {"name": "O''Brien", "score": 1.5}

    def test_fromjson(self) -> None:
        assert render_to_value("{{ ('{\"a\": [1, 2]}' | fromjson).a[1] }}", {}) == 2
        with pytest.raises(TemplateError, match="fromjson"):
            render_text("{{ 'not json' | fromjson }}", {})

    def test_base64(self) -> None:
        assert render_text("{{ 'héllo' | b64encode }}", {}) == "aMOpbGxv"
        assert render_text("{{ 'aMOpbGxv' | b64decode }}", {}) == "héllo"
        with pytest.raises(TemplateError, match="b64decode"):
            render_text("{{ '***' | b64decode }}", {})

    def test_safe_is_a_no_op(self) -> None:
        assert render_text("{{ '<b>' | safe }}", {}) == "<b>"
        assert render_text("{{ '<b>' }}", {}) == "<b>"  # no autoescape

    def test_bool_filter(self) -> None:
        assert render_to_value("{{ 1 | bool }}", {}) is True
        assert render_to_value("{{ '' | bool }}", {}) is False
        assert render_to_value("{{ missing | bool }}", {}) is False

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
            ("{{ 2.567 | round(1) }}", 2.6),
            ("{{ -3 | abs }}", 3),
            ("{{ 'ab' | list }}", ["a", "b"]),
            ("{{ [3, 1, 2] | sort }}", [1, 2, 3]),
            ("{{ [1, 1, 2] | unique | list }}", [1, 2]),
            ("{{ [3, 1] | min }}{{ [3, 1] | max }}", 13),
            ("{{ [1, 2, 3] | sum }}", 6),
            ("{{ 'hi there' | title }}", "Hi There"),
            ("{{ 'hi' | capitalize }}", "Hi"),
            ("{{ 'a b' | urlencode }}", "a%20b"),
            ("{{ [1, 2, 3] | batch(2) | list }}", [[1, 2], [3]]),
            ("{{ {'b': 1, 'a': 2} | dictsort }}", [["a", 2], ["b", 1]]),
            ("{{ [1, 2] | reverse | list }}", [2, 1]),
            ("{{ [1, 2] | count }}", 2),
            ("{{ users | map(attribute='id') | list }}", [1, 2]),
            ("{{ users | selectattr('on') | map(attribute='id') | first }}", 2),
            ("{{ users | rejectattr('on') | list | length }}", 1),
            ("{{ users | sort(attribute='id', reverse=true) | first | attr('id') }}", None),
        ],
    )
    def test_builtin_filters_remain(self, template: str, expected: Any) -> None:
        users = [{"id": 1, "on": False}, {"id": 2, "on": True}]
        assert render_to_value(template, {"users": users}) == expected

    def test_indent_and_slice(self) -> None:
        assert render_text("{{ 'a\nb' | indent(2) }}", {}) == "a\n  b"
        assert render_to_value("{{ [1, 2, 3] | slice(2) | list }}", {}) == [[1, 2], [3]]


# -- 6. tests -----------------------------------------------------------------------------------


class TestTests:
    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("{{ text is string }}", True),
            ("{{ 3 is string }}", False),
            ("{{ 3 is number }}", True),
            ("{{ 3.5 is number }}", True),
            ("{{ true is number }}", False),
            ("{{ '3' is number }}", False),
            ("{{ empty_list is sequence }}", True),
            ("{{ text is sequence }}", False),
            ("{{ output is mapping }}", True),
            ("{{ empty_list is mapping }}", False),
            ("{{ nothing is mapping }}", False),
            ("{{ missing is defined }}", False),
            ("{{ text is defined }}", True),
            ("{{ 3 is odd }}", True),
            ("{{ 4 is even }}", True),
            ("{{ 9 is divisibleby 3 }}", True),
            ("{{ 2 is in [1, 2] }}", True),
            ("{{ true is true }}", True),
            ("{{ 1 is false }}", False),
        ],
    )
    def test_is(self, ctx: dict[str, Any], template: str, expected: bool) -> None:
        assert render_to_value(template, ctx) is expected


# -- 8. errors ----------------------------------------------------------------------------------


class TestErrors:
    def test_syntax_error_names_the_template(self) -> None:
        with pytest.raises(TemplateError) as info:
            render_text("value: {{ a + }}", {})
        message = str(info.value)
        assert "syntax" in message
        assert "value: {{ a + }}" in message

    def test_render_error_names_the_template_and_cause(self) -> None:
        with pytest.raises(TemplateError) as info:
            render_to_value("{{ 1 / 0 }}", {})
        assert "{{ 1 / 0 }}" in str(info.value)
        assert "division" in str(info.value)

    def test_long_templates_are_shortened_in_messages(self) -> None:
        source = "{{ missing + 1 }}" + " filler" * 50
        with pytest.raises(TemplateError) as info:
            render_text(source, {})
        assert "..." in str(info.value)
        assert len(str(info.value)) < 200

    def test_unclosed_block_is_a_syntax_error(self) -> None:
        with pytest.raises(TemplateError, match="syntax"):
            render_text("{% if x %}open", {})

    def test_condition_errors_raise(self) -> None:
        with pytest.raises(TemplateError):
            evaluate_condition("missing > 3", {})


# -- typed_parse / render_to_value --------------------------------------------------------------


class TestTypedParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('{"a": 1}', {"a": 1}),
            (" [1, 2] ", [1, 2]),
            ("[1, 2", "[1, 2"),
            ("{not json}", "{not json}"),
            ("[NaN]", "[NaN]"),
            ("true", True),
            ("false", False),
            (" true ", True),
            ("True", "True"),
            ("007", 7),
            ("+5", 5),
            ("-12", -12),
            ("1e3", 1000.0),
            ("2.5", 2.5),
            (".5", 0.5),
            ("99999999999999999999", 1e20),
            ("NaN", "NaN"),
            ("inf", "inf"),
            ("1_000", "1_000"),
            ("null", None),
            ("None", None),
            ("", None),
            ("   ", None),
            (" hello ", " hello "),
            ("req-123", "req-123"),
        ],
    )
    def test_conversion(self, text: str, expected: Any) -> None:
        value = typed_parse(text)
        assert value == expected
        assert type(value) is type(expected)

    def test_literals_are_typed_without_rendering(self) -> None:
        assert render_to_value("123", {}) == 123
        assert render_to_value("", {}) is None
        assert render_to_value("[1,2]", {}) == [1, 2]
        assert render_to_value("plain", {}) == "plain"


class TestRenderToValue:
    def test_native_values_keep_their_type(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ iter.num }}", ctx) == 3
        assert render_to_value("{{ ctx.has_more }}", ctx) is True
        assert render_to_value("{{ ctx.json_data }}", ctx) == {"name": "O'Brien", "score": 1.5}
        assert render_to_value("{{ start['items'] }}", ctx) is ctx["start"]["items"]
        assert render_to_value("{{ 2.0 }}", ctx) == 2.0
        assert render_to_value("{{ missing }}", ctx) is None

    def test_string_values_are_typed(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ ctx.current_page }}", ctx) == 3
        assert render_to_value("{{ '[1, 2]' }}", ctx) == [1, 2]
        assert render_to_value("{{ 'null' }}", ctx) is None
        assert render_to_value("{{ text }}", ctx) == "hello"

    def test_surrounding_whitespace_is_kept_for_strings(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("  {{ text }} ", ctx) == "  hello "
        assert render_to_value(" {{ iter.num }}\n", ctx) == 3
        assert render_to_value("{{- text -}}", ctx) == "hello"

    def test_tuples_and_literal_containers(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ (1, 2) }}", ctx) == [1, 2]
        assert render_to_value("{{ [missing, 1, (2, 3)] }}", ctx) == [None, 1, [2, 3]]
        assert render_to_value("{{ {'a': missing} }}", ctx) == {"a": None}
        assert render_to_value("{{ [1, 2] | map('string') }}", ctx) == ["1", "2"]
        assert render_to_value("{{ users | map(attribute='nope') | list }}", {"users": [{}]}) == [None]

    def test_arithmetic(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ (ctx.current_page | int) + 1 }}", ctx) == 4
        assert render_to_value("{{ (ctx.iteration_count | int) + 1 }}", ctx) == 3

    def test_mixed_templates_render_to_text_then_parse(self, ctx: dict[str, Any]) -> None:
        assert render_to_value("{{ iter.num }}{{ iter._index }}", ctx) == 30
        assert render_to_value("{% if true %}[1, {{ iter.num }}]{% endif %}", ctx) == [1, 3]
        assert render_to_value("n={{ iter.num }}", ctx) == "n=3"

    @pytest.mark.parametrize(
        "template",
        [
            "{{ iter.num }}",
            "{{ text }}",
            "{{ ctx.current_page }}",
            "{{ ctx.json_data }}",
            "{{ [1, 'a', none] }}",
            "{{ missing }}",
            "{{ nothing }}",
            "{{ true }}",
            "{{ 2.5 }}",
            "{{ '  padded ' }}",
            " {{ 'x' }} ",
        ],
    )
    def test_native_path_matches_text_path(self, ctx: dict[str, Any], template: str) -> None:
        assert render_to_value(template, ctx) == typed_parse(render_text(template, ctx))

    def test_expression_reading_a_name_called_result(self) -> None:
        assert render_to_value("{{ result }}", {"result": 5}) == 5
        assert render_to_value("{{ result.a }}", {"result": {"a": "b"}}) == "b"


# -- 10. render_value ---------------------------------------------------------------------------


class TestRenderValue:
    def test_nested_structures(self, ctx: dict[str, Any]) -> None:
        spec = {
            "url": "http://x/{{ iter.num }}",
            "page": "{{ (ctx.current_page | int) + 1 }}",
            "{{ 'k' ~ iter.num }}": ["{{ start.random_value > threshold }}", "7", 1.5, None, True],
            "user": "{{ user_data | default({'name': 'x'}) }}",
            "n": 4,
            "msg": "Aggregate completed with {{ aggregate.count }} items",
        }
        assert render_value(spec, ctx) == {
            "url": "http://x/3",
            "page": 4,
            "k3": [True, 7, 1.5, None, True],
            "user": {"name": "x"},
            "n": 4,
            "msg": "Aggregate completed with 7 items",
        }

    def test_keys_render_as_text(self) -> None:
        assert render_value({"{{ n }}": 1, "5": 2}, {"n": 5}) == {"5": 2}  # later key wins
        assert render_value({"{{ n }}": 1}, {"n": 7}) == {"7": 1}

    def test_scalars_and_tuples(self) -> None:
        assert render_value(3, {}) == 3
        assert render_value(None, {}) is None
        assert render_value(("{{ a }}", "b"), {"a": 1}) == [1, "b"]

    def test_typical_conditions(self, ctx: dict[str, Any]) -> None:
        assert render_value("{{ output.http.status in [500, 502, 503] }}", ctx) is False
        assert render_value("{{ event.name == 'loop.done' }}", ctx) is True
        assert render_value("{{ start.random_value <= threshold }}", ctx) is False
        template = "{{ process_high.processed if process_high else process_low.processed }}"
        assert render_value(template, ctx) == 2


# -- evaluate_condition -------------------------------------------------------------------------


class TestEvaluateCondition:
    @pytest.mark.parametrize(
        ("condition", "expected"),
        [
            (True, True),
            (False, False),
            (None, True),
            ("true", True),
            ("false", False),
            ("0", False),
            ("1", True),
            ("0.0", True),
            ("'req-123'", True),
            ("'no'", False),
            ("'off'", False),
            ("' False '", False),
            ("'None'", False),
            ("'null'", False),
            ("[]", False),
            ("{}", False),
            ("[0]", True),
            ("missing", False),
            ("nothing", False),
            ("output", True),
            ("empty_list", False),
            ("{{ iter.num > 2 }}", True),
            ("iter.num > 5", False),
            ("{% if iter.num == 3 %}yes{% endif %}", True),
            ("{% if iter.num == 4 %}yes{% endif %}", False),
            ("{{ output.status }} == 'ok'", True),
            ("ctx.has_more == true", True),
            ("ctx.has_more != true", False),
            ("event.name == 'loop.done'", True),
            ("output.http.status in [500, 502, 503]", False),
            ("", False),
            ("   ", False),
        ],
    )
    def test_truthiness(self, ctx: dict[str, Any], condition: str | bool | None, expected: bool) -> None:
        assert evaluate_condition(condition, ctx) is expected


# -- referenced_names ---------------------------------------------------------------------------


class TestReferencedNames:
    def test_string(self) -> None:
        assert referenced_names("{{ start.random_value > threshold }}") == {"start", "threshold"}
        assert referenced_names("no template here") == set()

    def test_locals_are_not_reported(self) -> None:
        names = referenced_names("{% set y = 1 %}{% for x in xs %}{{ x + y + z }}{% endfor %}")
        assert names == {"xs", "z"}

    def test_nested(self) -> None:
        value = {"{{ k }}": ["{{ a.b }}", {"c": "{{ d | default(e) }}"}], "plain": 3}
        assert referenced_names(value) == {"k", "a", "d", "e"}

    def test_syntax_error(self) -> None:
        with pytest.raises(TemplateError):
            referenced_names("{{ a + }}")


# -- 9. caching ---------------------------------------------------------------------------------


class TestCaching:
    def test_loop_does_not_recompile(self) -> None:
        template = "{{ iter.num * 2 }}-unique-cache-probe"
        before = render_module._compile.cache_info()
        for index in range(1000):
            assert render_text(template, {"iter": {"num": index}}) == f"{index * 2}-unique-cache-probe"
        after = render_module._compile.cache_info()
        assert after.misses - before.misses == 1
        assert after.hits - before.hits == 999

    def test_cache_is_bounded(self) -> None:
        assert render_module._compile.cache_info().maxsize == render_module.CACHE_SIZE

    def test_micro_benchmark(self, ctx: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        """A sanity print only; timings are never asserted."""
        spec = {"url": "http://x/{{ iter.num }}", "page": "{{ (ctx.current_page | int) + 1 }}", "n": "5"}
        started = time.perf_counter()
        for index in range(10_000):
            ctx["iter"] = {"num": index, "_index": index}
            rendered = render_value(spec, ctx)
        elapsed = time.perf_counter() - started
        assert rendered == {"url": "http://x/9999", "page": 4, "n": 5}
        with capsys.disabled():
            print(f"\nrender_value x 10,000: {elapsed * 1000:.1f} ms ({elapsed * 100:.1f} us each)")
