"""Band math: a safe parser for expressions over band names (pure, no ``eval``).

An expression such as ``"(B08 - B04) / (B08 + B04)"`` is parsed with :mod:`ast` and only
numbers, band names, ``+ - * / **``, unary minus and a few numpy functions are accepted; it is
evaluated per pixel on reflectance arrays.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Expression", "parse_expression"]

_BINOPS: dict[type[ast.operator], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
    ast.Pow: np.power,
}
_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "sqrt": np.sqrt, "abs": np.abs, "log": np.log, "exp": np.exp,
    "minimum": np.minimum, "maximum": np.maximum,
}


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
        return -v if isinstance(node.op, ast.USub) else v
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise TypeError(f"unchecked node {type(node).__name__}")  # _check rejects it first
    return _FUNCS[node.func.id](*(_eval(a, env) for a in node.args))


def _check(node: ast.AST, text: str, names: list[str]) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(
            f"expression {text!r}: {what} is not allowed; use band names, numbers, "
            f"+ - * / **, and {', '.join(sorted(_FUNCS))}"
        )

    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise bad(f"constant {node.value!r}")
    elif isinstance(node, ast.Name):
        names.append(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise bad(f"operator {type(node.op).__name__}")
        _check(node.left, text, names)
        _check(node.right, text, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise bad(f"operator {type(node.op).__name__}")
        _check(node.operand, text, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
            raise bad("this call")
        for a in node.args:
            _check(a, text, names)
    else:
        raise bad(type(node).__name__)


def parse_expression(text: str, available: Mapping[str, object] | None = None) -> Expression:
    """Parse ``text`` into an :class:`Expression`.

    Raises
    ------
    ValueError
        Syntax errors, or anything other than numbers, band names, arithmetic and the allowed
        functions (``sqrt``, ``abs``, ``log``, ``exp``, ``minimum``, ``maximum``).

    Examples
    --------
    >>> e = parse_expression("(B08 - B04) / (B08 + B04)")
    >>> e.bands
    ('B04', 'B08')
    >>> float(e({"B04": np.array(0.1), "B08": np.array(0.3)}))
    0.5
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {text!r} is not valid: {exc.msg}") from None
    names: list[str] = []
    _check(tree.body, text, names)
    bands = tuple(sorted(set(names) - set(_FUNCS)))
    if not bands:
        raise ValueError(f"expression {text!r} names no band")
    return Expression(text.strip(), bands, tree)
