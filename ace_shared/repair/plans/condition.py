"""Conditions of a repair plan: a small grammar, parsed here and evaluated in Python.

A condition is read by a recursive-descent parser and evaluated over one key's
versions, as they are in the diff file; it is never sent to a database, so no
text of a plan can become SQL. The grammar (keywords in any case)::

    expr     := or
    or       := and ("OR" and)*
    and      := unary ("AND" unary)*
    unary    := "NOT" unary | "(" expr ")" | test
    test     := ref "IS" ["NOT"] "NULL"
              | "nodes." NODE "IS" ("PRESENT" | "MISSING")
              | operand ["NOT"] "IN" "(" literal ("," literal)* ")"
              | operand OP operand                 OP: = <> != < <= > >=
    operand  := ref | literal
    ref      := "nodes." NODE "." COLUMN | "commit_ts(" NODE ")" | "origin(" NODE ")"
    literal  := 'text' | number | TRUE | FALSE | NULL

NODE and COLUMN are plain names or "double-quoted" ones. Logic is SQL's: a
comparison with NULL (a NULL value, or a node that lacks the row) is unknown,
``NOT unknown`` is unknown, and a rule matches only when its condition is true.
Values compare as their columns' types (:mod:`~ace_shared.repair.plans.values`);
a literal is read as the type of the column it is compared with when the plan
is checked against the diff file (:meth:`Condition.bind`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ace_shared.repair.plans.values import (
    TEXT,
    TIMESTAMPTZ,
    comparable,
    parse_literal,
    parse_value,
)
from ace_shared.words import and_list

COMMIT_TS = "commit_ts"
ORIGIN = "origin"
_OPS = ("<=", ">=", "<>", "!=", "=", "<", ">")
# Bounds that keep a condition a rule, not a program: the parser and the evaluator recurse
# once per NOT or parenthesis, and a plan may come from a remote caller.
MAX_DEPTH = 32
MAX_CHARS = 16384


class ConditionError(ValueError):
    """What is wrong with a condition, in words that fit after "the condition ...". """


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[().,])
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
""", re.X)


