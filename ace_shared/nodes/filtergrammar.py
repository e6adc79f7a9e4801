"""The grammar behind :mod:`ace_shared.nodes.filter`: parsing a filter with PostgreSQL's own
parser, judging it, and re-emitting it.

The filter is SQL by design (a WHERE condition), so it cannot be a parameter.
It is parsed with ``pglast`` (PostgreSQL's parser), which decodes every quoting
form (``U&"..."``, ``"..."``, ``E'...'``, dollar quotes), so names are judged by
what they mean, never by how they are spelt. What may appear is an allow-list:
the table's columns (by bare name), constants, operators, casts to built-in
types, ``CASE``/``COALESCE``/``GREATEST``/``LEAST``, arrays and rows, and a
short list of built-in functions. No subquery, no user function, nothing that
changes the session (``set_config``), sleeps, locks or reads files.

The filter that reaches SQL is re-emitted from the parse tree, not the user's
text: every function is written ``pg_catalog.f(...)`` and every operator
``OPERATOR(pg_catalog.op)``, so a same-named function or operator in another
schema can never be picked instead. Constructs whose operator PostgreSQL looks
up implicitly (``IN``, ``BETWEEN``, ``LIKE``) are rewritten into explicit ones.
Which columns may be named, and that their types are built in, is checked
against each node by :func:`ace_shared.nodes.filter.check_filter_columns`.

PostgreSQL computes a call whose arguments are all constants while it plans,
where no statement timeout reaches and the result stays in memory until the
plan is made. The filter's text is small, but a few functions make a result
many times their input (``lpad``, ``rpad``, ``replace``, ``regexp_replace``):
nested, a few hundred bytes of filter would ask a node for gigabytes. So those
may only be called on a column's value, computed per row under the statement
timeout, never on constants alone (whose result the caller can write out).
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType
from pglast.parser import ParseError
from pglast.stream import RawStream

from ace_shared.errors import FilterError
from ace_shared.nodes.filter import MAX_EMITTED_BYTES, MAX_FILTER_DEPTH, check_filter_limits

CATALOG = "pg_catalog"
# A level of the filter is about one tree node; a few more for the comparison and constants.
MAX_TREE_DEPTH = MAX_FILTER_DEPTH + 8

OPERATORS = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "|/", "||/", "@",
    "~~", "~~*", "!~~", "!~~*", "~", "~*", "!~", "!~*", "&", "|", "#", "<<", ">>",
    "@>", "<@", "&&", "->", "->>", "#>", "#>>", "?", "?|", "?&", "@?", "@@",
})

FUNCTIONS = frozenset({
    # text
    "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
    "bit_length", "substr", "substring", "left", "right", "btrim", "ltrim", "rtrim", "replace",
    "position", "strpos", "starts_with", "concat", "concat_ws", "lpad", "rpad", "reverse",
    "split_part", "md5", "like_escape", "similar_to_escape", "regexp_replace", "translate",
    "ascii", "chr", "to_hex", "normalize", "overlay",
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "sign", "sqrt", "power",
    "div", "width_bucket", "num_nulls", "num_nonnulls", "hashtext", "hashint4", "hashint8",
    # time
    "now", "date_trunc", "date_part", "extract", "age", "make_date", "make_time",
    "make_timestamp", "make_timestamptz", "make_interval", "to_char", "to_date",
    "to_timestamp", "to_number", "timezone", "isfinite", "justify_days", "justify_hours",
    "date_bin",
    # arrays, json, ranges
    "array_length", "cardinality", "array_position", "array_to_string", "array_lower",
    "array_upper", "jsonb_typeof", "json_typeof", "jsonb_array_length", "json_array_length",
    "jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path",
    "json_extract_path_text", "lower_inf", "upper_inf", "isempty",
})

TYPES = frozenset({
    "bool", "boolean", "text", "varchar", "bpchar", "char", "name", "int2", "int4", "int8",
    "smallint", "integer", "bigint", "int", "numeric", "decimal", "float4", "float8", "real",
    "date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb",
    "bytea", "inet", "cidr", "macaddr", "money", "bit", "varbit", "int4range", "int8range",
    "numrange", "daterange", "tsrange", "tstzrange",
})

# results many times the size of their arguments: never on constants alone (see above)
GROWING = frozenset({"lpad", "rpad", "replace", "regexp_replace"})

_PLAIN_NODES = (ast.NullTest, ast.BooleanTest, ast.CoalesceExpr, ast.MinMaxExpr,
                ast.A_ArrayExpr, ast.RowExpr, ast.SQLValueFunction, ast.CaseWhen,
                ast.A_Indices, ast.CollateClause)
HELP = ("a filter is one condition on the table's own columns, with constants, operators, "
        "casts to built-in types and common built-in functions")


def _mentions_column(node: Any) -> bool:
    """Whether a column's value is read anywhere in ``node`` (a tree or a list of them)."""
    if isinstance(node, ast.ColumnRef):
        return True
    if isinstance(node, (tuple, list)):
        return any(_mentions_column(n) for n in node)
    if isinstance(node, ast.Node):
        return any(_mentions_column(getattr(node, name)) for name in node)
    return False


