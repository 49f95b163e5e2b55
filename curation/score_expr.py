"""Score expressions over metadata columns, e.g. `clip_similarity_vitb32 + clip_similarity_vitl14`.

A small, safe arithmetic language (column names, numbers, + - * /, parentheses, unary minus)
parsed with Python's `ast` and evaluated with pyarrow compute, so users can select on COYO's
precomputed scores before downloading anything (VILA's order of work). Nothing is `eval`ed.
"""
from __future__ import annotations

import ast

import pyarrow as pa
import pyarrow.compute as pc

from vilactl.base.errors import VilactlError

_OPS = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}


def parse(expr: str) -> ast.expr:
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError as e:
        raise VilactlError(f"--score {expr!r}: not an arithmetic expression ({e.msg})") from e
    for node in ast.walk(tree):
        if not isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load,
                                 ast.USub, ast.UAdd, *_OPS)):
            raise VilactlError(f"--score {expr!r}: only column names, numbers, + - * / and "
                               f"parentheses are allowed (found {type(node).__name__})")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise VilactlError(f"--score {expr!r}: {node.value!r} is not a number")
    return tree


def columns(expr: str) -> list[str]:
    return sorted({n.id for n in ast.walk(parse(expr)) if isinstance(n, ast.Name)})


def check(expr: str, schema: pa.Schema, where: str) -> None:
    """Every column named exists and is numeric."""
    for name in columns(expr):
        if name not in schema.names:
            numeric = [f.name for f in schema if pa.types.is_integer(f.type)
                       or pa.types.is_floating(f.type)]
            raise VilactlError(f"--score {expr!r}: {where} has no column {name!r} "
                               f"(numeric columns: {', '.join(numeric)})")
        t = schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise VilactlError(f"--score {expr!r}: column {name!r} is {t}, not a number")


def evaluate(expr: str, table: pa.Table) -> pa.Array:
    """The expression over `table`, as float64 (nulls stay null)."""
    def ev(node):
        if isinstance(node, ast.Name):
            return pc.cast(table.column(node.id), pa.float64())
        if isinstance(node, ast.Constant):
            return pa.scalar(float(node.value))
        if isinstance(node, ast.UnaryOp):
            val = ev(node.operand)
            return pc.negate(val) if isinstance(node.op, ast.USub) else val
        return _OPS[type(node.op)](ev(node.left), ev(node.right))

    out = ev(parse(expr))
    if isinstance(out, pa.Scalar):
        return pa.array([out.as_py()] * table.num_rows, pa.float64())
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
