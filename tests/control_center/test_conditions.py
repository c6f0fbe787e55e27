"""The condition language: what it reads, what it refuses, and that no input crashes
it or runs Python."""

from __future__ import annotations

import builtins
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_center.conditions import MAX_DEPTH, ConditionError, parse_condition

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

CONTEXT = {
    "user.id": "u-1",
    "user.username": "alice",
    "user.role": "admin",
    "user.roles": ("admin", "operator"),
    "user.via": "jwt",
    "resource": "servers:web-01",
    "resource.owner": "u-1",
    "action": "create",
    "request.ip": "10.0.0.7",
    "request.method": "POST",
    "time.hour": 9,
    "time.weekday": 2,
}


def holds(source: str, context: dict | None = None) -> bool:
    return parse_condition(source).evaluate(CONTEXT if context is None else context)


def test_the_seed_example_matches_the_primary_role():
    assert holds("user.role == 'admin'")
    assert not holds("user.role == 'admin'", {**CONTEXT, "user.role": "operator"})


@pytest.mark.parametrize(
    "source",
    [
        "'operator' in user.roles",
        "'viewer' not in user.roles",
        "user.username != 'bob' and action in ['create', 'read']",
        "not (resource == 'x') or False",
        "time.hour >= 8 and time.hour < 18",
        "8 <= time.hour < 18",
        "request.ip in ['10.0.0.7', '10.0.0.8']",
        "resource.owner == user.id",
        "'web' in resource",
        "time.weekday < 5 and user.via == 'jwt'",
        "-1 < time.hour",
        "True",
    ],
)
def test_conditions_that_hold(source):
    assert holds(source)


@pytest.mark.parametrize(
    "source",
    [
        "user.role == 'viewer'",
        "time.hour == '9'",  # a number is never equal to a string
        "user.roles == 'admin'",  # nor a list
        "'adm' in user.roles",  # lists hold whole values
        "time.hour in 'abc'",
        "user.username > 5",
        "False or not True",
        "resource.owner == ''",
    ],
)
def test_conditions_that_do_not_hold(source):
    assert not holds(source)


def test_names_missing_from_the_context_read_as_empty():
    assert holds("resource.owner == ''", {})
    assert not holds("'admin' in user.roles", {})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os').system('true')", "a function call is not allowed"),
        ("user.__class__", "unknown name 'user.__class__'"),
        ("password == 'x'", "unknown name 'password'"),
        ("user.roles[0] == 'admin'", "indexing is not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("[x for x in user.roles]", "'ListComp' is not allowed"),
        ("(x := 1)", "an assignment is not allowed"),
        ("f'{user.id}' == 'a'", "an f-string is not allowed"),
        ("time.hour + 1 > 2", "arithmetic is not allowed"),
        ("b'x' == 'x'", "the literal b'x' is not allowed"),
        ("user.id is user.username", "the operator 'is' is not allowed"),
        ("user.id == None", "the literal None is not allowed"),
        ("{'a': 1}", "a dictionary is not allowed"),
        ("user.role ==", "is not a valid expression"),
        ("user.role = 'admin'", "is not a valid expression"),
        ("", "is empty"),
        ("x" * 1001, "longer than"),
        ("not " * (MAX_DEPTH + 2) + "True", "nests deeper"),
        ("1 if True else 2", "a conditional expression is not allowed"),
    ],
)
def test_conditions_that_are_refused(source, message):
    with pytest.raises(ConditionError) as raised:
        parse_condition(source)
    assert message in str(raised.value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_parsed_or_refused_never_crashes(text):
    try:
        condition = parse_condition(text)
    except ConditionError:
        return
    assert isinstance(condition.evaluate(CONTEXT), bool)


PIECES = st.sampled_from(
    [
        "user.role",
        "user.roles",
        "resource",
        "action",
        "time.hour",
        "'admin'",
        "'x'",
        "1",
        "2.5",
        "True",
        "False",
        "[",
        "]",
        "(",
        ")",
        ",",
        " == ",
        " != ",
        " < ",
        " >= ",
        " in ",
        " not in ",
        " and ",
        " or ",
        "not ",
        "__import__",
        "(",
        "'os'",
        ".",
        "system",
        "-",
        "lambda",
        ":",
        "eval",
        "open",
        "[0]",
        "{",
        "}",
        "*",
        "**",
        "if",
        "else",
        "\\",
        "\n",
    ]
)


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("eval or exec was called")


@settings(max_examples=1000, deadline=None)
@given(st.lists(PIECES, max_size=25))
def test_near_miss_expressions_never_run_python(pieces):
    text = "".join(pieces)
    # While the language parses and evaluates, eval and exec explode.
    with patch.object(builtins, "eval", _refuse), patch.object(builtins, "exec", _refuse):
        try:
            condition = parse_condition(text)
        except ConditionError:
            return
        assert isinstance(condition.evaluate(CONTEXT), bool)


# An oracle: over strings and lists of strings, the language agrees with Python.
STRING_NAMES = {"user.role": "admin", "resource": "servers:web-01", "action": "create"}
ATOMS = st.sampled_from([*STRING_NAMES, "'admin'", "'create'", "'servers:web-01'", "'x'"])


def _expressions() -> st.SearchStrategy[str]:
    lists = st.lists(ATOMS, max_size=3).map(lambda items: f"[{', '.join(items)}]")
    comparisons = st.one_of(
        st.tuples(ATOMS, st.sampled_from(["==", "!="]), ATOMS).map(" ".join),
        st.tuples(ATOMS, st.sampled_from(["in", "not in"]), lists).map(" ".join),
    )
    return st.recursive(
        comparisons,
        lambda inner: st.one_of(
            inner.map(lambda e: f"not ({e})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
        ),
        max_leaves=8,
    )


@settings(max_examples=300, deadline=None)
@given(_expressions())
def test_the_language_agrees_with_python_on_strings(expression):
    python_text = expression
    for name in STRING_NAMES:
        python_text = python_text.replace(name, name.replace(".", "_"))
    scope = {name.replace(".", "_"): value for name, value in STRING_NAMES.items()}
    # The oracle is Python itself, on expressions this test generated.
    expected = bool(eval(python_text, {"__builtins__": {}}, scope))
    assert parse_condition(expression).evaluate(STRING_NAMES) is expected


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("user.rol == 'x'", 1, 1),
        ("   user.rol == 'x'", 1, 4),  # in the text as given, before it is stripped
        ("user.id ==", 1, 11),  # the end: something must follow
        ("user.id = 1", 1, 9),
        ("'éé' == 1 + 1", 1, 9),  # characters, not the parser's UTF-8 bytes
        ("\n (user.id == 'x'\n  or len(x))", 3, 6),
        ("(user.id ==\n 1 +)", 2, 5),
    ],
)
def test_a_refusal_says_where_in_the_text_as_given(source, line, column):
    with pytest.raises(ConditionError) as refused:
        parse_condition(source)
    assert (refused.value.line, refused.value.column) == (line, column)
    where = f"line {line}, column {column}" if line != 1 else f"column {column}"
    assert str(refused.value).endswith(f"({where})")


def test_a_refusal_of_the_whole_text_has_no_position():
    with pytest.raises(ConditionError) as refused:
        parse_condition("   ")
    assert (refused.value.line, refused.value.column) == (None, None)
    assert str(refused.value) == "is empty"