@dataclass(frozen=True)
class Token:
    kind: str  # string, quoted, number, op, punct, word, end
    text: str
    at: int

    def word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise ConditionError(f"has a string that is never closed at character {pos + 1}")
            raise ConditionError(f"has an unexpected {text[pos]!r} at character {pos + 1}")
        if m.lastgroup != "space":
            out.append(Token(str(m.lastgroup), m.group(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


# ----- the tree -----------------------------------------------------------------------------

@dataclass
class Ref:
    """A node's value: a column of its row, or its commit time or origin."""

    node: str
    column: str
    meta: bool = False  # commit_ts(n) / origin(n)
    kind: str = TEXT

    def show(self) -> str:
        return f"{self.column}({self.node})" if self.meta else f"nodes.{self.node}.{self.column}"


@dataclass
class Lit:
    raw: Any  # as written: str, Decimal, bool or None
    value: Any = None
    bound: bool = False


@dataclass
class Compare:
    op: str
    left: Ref | Lit
    right: Ref | Lit


@dataclass
class IsNull:
    ref: Ref
    negate: bool


@dataclass
class Present:
    node: str
    negate: bool  # IS MISSING


@dataclass
class In:
    operand: Ref | Lit
    items: list[Lit]
    negate: bool


@dataclass
class Bool:
    op: str  # AND, OR, NOT
    parts: list[Expr] = field(default_factory=list)


Expr = Compare | IsNull | Present | In | Bool


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_CHARS:
            raise ConditionError(f"is {len(text):,} characters long, over {MAX_CHARS:,}; "
                                 "split it into several rules")
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, wanted: str) -> ConditionError:
        tok = self.tok
        got = "the end" if tok.kind == "end" else repr(tok.text)
        return ConditionError(f"expects {wanted} at character {tok.at + 1}, not {got}")

    def expect(self, kind: str, text: str, wanted: str) -> None:
        if self.tok.kind != kind or self.tok.text.upper() != text:
            raise self.fail(wanted)
        self.i += 1

    def parse(self) -> Expr:
        expr = self.or_()
        if self.tok.kind != "end":
            raise self.fail("AND, OR or the end")
        return expr

    def or_(self) -> Expr:
        parts = [self.and_()]
        while self.tok.word("OR"):
            self.i += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Bool("OR", parts)

    def and_(self) -> Expr:
        parts = [self.unary()]
        while self.tok.word("AND"):
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Bool("AND", parts)

    def unary(self) -> Expr:
        if self.tok.word("NOT") or (self.tok.kind == "punct" and self.tok.text == "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ConditionError(f"nests NOT and parentheses more than {MAX_DEPTH} deep "
                                     f"at character {self.tok.at + 1}; write it flatter")
            try:
                if self.next().text.upper() == "NOT":
                    return Bool("NOT", [self.unary()])
                inner = self.or_()
                self.expect("punct", ")", "')'")
                return inner
            finally:
                self.depth -= 1
        return self.test()

    def name(self, what: str) -> str:
        tok = self.tok
        if tok.kind == "word":
            self.i += 1
            return tok.text
        if tok.kind == "quoted":
            self.i += 1
            return tok.text[1:-1].replace('""', '"')
        raise self.fail(what)

    def ref_or_node(self) -> Ref | str:
        """``nodes.n1.col``, ``commit_ts(n1)``, ``origin(n1)``; a bare ``nodes.n1`` gives ``n1``."""
        tok = self.tok
        if tok.word("COMMIT_TS", "ORIGIN") and self.tokens[self.i + 1].text == "(":
            self.i += 2
            node = self.name("a node name")
            self.expect("punct", ")", "')'")
            meta = tok.text.lower()
            return Ref(node, meta, meta=True, kind=TIMESTAMPTZ if meta == COMMIT_TS else TEXT)
        if not tok.word("NODES"):
            raise self.fail("nodes.<node>.<column>, commit_ts(<node>), origin(<node>) or a value")
        self.i += 1
        self.expect("punct", ".", "'.' after nodes")
        node = self.name("a node name after nodes.")
        if self.tok.kind == "punct" and self.tok.text == ".":
            self.i += 1
            return Ref(node, self.name("a column name"))
        return node

    def literal(self) -> Lit | None:
        tok = self.tok
        if tok.kind == "string":
            self.i += 1
            return Lit(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            self.i += 1
            return Lit(Decimal(tok.text))
        if tok.word("TRUE", "FALSE"):
            self.i += 1
            return Lit(tok.text.upper() == "TRUE")
        if tok.word("NULL"):
            self.i += 1
            return Lit(None)
        return None

    def operand(self) -> Ref | Lit | str:
        lit = self.literal()
        return lit if lit is not None else self.ref_or_node()

    def test(self) -> Expr:
        left = self.operand()
        if isinstance(left, str):  # nodes.n1 IS PRESENT / MISSING
            self.expect("word", "IS", "IS PRESENT or IS MISSING after nodes." + left)
            negate = self.tok.word("NOT")
            if negate:
                self.i += 1
            if self.tok.word("PRESENT", "MISSING"):
                missing = self.next().text.upper() == "MISSING"
                return Present(left, missing != negate)
            raise self.fail("PRESENT or MISSING")
        tok = self.tok
        if tok.word("IS"):
            self.i += 1
            negate = self.tok.word("NOT")
            if negate:
                self.i += 1
            self.expect("word", "NULL", "NULL")
            if not isinstance(left, Ref):
                raise ConditionError("tests a value that is not a node's column with IS NULL")
            return IsNull(left, negate)
        negate = tok.word("NOT")
        if negate:
            self.i += 1
        if self.tok.word("IN"):
            self.i += 1
            self.expect("punct", "(", "'(' after IN")
            items = []
            while True:
                lit = self.literal()
                if lit is None:
                    raise self.fail("a value in the IN list")
                items.append(lit)
                if self.tok.text == ",":
                    self.i += 1
                    continue
                self.expect("punct", ")", "',' or ')'")
                return In(left, items, negate)
        if negate:
            raise self.fail("IN after NOT")
        if self.tok.kind != "op":
            raise self.fail("a comparison (=, <>, <, <=, >, >=), IS or IN")
        op = self.next().text
        right = self.operand()
        if isinstance(right, str):
            raise ConditionError(f"compares with nodes.{right}, which is a node, not a value; "
                                 "name a column")
        return Compare("<>" if op == "!=" else op, left, right)


# ----- evaluation ---------------------------------------------------------------------------

class Version:
    """One node's version of a key: its row (None when it lacks the key) and metadata."""

    __slots__ = ("row", "commit_ts", "origin")

    def __init__(self, row: dict[str, str | None] | None, commit_ts: str | None = None,
                 origin: str | None = None) -> None:
        self.row = row
        self.commit_ts = commit_ts
        self.origin = origin


def _walk(expr: Expr) -> list[Ref | Lit | Present]:
    if isinstance(expr, Bool):
        return [x for p in expr.parts for x in _walk(p)]
    if isinstance(expr, Compare):
        return [expr.left, expr.right]
    if isinstance(expr, IsNull):
        return [expr.ref]
    if isinstance(expr, In):
        return [expr.operand, *expr.items]
    return [expr]


class Condition:
    """A parsed condition; :meth:`bind` checks it against the diff, :meth:`test` evaluates."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.expr = _Parser(text).parse()
        self.uses_meta = any(isinstance(x, Ref) and x.meta for x in _walk(self.expr))

    def refs(self) -> list[Ref]:
        return [x for x in _walk(self.expr) if isinstance(x, Ref)]

    def bind(self, nodes: list[str], kinds: Mapping[str, str]) -> None:
        """Check the nodes and columns it names; read its literals as their columns' types."""
        for x in _walk(self.expr):
            node = x.node if isinstance(x, (Ref, Present)) else None
            if node is not None and node not in nodes:
                raise ConditionError(f"names node {node}, which the diff did not compare "
                                     f"(it compared {and_list(nodes)})")
            if isinstance(x, Ref) and not x.meta:
                if x.column not in kinds:
                    raise ConditionError(f"names column {x.column}, which the table does not "
                                         "have")
                x.kind = kinds[x.column]
        self._bind_literals(self.expr)

    def _bind_literals(self, expr: Expr) -> None:
        if isinstance(expr, Bool):
            for p in expr.parts:
                self._bind_literals(p)
        elif isinstance(expr, Compare):
            kind = next((s.kind for s in (expr.left, expr.right) if isinstance(s, Ref)), TEXT)
            for side in (expr.left, expr.right):
                if isinstance(side, Lit):
                    _bind(side, kind)
        elif isinstance(expr, In):
            kind = expr.operand.kind if isinstance(expr.operand, Ref) else TEXT
            for lit in [expr.operand, *expr.items]:
                if isinstance(lit, Lit):
                    _bind(lit, kind)

    def test(self, versions: Mapping[str, Version]) -> bool:
        return _eval(self.expr, versions) is True


def _bind(lit: Lit, kind: str) -> None:
    try:
        lit.value = parse_literal(lit.raw, kind)
    except ValueError:
        raise ConditionError(f"compares a {kind} value with {lit.raw!r}, which is not one") \
            from None
    lit.bound = True


def _value(x: Ref | Lit, versions: Mapping[str, Version]) -> Any:
    if isinstance(x, Lit):
        return x.value if x.bound else x.raw
    v = versions.get(x.node)
    if v is None or v.row is None:
        return None
    text = (v.commit_ts if x.column == COMMIT_TS else v.origin) if x.meta else v.row.get(x.column)
    if text is None:
        return None
    try:
        return parse_value(text, x.kind)
    except ValueError:
        return text


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = comparable(a, b)
    try:
        if op == "=":
            return bool(a == b)
        if op == "<>":
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:  # a value that did not read as its column's type: compare as text
        return _compare(op, str(a), str(b))


def _eval(expr: Expr, versions: Mapping[str, Version]) -> bool | None:
    if isinstance(expr, Bool):
        results = [_eval(p, versions) for p in expr.parts]
        if expr.op == "NOT":
            return None if results[0] is None else not results[0]
        if expr.op == "AND":
            return False if False in results else (None if None in results else True)
        return True if True in results else (None if None in results else False)
    if isinstance(expr, Compare):
        return _compare(expr.op, _value(expr.left, versions), _value(expr.right, versions))
    if isinstance(expr, IsNull):
        return (_value(expr.ref, versions) is None) != expr.negate
    if isinstance(expr, Present):
        v = versions.get(expr.node)
        present = v is not None and v.row is not None
        return present == (not expr.negate)
    value = _value(expr.operand, versions)
    if value is None:
        return None
    outcomes = [_compare("=", value, _value(item, versions)) for item in expr.items]
    found = True if True in outcomes else (None if None in outcomes else False)
    return None if found is None else found != expr.negate