def _refuse(what: str) -> FilterError:
    return FilterError(f"The table filter may not use {what}; {HELP}.")


def _parse(text: str) -> ast.Node:
    """The one WHERE expression of ``SELECT WHERE <text>``; anything else is refused.

    The text is first held to the size and nesting limits (the parser recurses
    per level), and the tree it gives to the depth limit, measured without
    recursion: chains such as ``1 + 1 + ...`` or ``NOT NOT ...`` nest without
    parentheses, and every check after this one recurses.
    """
    check_filter_limits(text, emitted=True)  # the user's limits are filter.py's
    try:
        statements = parse_sql(f"SELECT WHERE {text}")
    except ParseError as exc:
        raise FilterError(f"The table filter is not a valid SQL condition ({exc.args[0]}); "
                          "write one condition as it would follow WHERE, such as "
                          "status = 'active' AND id > 100.") from exc
    if len(statements) != 1:
        raise FilterError("The table filter must be a single condition, without ';'.")
    stmt = statements[0].stmt
    extra = [name for name in ("targetList", "fromClause", "groupClause", "havingClause",
                               "windowClause", "sortClause", "limitCount", "limitOffset",
                               "lockingClause", "withClause", "intoClause", "distinctClause",
                               "valuesLists", "larg", "rarg")
             if getattr(stmt, name, None)]
    if isinstance(stmt, ast.SelectStmt) and stmt.whereClause is not None \
            and _tree_depth(stmt.whereClause) > MAX_TREE_DEPTH:
        raise FilterError(f"The table filter nests its expressions more than {MAX_FILTER_DEPTH} "
                          "levels deep (long chains of operators or NOT count as levels); "
                          "write it with fewer nested levels.")
    if not isinstance(stmt, ast.SelectStmt) or extra or stmt.whereClause is None:
        raise FilterError("The table filter must be a single WHERE condition, nothing more.")
    return stmt.whereClause


def _op(name: str) -> tuple[ast.String, ast.String]:
    return (ast.String(sval=CATALOG), ast.String(sval=name))


def _binary(name: str, left: Any, right: Any) -> ast.A_Expr:
    return ast.A_Expr(kind=A_Expr_Kind.AEXPR_OP, name=_op(name), lexpr=left, rexpr=right)


def _bool(kind: BoolExprType, args: list[Any]) -> Any:
    return args[0] if len(args) == 1 else ast.BoolExpr(boolop=kind, args=tuple(args))


def _names(nodes: Any) -> list[str]:
    """The words of a qualified name (the parser always fills them; pglast types them optional)."""
    return [n.sval or "" for n in nodes or ()]


def _operator_name(names: Any) -> str:
    parts = _names(names)
    if len(parts) == 2 and parts[0] == CATALOG:
        parts = parts[1:]
    if len(parts) != 1 or parts[0] not in OPERATORS:
        raise _refuse(f"the operator {'.'.join(parts)}")
    return parts[0]


