"""Score expressions over metadata columns, e.g. `clip_similarity_vitb32 + clip_similarity_vitl14`.

A small, safe arithmetic language (column names, numbers, + - * /, parentheses, unary minus)
parsed with Python's `ast` and evaluated with pyarrow compute, so users can select on COYO's
precomputed scores before downloading anything (VILA's order of work). Nothing is `eval`ed.
"""
from __future__ import annotations

import ast
import math

import pyarrow as pa
import pyarrow.compute as pc

from vilactl.base.errors import VilactlError
from vilactl.base.paths import shown

_OPS = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}
MAX_LENGTH, MAX_DEPTH = 1000, 32    # far beyond any real score, far below Python's own limits


def _depth(tree: ast.expr) -> int:
    deepest, todo = 0, [(tree, 1)]
    while todo:                      # iterative: a deep tree must not overflow our stack either
        node, d = todo.pop()
        deepest = max(deepest, d)
        todo += [(child, d + 1) for child in ast.iter_child_nodes(node)]
    return deepest


def parse(expr: str) -> ast.expr:
    if len(expr) > MAX_LENGTH:
        raise VilactlError(f"--score {shown(expr)}: longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError as e:
        raise VilactlError(f"--score {shown(expr)}: not an arithmetic expression "
                           f"({e.msg})") from e
    except (RecursionError, MemoryError) as e:
        raise VilactlError(f"--score {shown(expr)}: nested too deeply") from e
    if _depth(tree) > MAX_DEPTH:
        raise VilactlError(f"--score {shown(expr)}: nested deeper than {MAX_DEPTH} levels")
    for node in ast.walk(tree):
        if not isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load,
                                 ast.USub, ast.UAdd, *_OPS)):
            raise VilactlError(f"--score {expr!r}: only column names, numbers, + - * / and "
                               f"parentheses are allowed (found {type(node).__name__})")
        if isinstance(node, ast.Constant) and (not isinstance(node.value, (int, float))
                                               or isinstance(node.value, bool)):
            raise VilactlError(f"--score {expr!r}: {node.value!r} is not a number")
        if isinstance(node, ast.Constant) and not math.isfinite(node.value):
            raise VilactlError(f"--score {expr!r}: {node.value!r} is not a finite number")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                isinstance(node.right, ast.Constant) and node.right.value == 0:
            raise VilactlError(f"--score {expr!r}: divides by zero (no row would have a "
                               "finite score)")
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


def evaluate(expr: str, table: pa.Table | pa.RecordBatch) -> pa.Array:
    """The expression over `table`, as float64 (nulls stay null)."""
    out = _evaluate(parse(expr), table)
    if isinstance(out, pa.Scalar):
        return pa.array([out.as_py()] * table.num_rows, pa.float64())
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _evaluate(node: ast.expr, table: pa.Table | pa.RecordBatch):
    # A module function, not a closure: a recursive closure is a reference cycle that keeps
    # every batch it saw alive until Python's cycle collector runs — 1 GB after 40 batches.
    if isinstance(node, ast.Name):
        return pc.cast(table.column(node.id), pa.float64())
    if isinstance(node, ast.Constant):
        return pa.scalar(float(node.value))
    if isinstance(node, ast.UnaryOp):
        val = _evaluate(node.operand, table)
        return pc.negate(val) if isinstance(node.op, ast.USub) else val
    return _OPS[type(node.op)](_evaluate(node.left, table), _evaluate(node.right, table))
