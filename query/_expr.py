"""Band math: a safe parser for expressions over band names (pure, no ``eval``).

An expression such as ``"(B08 - B04) / (B08 + B04)"`` is parsed with :mod:`ast` and only
numbers, band names, ``+ - * / **``, unary minus, comparisons (``< <= > >= == !=``, chained
as in Python), ``and``/``or``/``not`` and a few numpy functions (each called with exactly its
number of arguments, among them ``where(cond, a, b)``) are accepted; it is evaluated per pixel
on reflectance arrays. A comparison is 1.0 where true and 0.0 where false (so the mean of
``B08 > 0.2`` over a parcel is the fraction of its pixels above 0.2); ``where`` picks ``a``
where ``cond`` is non-zero, else ``b``.
Expressions are bounded in length, nesting depth and size, so that no input can exhaust the
parser, the stack or memory.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MAX_NODES", "Expression", "parse_expression"]

#: Longest expression text accepted, in characters.
MAX_LENGTH = 1000
#: Deepest nesting of operators and calls accepted.
MAX_DEPTH = 32
#: Most syntax nodes (numbers, names, operators, calls) accepted.
MAX_NODES = 256

_BINOPS: dict[type[ast.operator], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
    ast.Pow: np.power,
}
#: Allowed functions and the exact number of arguments each takes (numpy ufuncs would take
#: an extra positional argument as their output buffer: never pass one through).
_FUNCS: dict[str, tuple[Callable[..., np.ndarray], int]] = {
    "sqrt": (np.sqrt, 1), "abs": (np.abs, 1), "log": (np.log, 1), "exp": (np.exp, 1),
    "minimum": (np.minimum, 2), "maximum": (np.maximum, 2),
    "where": (lambda c, a, b: _where(c, a, b), 3),
}
_CMPOPS: dict[type[ast.cmpop], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}


def _where(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` where ``cond`` is non-zero, else ``b`` (NaN conditions pick ``a``: NaN != 0)."""
    return np.asarray(np.where(np.asarray(cond) != 0, a, b))


@dataclass(frozen=True)
class Expression:
    """A parsed band-math expression: its text, the bands it reads and its evaluator."""

    text: str
    bands: tuple[str, ...]
    tree: ast.Expression

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(_eval(self.tree.body, arrays), dtype=np.float64)


def _eval(node: ast.AST, env: Mapping[str, np.ndarray]) -> np.ndarray:
    if isinstance(node, ast.Constant):
        return np.asarray(node.value, dtype=np.float64)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return (v == 0).astype(np.float64)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Compare):  # a < b < c: (a < b) and (b < c), as in Python
        left = _eval(node.left, env)
        result: np.ndarray | None = None
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            step = _CMPOPS[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return np.asarray(result, dtype=np.float64)
    if isinstance(node, ast.BoolOp):
        truth = [_eval(v, env) != 0 for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = truth[0]
        for t in truth[1:]:
            out = combine(out, t)
        return np.asarray(out, dtype=np.float64)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise TypeError(f"unchecked node {type(node).__name__}")  # _check rejects it first
    func, nargs = _FUNCS[node.func.id]
    args = [_eval(a, env) for a in node.args]
    if len(args) != nargs:  # _check rejects it first
        raise TypeError(f"{node.func.id} takes {nargs} argument(s)")
    return func(*args)


def _shown(text: str) -> str:
    """The expression as quoted in errors: at most 60 characters."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _shape(tree: ast.AST, text: str) -> None:
    """Reject trees deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES`
    (iteratively: a deep tree must not exhaust the stack here either)."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop,
                             ast.boolop)):
            continue
        nodes += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"expression {_shown(text)} nests deeper than {MAX_DEPTH} levels; "
                             "simplify it")
        if nodes > MAX_NODES:
            raise ValueError(f"expression {_shown(text)} has more than {MAX_NODES} terms; "
                             "simplify it")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check(node: ast.AST, text: str, names: list[str]) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(
            f"expression {_shown(text)}: {what} is not allowed; use band names, numbers, "
            "+ - * / **, < <= > >= == !=, and or not, and "
            f"{', '.join(f'{f}({_arity(n)})' for f, (_, n) in _FUNCS.items())}"
        )

    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise bad(f"constant {str(node.value)[:20]!r}")
        try:
            value = float(node.value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise bad("a number beyond the float range")
    elif isinstance(node, ast.Name):
        if node.id in _FUNCS:
            raise bad(f"{node.id} without a call")
        names.append(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise bad(f"operator {type(node.op).__name__}")
        _check(node.left, text, names)
        _check(node.right, text, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            raise bad(f"operator {type(node.op).__name__}")
        _check(node.operand, text, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _CMPOPS:
                raise bad(f"comparison {type(op).__name__}")
        for operand in (node.left, *node.comparators):
            _check(operand, text, names)
    elif isinstance(node, ast.BoolOp):
        for operand in node.values:
            _check(operand, text, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
            raise bad("this call")
        nargs = _FUNCS[node.func.id][1]
        if len(node.args) != nargs:
            raise bad(f"{node.func.id} with {len(node.args)} argument(s) (it takes {nargs})")
        for a in node.args:
            _check(a, text, names)
    else:
        raise bad(type(node).__name__)


def _arity(n: int) -> str:
    return {1: "x", 2: "x, y"}.get(n, "cond, a, b")


def parse_expression(text: str, available: Mapping[str, object] | None = None) -> Expression:
    """Parse ``text`` into an :class:`Expression`.

    Raises
    ------
    ValueError
        Syntax errors; anything other than numbers (finite as float64), band names,
        arithmetic, comparisons, ``and``/``or``/``not`` and the allowed functions called
        with exactly their arguments (``sqrt(x)``, ``abs(x)``, ``log(x)``, ``exp(x)``,
        ``minimum(x, y)``, ``maximum(x, y)``, ``where(cond, a, b)``); expressions longer
        than :data:`MAX_LENGTH` characters, nested deeper than :data:`MAX_DEPTH` or with
        more than :data:`MAX_NODES` terms.

    Examples
    --------
    >>> e = parse_expression("(B08 - B04) / (B08 + B04)")
    >>> e.bands
    ('B04', 'B08')
    >>> float(e({"B04": np.array(0.25), "B08": np.array(0.75)}))
    0.5
    >>> w = parse_expression("where(B08 > 0.2, B08, 0)")
    >>> w({"B08": np.array([0.1, 0.3])}).tolist()
    [0.0, 0.3]
    """
    if not isinstance(text, str):
        raise TypeError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"expression {_shown(text)} is {len(text):,} characters long; the "
                         f"limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {_shown(text)} is not valid: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):  # pathological nesting or numbers
        raise ValueError(f"expression {_shown(text)} is too deeply nested or too large; "
                         "simplify it") from None
    _shape(tree.body, text)
    names: list[str] = []
    _check(tree.body, text, names)
    bands = tuple(sorted(set(names)))
    if not bands:
        raise ValueError(f"expression {_shown(text)} names no band")
    return Expression(text.strip(), bands, tree)