class _Checker:
    """Walks the parse tree, refusing what is not allowed and rewriting what must be explicit."""

    def __init__(self) -> None:
        self.columns: set[str] = set()

    def expr(self, node: Any) -> Any:
        if node is None:
            return None
        if isinstance(node, (tuple, list)):
            return tuple(self.expr(n) for n in node)
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is not None:
            return handler(node)
        if isinstance(node, _PLAIN_NODES):
            return self._children(node)
        raise _refuse(_describe(node))

    def _children(self, node: Any) -> Any:
        for name in node:
            value = getattr(node, name)
            if isinstance(value, (ast.Node, tuple, list)) and name not in ("collname",):
                setattr(node, name, self.expr(value))
        return node

    def _A_Const(self, node: ast.A_Const) -> Any:
        return node

    def _ColumnRef(self, node: ast.ColumnRef) -> Any:
        fields = node.fields or ()
        if len(fields) != 1 or not isinstance(fields[0], ast.String):
            raise _refuse("a qualified name or * (name the table's columns on their own)")
        self.columns.add(fields[0].sval or "")
        return node

    def _BoolExpr(self, node: ast.BoolExpr) -> Any:
        args: list[Any] = []
        for arg in self.expr(node.args):
            # a rewritten IN is itself an OR: flatten, as the parser does with a OR b OR c
            same = (isinstance(arg, ast.BoolExpr) and arg.boolop == node.boolop
                    and node.boolop != BoolExprType.NOT_EXPR)
            args.extend(arg.args if same else [arg])
        node.args = tuple(args)
        return node

    def _FuncCall(self, node: ast.FuncCall) -> Any:
        parts = _names(node.funcname)
        if len(parts) == 2 and parts[0] == CATALOG:
            parts = parts[1:]
        if len(parts) != 1 or parts[0] not in FUNCTIONS:
            raise _refuse(f"the function {'.'.join(parts)}()")
        if (node.agg_order or node.agg_filter or node.over or node.agg_star
                or node.agg_distinct or node.agg_within_group or node.func_variadic):
            raise _refuse("aggregate or window syntax")
        if parts[0] in GROWING and not _mentions_column(node.args):
            raise FilterError(f"The table filter may not call {parts[0]}() on constants alone: "
                              "PostgreSQL would compute it while planning, beyond any timeout; "
                              "write the constant it stands for instead.")
        node.funcname = _op(parts[0])
        node.args = self.expr(node.args)
        return node

    def _TypeCast(self, node: ast.TypeCast) -> Any:
        node.arg = self.expr(node.arg)
        if node.typeName is not None:
            node.typeName = _type_name(node.typeName)
        return node

    def _CaseExpr(self, node: ast.CaseExpr) -> Any:
        if node.arg is not None:
            raise _refuse("CASE x WHEN (write CASE WHEN x = ... instead)")
        node.args = self.expr(node.args)
        node.defresult = self.expr(node.defresult)
        return node

    def _A_Indirection(self, node: ast.A_Indirection) -> Any:
        if not all(isinstance(i, ast.A_Indices) for i in node.indirection or ()):
            raise _refuse("field selection")
        node.arg = self.expr(node.arg)
        node.indirection = self.expr(node.indirection)
        return node

    def _A_Expr(self, node: ast.A_Expr) -> Any:
        kind = node.kind
        left, right = self.expr(node.lexpr), self.expr(node.rexpr)
        if kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL,
                    A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE,
                    A_Expr_Kind.AEXPR_SIMILAR):
            new_kind = kind if kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL) \
                else A_Expr_Kind.AEXPR_OP
            return ast.A_Expr(kind=new_kind, name=_op(_operator_name(node.name)),
                              lexpr=left, rexpr=right)
        if kind == A_Expr_Kind.AEXPR_IN:
            op = _operator_name(node.name)  # "=" for IN, "<>" for NOT IN
            terms = [_binary(op, left, item) for item in right]
            return _bool(BoolExprType.OR_EXPR if op == "=" else BoolExprType.AND_EXPR, terms)
        if kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN):
            low, high = right
            if kind == A_Expr_Kind.AEXPR_BETWEEN:
                return _bool(BoolExprType.AND_EXPR,
                             [_binary(">=", left, low), _binary("<=", left, high)])
            return _bool(BoolExprType.OR_EXPR,
                         [_binary("<", left, low), _binary(">", left, high)])
        raise _refuse(_describe(node))


