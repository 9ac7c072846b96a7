"""Compilation of python-step source: a top-level `return` makes the body a function whose
names are declared `global` (module semantics kept); compiled code is cached by source."""

from __future__ import annotations

import ast
import hashlib
import linecache
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import CodeType
from typing import Any

__all__ = ["STEP_FUNC", "Compiled", "compile_source"]

STEP_FUNC = "__noetl_step__"
_CACHE_SIZE = 512  # distinct sources whose compiled code is kept


@dataclass(frozen=True)
class Compiled:
    code: CodeType
    filename: str
    lines: list[str]
    wrapped: bool  # the source has a top-level `return` and runs as the body of STEP_FUNC


_cache: OrderedDict[str, Compiled] = OrderedDict()
_cache_lock = threading.Lock()


def compile_source(source: str) -> Compiled:
    with _cache_lock:
        hit = _cache.get(source)
        if hit is not None:
            _cache.move_to_end(source)
            return hit
    digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    filename = f"<noetl-python-{digest}>"
    lines = source.splitlines()
    tree = ast.parse(source, filename, "exec")
    wrapped = _has_top_level_return(tree)
    code = _compile_wrapped(tree, filename) if wrapped else compile(tree, filename, "exec")
    compiled = Compiled(code, filename, lines, wrapped)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    with _cache_lock:
        _cache[source] = compiled
        while len(_cache) > _CACHE_SIZE:
            _, old = _cache.popitem(last=False)
            linecache.cache.pop(old.filename, None)
    return compiled


def _has_top_level_return(tree: ast.Module) -> bool:
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def _compile_wrapped(tree: ast.Module, filename: str) -> CodeType:
    """Compile `def __noetl_step__(): global <every name the body binds>; <body>`.

    The `global` declaration keeps module semantics (assignments land in the globals, input names can be
    reassigned, nested functions see top-level names); the compiler's own scope analysis of a first pass
    tells which names the body binds. Nodes keep their line numbers, so tracebacks point at user lines.
    """
    body = list(tree.body)
    future: list[ast.stmt] = []
    start = 1 if body and _is_docstring(body[0]) else 0
    while start < len(body):
        stmt = body[start]
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            future.append(body.pop(start))
        else:
            break

    def build(stmts: list[ast.stmt]) -> CodeType:
        fields: dict[str, Any] = {
            "name": STEP_FUNC,
            "args": ast.arguments(
                posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
            ),
            "body": stmts,
            "decorator_list": [],
            "returns": None,
            "lineno": 1,
            "col_offset": 0,
        }
        if "type_params" in ast.FunctionDef._fields:
            fields["type_params"] = []
        module = ast.Module(body=[*future, ast.FunctionDef(**fields)], type_ignores=[])
        ast.fix_missing_locations(module)
        return compile(module, filename, "exec")

    first = build(body)
    func_code = next(c for c in first.co_consts if isinstance(c, CodeType) and c.co_name == STEP_FUNC)
    bound = sorted(set(func_code.co_varnames) | set(func_code.co_cellvars))
    if not bound:
        return first
    declare = ast.Global(names=bound)
    ast.copy_location(declare, body[0])
    return build([declare, *body])


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )
