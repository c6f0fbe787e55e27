"""The condition language of policy rules: parsed, checked, never `eval`-ed.

A condition is one expression such as `user.role == 'admin'`,
`'operator' in user.roles and time.hour >= 8` or `resource.owner == user.id`.
Python's own parser reads the text (`ast.parse`, nothing is compiled or run); the tree
is then rebuilt from an allow-list of node types into the small classes below, and
anything else is refused with a message saying what and where. Evaluation is total:
comparing values of different types is simply false, never an error.

Names: `user.id`, `user.username`, `user.role` (the first role), `user.roles`,
`user.via` ("jwt" or "api_key"), `resource`, `resource.owner` (the user a resource
belongs to, when it belongs to one), `action`, `request.ip`, `request.method`,
`time.hour` and `time.weekday` (UTC; Monday is 0).
Operators: `== != < <= > >= in not in and or not`, parentheses.
Literals: strings, integers, decimals, `True`, `False`, and lists of values.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

MAX_LENGTH = 1000
MAX_DEPTH = 32
MAX_NODES = 200

NAMES = frozenset(
    {
        "user.id",
        "user.username",
        "user.role",
        "user.roles",
        "user.via",
        "resource",
        "resource.owner",
        "action",
        "request.ip",
        "request.method",
        "time.hour",
        "time.weekday",
    }
)

Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...]


class ConditionError(ValueError):
    """The condition cannot be used; the message says why and, when one part is at
    fault, where: `line` and `column` (both from 1) in the text as given."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.reason, self.line, self.column = reason, line, column
        super().__init__(reason)

    def __str__(self) -> str:
        if self.column is None:
            return self.reason
        line = "" if self.line in (None, 1) else f"line {self.line}, "
        return f"{self.reason} ({line}column {self.column})"

    def shifted(self, lines: int, columns: int) -> ConditionError:
        """The same error, its position moved by text cut before the parsed part
        (`columns` counts on the first line only)."""
        if self.line is None or self.column is None:
            return self
        column = self.column + columns if self.line == 1 else self.column
        return ConditionError(self.reason, self.line + lines, column)


@dataclass(frozen=True, slots=True)
class Literal:
    value: Value


@dataclass(frozen=True, slots=True)
class Name:
    path: str


@dataclass(frozen=True, slots=True)
class ListOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    operator: str  # == != < <= > >= in "not in"
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    operator: str  # and | or
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


Node: TypeAlias = Literal | Name | ListOf | Compare | BoolOp | Not