def _type_name(type_name: ast.TypeName) -> ast.TypeName:
    parts = _names(type_name.names)
    if len(parts) == 2 and parts[0] == CATALOG:
        parts = parts[1:]
    if len(parts) != 1 or parts[0] not in TYPES or type_name.setof or type_name.pct_type:
        raise _refuse(f"a cast to {'.'.join(parts)} (only built-in types)")
    if any(not isinstance(m, ast.A_Const) for m in type_name.typmods or ()):
        raise _refuse("a computed type modifier")
    type_name.names = _op(parts[0])
    return type_name


def _describe(node: Any) -> str:
    names = {"SubLink": "a subquery", "ParamRef": "a parameter", "A_Star": "*",
             "NamedArgExpr": "named arguments", "A_Expr": "IS DISTINCT FROM, NULLIF or "
             "SYMMETRIC (write them with = and IS NULL)"}
    return names.get(type(node).__name__, f"{type(node).__name__} expressions")


_POSITIONS = frozenset({"location", "rexpr_list_start", "rexpr_list_end", "list_start",
                        "list_end"})


def _shape(value: Any) -> Any:
    """A parse tree as plain data, without source positions, for comparing two trees."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in _POSITIONS}
    if isinstance(value, (list, tuple)):
        return [_shape(v) for v in value]
    return value


def parse_filter(text: str) -> tuple[str, set[str]]:
    """The re-emitted filter and the column names it reads; raise :class:`FilterError`.

    The emitted text is parsed again and must give the very same tree, so a
    precedence slip in re-emitting can never change what the filter means.
    """
    checker = _Checker()
    tree = checker.expr(_parse(text))
    emitted = RawStream()(tree)
    if len(emitted.encode()) > MAX_EMITTED_BYTES:
        raise FilterError("The table filter is too long once ACE writes it out with every "
                          "operator and function qualified; shorten it, for example with a "
                          "range instead of a long list of values.")
    again = _Checker().expr(_parse(emitted))
    if _shape(again(skip_none=True)) != _shape(tree(skip_none=True)):
        raise FilterError("The table filter could not be rewritten without changing its "
                          "meaning; add parentheses around each comparison and try again.")
    return emitted, checker.columns


_LIKE_KINDS = {"~~": A_Expr_Kind.AEXPR_LIKE, "!~~": A_Expr_Kind.AEXPR_LIKE,
               "~~*": A_Expr_Kind.AEXPR_ILIKE, "!~~*": A_Expr_Kind.AEXPR_ILIKE}
_NAME_FIELDS = {ast.A_Expr: "name", ast.FuncCall: "funcname", ast.TypeName: "names"}


def display_filter(text: str) -> str:
    """A filter as a person reads it: the same tree without the ``pg_catalog`` pins."""
    try:
        tree = _parse(text)
    except FilterError:
        return text
    for node in _walk(tree):
        field = _NAME_FIELDS.get(type(node))
        names = getattr(node, field) if field else None
        if field and names and len(names) == 2 and names[0].sval == CATALOG:
            setattr(node, field, names[1:])
            if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP:
                node.kind = _LIKE_KINDS.get(names[1].sval, node.kind)
    return RawStream()(tree)


def _tree_depth(root: ast.Node) -> int:
    """How many parse-tree nodes deep ``root`` goes, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend((item, depth) for item in node)
        elif isinstance(node, ast.Node):
            deepest = max(deepest, depth)
            if depth > MAX_TREE_DEPTH:
                return depth
            stack.extend((getattr(node, name), depth + 1) for name in node)
    return deepest


def _walk(node: Any) -> Any:
    """Every node of a parse tree, depth first."""
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