_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_COMPARATORS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A checked condition: its source text and the tree evaluated against a context."""

    source: str
    tree: Node

    def evaluate(self, context: Mapping[str, Value]) -> bool:
        return _truthy(_evaluate(self.tree, context))


def parse_condition(source: str) -> Condition:
    """Check `source` and return it ready to evaluate; `ConditionError` says what is wrong."""
    if not isinstance(source, str):
        raise ConditionError("must be a string")
    text = source.strip()
    # Positions are reported in `source` as given: what `strip` cut before the text.
    lead = source[: len(source) - len(source.lstrip())]
    try:
        return _parse(text)
    except ConditionError as exc:
        raise exc.shifted(lead.count("\n"), len(lead) - lead.rfind("\n") - 1) from None


def _parse(text: str) -> Condition:
    if not text:
        raise ConditionError("is empty")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"is longer than {MAX_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            # `1 is 1` or "\d" warn on stderr; here they are refused or harmless.
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"is not a valid expression: {exc.msg}", *_where(text, exc)) from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise ConditionError(f"is not a valid expression: {type(exc).__name__}") from None
    builder = _Builder()
    try:
        node = builder.build(tree.body, 0)
    except RecursionError:
        raise ConditionError(f"nests deeper than {MAX_DEPTH} levels") from None
    except ConditionError as exc:
        if exc.line is None or exc.column is None:
            raise
        # The tree counts columns in UTF-8 bytes; a reader counts characters.
        lines = text.split("\n")
        if exc.line > len(lines):
            raise
        before = lines[exc.line - 1].encode()[: exc.column - 1]
        column = len(before.decode(errors="ignore")) + 1
        raise ConditionError(exc.reason, exc.line, column) from None
    return Condition(text, node)


class _Builder:
    """Rebuilds an allow-listed Python expression tree into condition nodes."""

    def __init__(self) -> None:
        self.count = 0

    def build(self, node: ast.expr, depth: int) -> Node:
        self.count += 1
        if depth > MAX_DEPTH:
            raise ConditionError(f"nests deeper than {MAX_DEPTH} levels")
        if self.count > MAX_NODES:
            raise ConditionError(f"has more than {MAX_NODES} parts")
        if isinstance(node, ast.BoolOp):
            operator = "and" if isinstance(node.op, ast.And) else "or"
            return BoolOp(operator, tuple(self.build(v, depth + 1) for v in node.values))
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, depth)
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.Constant):
            return Literal(_literal(node))
        if isinstance(node, ast.List | ast.Tuple):
            return ListOf(tuple(self.build(item, depth + 1) for item in node.elts))
        if isinstance(node, ast.Name | ast.Attribute):
            return Name(_name(node))
        raise ConditionError(f"{_describe(node)} is not allowed", *_at(node))

    def _unary(self, node: ast.UnaryOp, depth: int) -> Node:
        if isinstance(node.op, ast.Not):
            return Not(self.build(node.operand, depth + 1))
        if isinstance(node.op, ast.USub | ast.UAdd) and isinstance(node.operand, ast.Constant):
            value = _literal(node.operand)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return Literal(-value if isinstance(node.op, ast.USub) else value)
        raise ConditionError(f"the operator {_describe(node.op)} is not allowed", *_at(node))

    def _compare(self, node: ast.Compare, depth: int) -> Node:
        operands = [self.build(node.left, depth + 1)]
        operands += [self.build(c, depth + 1) for c in node.comparators]
        pairs: list[Node] = []
        for index, op in enumerate(node.ops):
            symbol = _COMPARATORS.get(type(op))
            if symbol is None:
                raise ConditionError(f"the operator {_describe(op)} is not allowed", *_at(node))
            pairs.append(Compare(symbol, operands[index], operands[index + 1]))
        return pairs[0] if len(pairs) == 1 else BoolOp("and", tuple(pairs))


def _literal(node: ast.Constant) -> Scalar:
    value = node.value
    if isinstance(value, bool | str | int | float):
        return value
    raise ConditionError(f"the literal {value!r} is not allowed", *_at(node))


def _name(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ConditionError(f"{_describe(node)} is not allowed", *_at(node))
    parts.append(node.id)
    path = ".".join(reversed(parts))
    if path not in NAMES:
        known = ", ".join(sorted(NAMES))
        raise ConditionError(f"unknown name '{path}' (known: {known})", *_at(node))
    return path


def _describe(node: ast.AST) -> str:
    kinds = {
        "Call": "a function call",
        "Subscript": "indexing",
        "Lambda": "a lambda",
        "BinOp": "arithmetic",
        "IfExp": "a conditional expression",
        "JoinedStr": "an f-string",
        "NamedExpr": "an assignment",
        "Dict": "a dictionary",
        "Set": "a set",
        "USub": "'-'",
        "UAdd": "'+'",
        "Invert": "'~'",
        "Is": "'is'",
        "IsNot": "'is not'",
    }
    name = type(node).__name__
    return kinds.get(name, f"'{name}'")


def _where(text: str, error: SyntaxError) -> tuple[int | None, int | None]:
    """Where the parser stopped (its offset counts characters); offset 0: at the end
    (the text stops before the expression does)."""
    lines = text.split("\n")
    line = error.lineno
    if not isinstance(line, int) or not 1 <= line <= len(lines):
        return None, None
    return line, error.offset or len(lines[line - 1]) + 1


def _at(node: ast.AST) -> tuple[int | None, int | None]:
    """The node's line and column, from 1 (the column in UTF-8 bytes: `_parse` turns it
    into characters)."""
    line, column = getattr(node, "lineno", None), getattr(node, "col_offset", None)
    if not isinstance(line, int) or not isinstance(column, int):
        return None, None
    return line, column + 1


def _evaluate(node: Node, context: Mapping[str, Value]) -> Value:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return context.get(node.path, "")
    if isinstance(node, ListOf):
        return tuple(_scalar(_evaluate(item, context)) for item in node.items)
    if isinstance(node, Not):
        return not _truthy(_evaluate(node.operand, context))
    if isinstance(node, BoolOp):
        if node.operator == "and":
            return all(_truthy(_evaluate(o, context)) for o in node.operands)
        return any(_truthy(_evaluate(o, context)) for o in node.operands)
    return _compare(node.operator, _evaluate(node.left, context), _evaluate(node.right, context))


def _scalar(value: Value) -> Scalar:
    # A list inside a list compares equal to nothing.
    return value if not isinstance(value, tuple) else "\x00list"


def _compare(symbol: str, left: Value, right: Value) -> bool:
    if symbol == "==":
        return _same_kind(left, right) and left == right
    if symbol == "!=":
        return not (_same_kind(left, right) and left == right)
    if symbol in ("in", "not in"):
        found = _contains(right, left)
        return found if symbol == "in" else not found
    if (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    ):
        return bool(_ORDERINGS[symbol](left, right))
    return False


def _contains(container: Value, item: Value) -> bool:
    if isinstance(container, tuple):
        return any(_same_kind(item, element) and item == element for element in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    return False


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(left: Value, right: Value) -> bool:
    if _is_number(left) and _is_number(right):
        return True
    return type(left) is type(right)


def _truthy(value: Value) -> bool:
    return bool(value)
